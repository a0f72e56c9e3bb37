import fnmatch

import numpy as np
import pytest
import torch
from transformer_lens import ActivationCache

import models
from tests.test_model_inputs import CASES
from tests.toy import ToyLoop
from workbench.hooks import (LOOPS, HookName, LoopState, Resumable, UnknownHookError, loop_sizes, resumable,
                             split_loop, stack, template)


@pytest.fixture
def model():
    torch.manual_seed(0)
    return ToyLoop(d=4, max_steps=5)


def test_every_step_cached_under_its_own_name(model):
    x = torch.randn(2, 4)
    _, cache = model.run_with_cache(x, steps=3)
    names = [f"steps.{t}.hook_state" for t in range(3)]
    assert all(n in cache for n in names)
    assert "steps.3.hook_state" not in cache  # step 3 did not run
    assert not torch.allclose(cache[names[0]], cache[names[1]])
    assert not torch.allclose(cache[names[1]], cache[names[2]])


def test_stack_puts_loop_index_first_and_omits_steps_not_run(model):
    x = torch.randn(2, 4)
    out, cache = model.run_with_cache(x, steps=3)
    s = stack(cache, "hook_state", loop="steps")
    assert s.shape == (3, 2, 4)
    assert torch.equal(s[-1], out)
    sub, steps = stack({k: v for k, v in cache.items() if k != "steps.1.hook_state"}, "hook_state", return_steps=True)
    assert steps == [0, 2] and sub.shape == (2, 2, 4)
    with pytest.raises(ValueError, match="return_steps"):
        stack({k: v for k, v in cache.items() if k != "steps.1.hook_state"}, "hook_state")
    with pytest.raises(KeyError, match="hook_state"):
        stack(cache, "hook_stat")


def test_patching_step_t_leaves_earlier_steps_and_changes_later(model):
    x = torch.randn(2, 4)
    _, clean = model.run_with_cache(x, steps=4)

    def zero(act, hook):
        return torch.zeros_like(act)

    with model.hooks(fwd_hooks=[("steps.2.hook_pre", zero)]):
        _, patched = model.run_with_cache(x, steps=4)
    for t in (0, 1):
        assert torch.equal(clean[f"steps.{t}.hook_state"], patched[f"steps.{t}.hook_state"])
    for t in (2, 3):
        assert not torch.allclose(clean[f"steps.{t}.hook_state"], patched[f"steps.{t}.hook_state"])
    out = model.run_with_hooks(x, steps=4, fwd_hooks=[("steps.2.hook_pre", zero)])
    assert torch.equal(out, patched["steps.3.hook_state"])


def test_names_filter_and_activation_cache(model):
    x = torch.randn(2, 4)
    _, cache = model.run_with_cache(x, steps=3, names_filter=lambda n: n.endswith("hook_pre"))
    assert sorted(cache) == [f"steps.{t}.hook_pre" for t in range(3)]
    _, cache = model.run_with_cache(x, steps=3, names_filter=["steps.1.hook_state"])
    assert list(cache) == ["steps.1.hook_state"]
    wrapped = ActivationCache(cache, model)
    assert torch.equal(wrapped["steps.1.hook_state"], cache["steps.1.hook_state"])
    assert stack(wrapped, "hook_state", return_steps=True)[1] == [1]


def test_hooks_removed_even_when_forward_raises(model):
    x = torch.randn(2, 4)
    with pytest.raises(RuntimeError, match="boom"):
        model.run_with_hooks(x, steps=3, fail_at=1, fwd_hooks=[("steps.0.hook_pre", lambda a, hook: a * 0)])
    assert all(not hp.fwd_hooks for hp in model.hook_dict.values())
    with pytest.raises(RuntimeError):
        model.run_with_cache(x, steps=3, fail_at=2)
    assert all(not hp.fwd_hooks for hp in model.hook_dict.values())


def test_unknown_names_and_too_many_steps_name_what_is_allowed(model):
    x = torch.randn(2, 4)
    with pytest.raises(UnknownHookError, match="closest valid names: steps.{steps}.hook_state"):
        model.run_with_hooks(x, fwd_hooks=[("steps.0.hook_stat", lambda a, hook: a)])
    with pytest.raises(UnknownHookError, match=r"indices 0..4"):
        model.run_with_cache(x, names_filter=["steps.7.hook_state"])
    with pytest.raises(UnknownHookError):
        model.add_hook("nonsense", lambda a, hook: a)
    with pytest.raises(ValueError, match=r"steps=6 is out of range.*0..5"):
        model(x, steps=6)
    assert model.loop_sizes == {"steps": 5}


def test_template():
    assert template("time.3.ponder.2.hook_halt") == "time.{time}.ponder.{ponder}.hook_halt"


# ------------------------------------------------------------ the grammar of hook names
def test_grammar_splits_loops_from_the_component():
    h = HookName.parse("steps.3.blocks.1.attn.hook_z")
    assert h == HookName((("steps", 3),), "blocks.1.attn.hook_z") and h.loop("steps") == 3 and h.loop("time") is None
    assert h.template("{}") == "steps.{}.blocks.{}.attn.hook_z" and h.template("*") == "steps.*.blocks.*.attn.hook_z"
    assert h.template() == template(str(h)) == "steps.{steps}.blocks.{blocks}.attn.hook_z"
    assert h.indices == {"steps": 3, "blocks": 1} and h.kind == "attn.hook_z"
    # nested loops, outermost first
    h = HookName.parse("time.2.ponder.5.hook_halt")
    assert h.loops == (("time", 2), ("ponder", 5)) and h.component == "hook_halt"
    assert h.template("{}").format(7, 0) == "time.7.ponder.0.hook_halt"
    # no loop: the whole name is the component; inner indices stay in it
    assert HookName.parse("hook_gains") == HookName((), "hook_gains")
    h = HookName.parse("parallel.root.layers.0.hook_pre")
    assert h.loops == () and h.indices == {"layers": 0} and h.kind == "parallel.root.hook_pre"
    # another loop vocabulary (a wrapped model's inner loop)
    h = HookName.parse("steps.1.inner.4.hook_x", loops=("steps", "inner"))
    assert h.loops == (("steps", 1), ("inner", 4)) and h.component == "hook_x"
    assert HookName.parse("steps.1.inner.4.hook_x").component == "inner.4.hook_x"
    # what is not an index, or leaves nothing after the loops, is not a loop
    for name in ("steps.03.hook_x", "steps.-1.hook_x", "steps.3", "blocks.1.hook_x", ""):
        assert HookName.parse(name).loops == () and str(HookName.parse(name)) == name
    assert split_loop("time.3.ponder.2.hook_halt", "time.3.ponder") == (2, "hook_halt")
    assert split_loop("time.3.ponder.2.hook_halt", "time") == (3, "ponder.2.hook_halt")
    assert split_loop("time.3.hook_state", "steps") is None and split_loop("time.x.hook_state", "time") is None
    assert loop_sizes(["time.0.ponder.4.hook_halt", "time.2.hook_state", "hook_gains"]) == {"time": 3, "ponder": 5}
    assert loop_sizes(["steps.3.blocks.1.hook_resid_pre"], loops=None) == {"steps": 4, "blocks": 2}


def test_every_zoo_model_class_is_covered_by_the_round_trip():
    built = {f"{type(m).__module__}.{type(m).__name__}" for m in (case.build() for case in CASES.values())}
    assert built == set(models.CLASSES)


@pytest.mark.parametrize("name", sorted(CASES))
def test_every_hook_name_round_trips_through_the_grammar(name):
    model = CASES[name].build()
    assert model.hook_dict
    for hook in model.hook_dict:
        h = HookName.parse(hook)
        assert h.format() == str(h) == hook and HookName(h.loops, h.component) == h
        assert all(prefix in LOOPS for prefix, _ in h.loops) and h.component
        assert h.template("{}").format(*h.indices.values()) == hook
        assert fnmatch.fnmatchcase(hook, h.template("*")) and template(hook) == h.template()
        assert h.loops == tuple(h.indices.items())[: len(h.loops)]  # loops lead the name
    sizes = loop_sizes(model.hook_dict)
    assert model.loop_sizes == sizes and sizes
    for prefix, n in sizes.items():  # every index 0..n-1 of every loop has hooks
        assert {HookName.parse(k).loop(prefix) for k in model.hook_dict} - {None} == set(range(n))


# -------------------------------------------------------------------- the resume protocol
def test_resume_protocol_lives_with_the_hooks():
    from models.reasoner import Reasoner, ReasonerConfig
    from workbench import patching

    assert patching.LoopState is LoopState and patching.resumable is resumable
    reasoner = Reasoner(ReasonerConfig(modulus=5, name_pool=16, d_model=16, n_heads=2, d_mlp=32, max_steps=4))
    assert isinstance(reasoner, Resumable) and resumable(reasoner) and not resumable(ToyLoop())
    state = LoopState(2, {"x": torch.arange(6).reshape(2, 3)}, {"codes": [torch.zeros(2, 1), torch.ones(2, 1)]}, 1)
    rep = state.repeat(3)
    assert (rep.t, rep.inner) == (2, 1) and rep.carry["x"].shape == (6, 3)
    assert torch.equal(rep.carry["x"][2:4], state.carry["x"])  # copy-major: copy 1 is rows 2..3
    assert [c.shape for c in rep.record["codes"]] == [(6, 1), (6, 1)] and state.carry["x"].shape == (2, 3)


# ------------------------------------------- TransformerLens shorthand on one loop step
def test_step_cache_gives_transformer_lens_shorthand_on_one_step():
    from dataclasses import asdict

    from models.reasoner import Reasoner, ReasonerConfig
    from workbench.hooks import step_cache
    from workbench.tasks import graph_arith as ga

    task = ga.GraphArithConfig(n_nodes=5, n_leaves=2, max_depth=2)
    torch.manual_seed(0)
    model = Reasoner(ReasonerConfig(d_model=16, n_heads=2, d_mlp=32, max_steps=6, task=asdict(task))).eval()
    from models.reasoner_data import encode_batch

    x = torch.from_numpy(encode_batch(ga.sample(task, 2, 0), model.cfg)["factors"])
    _, cache = model.run_with_cache(x, steps=4)
    for t in (0, 3):
        sc = step_cache(cache, t)  # the cache's own model gives n_layers
        assert isinstance(sc, ActivationCache)
        for l in (0, 1):
            assert torch.equal(sc["resid_post", l], cache[f"steps.{t}.blocks.{l}.hook_resid_post"])
            assert torch.equal(sc["pattern", l], cache[f"steps.{t}.blocks.{l}.attn.hook_pattern"])
            assert torch.equal(sc["z", l], cache[f"steps.{t}.blocks.{l}.attn.hook_z"])
        assert torch.equal(sc["resid_post", -1], cache[f"steps.{t}.blocks.1.hook_resid_post"])
        assert torch.equal(sc["hook_resid_final"], cache[f"steps.{t}.hook_resid_final"])
        stacked = sc.stack_activation("resid_post")  # [layers, batch, pos, d]
        assert torch.equal(stacked, torch.stack([cache[f"steps.{t}.blocks.{l}.hook_resid_post"] for l in (0, 1)]))
        acc = sc.accumulated_resid(apply_ln=False)  # each block's input, then the last block's output
        expect = [cache[f"steps.{t}.blocks.0.hook_resid_pre"], cache[f"steps.{t}.blocks.1.hook_resid_pre"],
                  cache[f"steps.{t}.blocks.1.hook_resid_post"]]
        assert torch.equal(acc, torch.stack(expect))
    plain = {k: v for k, v in cache.items()}  # a plain dict: n_layers read off the names
    assert step_cache(plain, 2).model.cfg.n_layers == 2
    assert torch.equal(step_cache(plain, 2).stack_activation("resid_pre")[1], cache["steps.2.blocks.1.hook_resid_pre"])
    with pytest.raises(KeyError, match=r"cached steps of loop 'steps': \[0, 1, 2, 3\]"):
        step_cache(cache, 4)


def test_step_cache_on_nested_loops(model):
    x = torch.randn(2, 4)
    _, cache = model.run_with_cache(x, steps=3)
    from workbench.hooks import step_cache

    sc = step_cache(cache, 1)
    assert sorted(sc.keys()) == ["hook_pre", "hook_state"]
    assert torch.equal(sc["hook_state"], cache["steps.1.hook_state"])


# ---------------------------------------- one convention for loop steps, hooks to figures
@pytest.fixture(scope="module")
def zoo():
    import models

    torch.set_num_threads(1)
    return {"reasoner": models.load("reasoner"), "act": models.load("act-parity")}


def test_act_halting_patched_at_ponder_step_n_is_drawn_at_n(zoo):
    from apps.adapters import act as aa
    from apps.views import act as views

    model = zoo["act"]
    x = aa.parse_input(model, "+0-0++00-0000+0-")
    clean = aa.trace(model, x)
    assert int(clean["N"].iloc[0]) > 3  # it ponders past ponder step 2 on its own
    for n in (0, 2):  # the selector's value: a ponder step, as in time.{t}.ponder.{n}.hook_halt_logit
        patched = aa.trace(model, x, aa.halt_patch(n, 30.0, model.cfg.max_ponder))
        fig = views.halting_compare_figure(clean, patched)
        after = next(tr for tr in fig.data if tr.name == "patched")
        assert max(after.x) == n  # halts at ponder step n, drawn at n
        assert int(patched["N"].iloc[0]) == n + 1  # N(t) counts the steps: n + 1
        bars = views.halting_figure(patched).data[0]
        assert max(bars.x) == n


def test_reasoner_intervention_after_step_t_is_drawn_at_column_t(zoo):
    from apps.adapters import reasoner as ar
    from apps.views import reasoner as views

    model = zoo["reasoner"]
    problem = ar.parse_problem(model, "4 = x_7; 3 = x_1; x_7 + x_1 = x_23; x_23 = x_5")
    T = 4
    ro = ar.rollout(model, problem, T)
    for t in (0, 2):  # the selector's value: the step whose output codes (steps.{t}.bottleneck.hook_codes) are set
        edited = ar.intervene(model, problem, T, variable=7, value=2, at_step=t)
        before, after = ar.state_table(ro), ar.state_table(edited)
        fig = views.state_table_figure(after, ar.changed_cells(before, after))
        cells = fig.data[0]
        col = list(cells.x).index(str(t))
        row = list(cells.y).index("x_7")
        assert np.asarray(cells.text)[row, col] == "2"  # the value set after step t sits in column t
        assert int(edited.codes[t, int(np.flatnonzero(edited.enc.factors[:, 1] == 7)[0])]) == 2
        marked = fig.data[-1]
        assert marked.name == "changed" and min(int(v) for v in marked.x if v != "input") == t
        assert list(cells.x)[0] == "input" and list(cells.x)[1] == "0"
    lens = ar.step_lens(model, problem, T)  # the step lens and attention use the same t
    fig = views.step_lens_figure(lens[lens.slot == "x_23"])
    assert list(fig.data[0].y) == list(range(T))
    last = lens[(lens.layer == model.cfg.n_layers) & (lens.slot == "x_23")]
    pos = int(last.pos.iloc[0])
    assert list(last.code) == [int(c) for c in ro.codes[:, pos]]


def test_hooks_context_removes_only_its_own_hooks_and_keeps_levels():
    from tests.test_oracles import LinearLoop

    model = LinearLoop()
    x = torch.randn(2, 4, 3)
    seen = []
    model.add_hook("steps.0.hook_state", lambda a, hook: seen.append("outer"))  # outside any context: stays
    with model.hooks(fwd_hooks=[("steps.1.hook_state", lambda a, hook: seen.append("ctx")),
                                (lambda n: n.endswith("hook_mixed"), lambda a, hook: seen.append("filter"))]):
        with model.hooks(fwd_hooks=[("steps.2.hook_state", lambda a, hook: seen.append("inner"))]):
            model(x)
        assert seen.count("inner") == 1
        seen.clear()
        model(x)  # the inner context's hook is gone, the outer context's stay
        assert sorted(seen) == ["ctx", "filter", "filter", "filter", "outer"]
    seen.clear()
    model(x)
    assert seen == ["outer"]
    model.reset_hooks()
    assert all(not hp.fwd_hooks for hp in model.hook_dict.values())
