"""The reasoner circuit study: graph recovery under planted attention, planted Fourier features, the command."""

from dataclasses import asdict

import numpy as np
import pytest
import torch

from models.reasoner import Reasoner, ReasonerConfig
from probes import reasoner_circuit as rc
from workbench import checkpoints
from workbench.tasks import graph_arith as ga

torch.set_num_threads(1)
TASK = ga.GraphArithConfig(n_nodes=6, n_leaves=3, max_depth=2, modulus=5, name_pool=16, max_fan_in=2)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    cfg = ReasonerConfig(d_model=16, n_heads=2, d_mlp=32, n_layers=2, modulus=5, name_pool=16, max_steps=16,
                         task=asdict(TASK))
    return Reasoner(cfg).eval()


def same_length_problems(n: int, seed: int = 0) -> list[ga.Problem]:
    """Problems of one token length, so the study's length-sorted batching keeps their order."""
    pool = ga.sample(TASK, 200, seed)
    length = max(set(map(ga.n_tokens, pool)), key=lambda k: sum(ga.n_tokens(p) == k for p in pool))
    return [p for p in pool if ga.n_tokens(p) == length][:n]


def forcing_hook(problems: list[ga.Problem], route: str):
    """A hook writing a pattern: rows of each route query spread uniformly over the route's keys."""
    encs = [ga.encode(p, "one_hop", TASK.name_pool) for p in problems]
    L = len(encs[0].role)
    queries, keys = rc.route_masks(encs, L)[route]
    q, k = torch.from_numpy(queries), torch.from_numpy(keys).float()
    rows = k / k.sum(-1, keepdim=True).clamp_min(1)

    def hook(pattern, hook):
        return torch.where(q[:, None, :, None], rows[:, None], pattern)

    return (lambda name: name.endswith("attn.hook_pattern"), hook)


def elsewhere_hook(problems: list[ga.Problem]):
    """Defining slots attend uniformly to the variable slots of non-parents (never to a parent)."""
    encs = [ga.encode(p, "one_hop", TASK.name_pool) for p in problems]
    L = len(encs[0].role)
    q = torch.zeros(len(encs), L, dtype=torch.bool)
    rows = torch.zeros(len(encs), L, L)
    for b, (p, enc) in enumerate(zip(problems, encs)):
        var = np.where(enc.factors[:, 0] == ga.VAR, enc.factors[:, 1], -1)
        for i, eq in enumerate(p.equations):
            if eq.is_leaf:
                continue
            d = int(np.flatnonzero((enc.equation == i) & (enc.role == ga.ROLE_DEFINE))[0])
            wrong = (var >= 0) & ~np.isin(var, [*eq.operands, eq.target])
            q[b, d] = True
            rows[b, d, torch.from_numpy(wrong)] = 1.0 / wrong.sum()

    def hook(pattern, hook):
        return torch.where(q[:, None, :, None], rows[:, None], pattern)

    return (lambda name: name.endswith("attn.hook_pattern"), hook)


def default_row(res, method="attention (all heads)", threshold=0.3, state="exact"):
    df = res.df
    return df[(df.method == method) & (df.threshold == threshold) & (df.state == state)].iloc[0]


def test_graph_recovery_is_perfect_when_attention_is_forced_onto_operands(model):
    problems = same_length_problems(8)
    res = rc.graph_recovery(model, problems, fwd_hooks=[forcing_hook(problems, "gather")], progress=False)
    for state in ("exact", "rollout"):
        row = default_row(res, state=state)
        assert row.precision == 1.0 and row.recall == 1.0 and row.exact_graphs == 1.0
    assert row.true_edges == sum(len(e.operands) for p in problems for e in p.equations)
    assert set(res.df.method) == {"attention (all heads)"}  # patching edges are off under forced hooks
    assert len(res.figure().data) > 0


def test_graph_recovery_is_low_when_attention_is_forced_elsewhere(model):
    problems = same_length_problems(8)
    res = rc.graph_recovery(model, problems, fwd_hooks=[elsewhere_hook(problems)], progress=False)
    row = default_row(res, threshold=0.05, state="rollout")
    assert row.recall == 0.0
    assert row.average_precision < 0.5


def test_head_roles_name_a_forced_lookup(model):
    problems = same_length_problems(6)
    res = rc.head_roles(model, problems, fwd_hooks=[forcing_hook(problems, "lookup")], progress=False)
    heads = res.tables["heads"]
    assert np.allclose(heads["lookup"], 1.0)
    assert heads.role.str.contains("lookup").all()


def test_value_spectrum_finds_a_planted_frequency():
    p, k = 7, 3
    rng = np.random.default_rng(0)
    v = rng.integers(0, p, 700)
    angle = 2 * np.pi * k * v / p
    X = np.stack([np.cos(angle), np.sin(angle)], 1) + 0.05 * rng.normal(size=(len(v), 2))
    s = rc.value_spectrum(X, v, p)
    assert int(np.argmax(s["power"])) + 1 == k and s["power"].max() > 0.95
    assert s["value_share"] > 0.95
    assert rc.value_spectrum(rng.normal(size=(700, 2)), v, p)["value_share"] < 0.1


def test_pair_spectrum_separates_sum_from_one_operand():
    p = 5
    a, b = np.meshgrid(np.arange(p), np.arange(p), indexing="ij")
    a, b = np.repeat(a.ravel(), 3), np.repeat(b.ravel(), 3)
    angle = 2 * np.pi * 2 * (a + b) / p
    sums = rc.pair_spectrum(np.stack([np.cos(angle), np.sin(angle)], 1), a, b, p)
    assert sums["share"]["diagonal"] > 0.99
    only_a = rc.pair_spectrum(np.stack([np.cos(2 * np.pi * a / p), np.sin(2 * np.pi * a / p)], 1), a, b, p)
    assert only_a["share"]["axis_a"] > 0.99
    assert np.isnan(rc.pair_spectrum(np.ones((2, 1)), np.array([0, 1]), np.array([0, 1]), p)["share"]["other"])


def test_command_writes_csv_and_html(model, tmp_path, capsys):
    checkpoints.save(tmp_path / "ckpt", model)
    out = tmp_path / "out"
    rc.main(["--model", str(tmp_path / "ckpt"), "--n", "12", "--graph-n", "3", "--patch-n", "1",
             "--edge-patch-n", "2", "--nodes", "6", "12", "--out", str(out)])
    for name in ("head_roles.csv", "head_summary.csv", "fourier.csv", "fourier_2d.csv", "graph_scores.csv",
                 "graph_edges.csv", "report.html"):
        assert (out / name).stat().st_size > 0, name
    page = (out / "report.html").read_text()
    assert "Graph recovery" in page and "Head roles" in page
    import pandas as pd
    scores = pd.read_csv(out / "graph_scores.csv")
    assert set(scores.n_nodes) == {6, 12} and "patching" in set(scores.method)
    assert (out / "patching.csv").is_file()  # the patching map ran
    assert "wrote" in capsys.readouterr().out


def test_clear_errors_for_a_model_that_is_not_a_reasoner(tmp_path, capsys):
    with pytest.raises(TypeError, match="recursive reasoner"):
        rc.check_reasoner(torch.nn.Linear(2, 2))
    with pytest.raises(SystemExit):
        rc.main(["--model", str(tmp_path / "missing"), "--out", str(tmp_path)])
    assert "zoo models" in capsys.readouterr().err
