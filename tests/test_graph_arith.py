import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from workbench.tasks import graph_arith as ga

configs = st.builds(
    ga.GraphArithConfig,
    n_nodes=st.integers(6, 40),
    n_leaves=st.integers(1, 6),
    max_fan_in=st.integers(1, 3),
    max_depth=st.integers(1, 8),
    modulus=st.sampled_from([5, 7, 23]),
    ops=st.sets(st.sampled_from(ga.OPS), min_size=1).map(tuple),
)


def independent_eval(problem: ga.Problem) -> dict[int, int]:
    """Recursive evaluation straight from the equations (memoised), not in text order."""
    by_name = {e.target: e for e in problem.equations}
    memo: dict[int, int] = {}

    def value(name: int) -> int:
        if name not in memo:
            e = by_name[name]
            if e.is_leaf:
                memo[name] = e.literal
            else:
                acc = value(e.operands[0])
                for op, other in zip(e.ops, e.operands[1:]):
                    acc = eval(f"({acc}) {op} ({value(other)})") % problem.modulus
                memo[name] = acc
        return memo[name]

    return {name: value(name) for name in by_name}


def independent_depth(problem: ga.Problem) -> dict[int, int]:
    by_name = {e.target: e for e in problem.equations}

    def depth(name):
        e = by_name[name]
        return 0 if e.is_leaf else 1 + max(depth(o) for o in e.operands)

    return {name: depth(name) for name in by_name}


@settings(max_examples=60, deadline=None)
@given(configs, st.integers(0, 2**32 - 1))
def test_round_trip_solver_and_depths(config, seed):
    for p in ga.sample(config, 3, seed):
        text = ga.format_problem(p)
        assert ga.parse(text, modulus=config.modulus) == p
        truth = independent_eval(p)
        assert p.values == tuple(truth[e.target] for e in p.equations)
        depth = independent_depth(p)
        assert p.depths == tuple(depth[e.target] for e in p.equations)
        assert p.depth <= config.max_depth
        assert all(1 <= len(e.operands) <= config.max_fan_in for e in p.equations if not e.is_leaf)
        assert sum(e.is_leaf for e in p.equations) == config.n_leaves
        assert len({e.target for e in p.equations}) == config.n_nodes


@settings(max_examples=30, deadline=None)
@given(configs, st.integers(0, 2**32 - 1), st.sampled_from(ga.SCHEMES))
def test_trace_matches_depth(config, seed, scheme):
    p = ga.sample(config, 1, seed)[0]
    enc = ga.encode(p, scheme)
    assert len(enc.answer) == ga.n_tokens(p)
    define = enc.role == ga.ROLE_DEFINE
    expected = enc.depth[define] + 1 if scheme == "paper" else 2 * enc.depth[define] + 1
    assert (enc.fill_step[define] == expected).all()
    assert enc.steps_needed == ga.steps_needed(p.depth, scheme)
    # stepping the exact rule from the empty state reproduces the trace
    values, filled = enc.factors[:, 3].copy(), np.zeros(len(enc.answer), bool)
    for t in range(1, enc.steps_needed + 1):
        values, filled = ga.next_state(values, filled, enc.answer, enc.slot, enc.deps)
        assert (values == enc.state(t)).all()
    assert (enc.solved()[:, 3][define] == enc.answer[define]).all()


def test_serialisation_matches_paper():
    eqs = (ga.Equation(7, literal=20), ga.Equation(42, literal=1), ga.Equation(23, (7, 42), ("+",)))
    p = ga.make_problem(eqs, 23)
    assert ga.format_problem(p) == "20 = x_7; 1 = x_42; x_7 + x_42 = x_23"
    assert p.values == (20, 1, 21) and p.depths == (0, 0, 1)
    enc = ga.encode(p, "paper")
    syntax = [ga.SYNTAX[s] for s in enc.factors[:, 0]]
    assert syntax == ["num", "eq", "var", "sep", "num", "eq", "var", "sep", "var", "op", "var", "eq", "var"]
    assert enc.factors[0, 3] == 20 and enc.factors[2, 3] == ga.value_empty(23)
    assert enc.answer[-1] == 21 and enc.answer[8] == ga.value_empty(23)  # operands stay EMPTY
    assert ga.encode(p, "one_hop").answer[8] == 20  # one-hop: operands receive values


def test_other_ops():
    eqs = (ga.Equation(1, literal=5), ga.Equation(2, literal=7), ga.Equation(3, (1, 2, 1), ("-", "*")))
    assert ga.make_problem(eqs, 23).values[-1] == ((5 - 7) * 5) % 23


@pytest.mark.parametrize(
    "text, message",
    [
        ("", "empty problem"),
        ("   ", "empty problem"),
        ("1 = x_1; x_2 + x_1 = x_3", "x_2 is used but never defined"),
        ("1 = x_1; x_2 = x_3; 4 = x_2", "used before it is defined"),
        ("1 = x_1; x_2 = x_3; x_3 = x_2", "cycle x_3 -> x_2 -> x_3"),
        ("1 = x_1; x_1 + x_2 = x_2", "cycle"),
        ("24 = x_1", "outside Z_23"),
        ("1 = x_1; x_1 ^ x_1 = x_2", "unknown token '^'"),
        ("1 = y_1", "unknown token 'y_1'"),
        ("1 = x_128", "unknown variable 'x_128'"),
        ("1 = x_1; 2 = x_1", "defined twice"),
        ("1 = x_1; x_1 x_1 = x_2", "malformed left-hand side"),
        ("1 = x_1 = x_2", "malformed equation"),
    ],
)
def test_malformed_text_names_position_and_rule(text, message):
    with pytest.raises(ValueError, match="character \\d+") as err:
        ga.parse(text)
    assert message in str(err.value)


def test_too_long_for_the_model():
    p = ga.sample(ga.GraphArithConfig(n_nodes=32), 1, 0)[0]
    with pytest.raises(ValueError, match="supports at most 50"):
        ga.parse(ga.format_problem(p), max_tokens=50)


def test_sampling_is_seeded():
    c = ga.GraphArithConfig(n_nodes=12)
    assert ga.sample(c, 4, 7) == ga.sample(c, 4, 7)
    assert ga.sample(c, 4, 7) != ga.sample(c, 4, 8)
