"""loop_indexed: any PyTorch model's repeated submodule given per-call hook names (workbench/loops.py)."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from transformer_lens import HookedRootModule

from tests.looped_models import BridgeLoop, GRULoop, Huginn, TwoLevel
from workbench import dynamics as dyn
from workbench.attribution import attribute
from workbench.hooks import UnknownHookError, stack, step_cache
from workbench.loops import LoopIndexed, loop_indexed
from workbench.patching import patch
from workbench.sites import Sites

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def huginn():
    model = Huginn().eval()
    return model, loop_indexed(model, loops={"steps": model.core}, max_steps=8)


@pytest.fixture(scope="module")
def two_level():
    model = TwoLevel().eval()
    return model, loop_indexed(model, loops={"steps": model.cycle, "inner": model.cycle.low},
                               max_steps={"steps": 4, "inner": 3})


def tokens(batch=3, pos=10, seed=0):
    return torch.randint(0, 32, (batch, pos), generator=torch.Generator().manual_seed(seed))


# ------------------------------------------------------------------ names
def test_huginn_names_parameters_and_repr(huginn):
    model, hooked = huginn
    assert isinstance(hooked, HookedRootModule) and isinstance(hooked, LoopIndexed)
    assert set(hooked.hook_dict) == {f"steps.{t}.{h}" for t in range(8) for h in ("hook_in", "hook_out")}
    assert [id(p) for p in hooked.parameters()] == [id(p) for p in model.parameters()]  # shared, not copied
    assert hooked.loops == {"steps": model.core} and hooked.max_steps == {"steps": 8}
    assert "steps: core x 8" in repr(hooked)


def test_nested_loops_get_nested_names(two_level):
    model, hooked = two_level
    names = set(hooked.hook_dict)
    assert "hook_embed" in names  # a hook point outside the loops keeps its own name
    for t in range(4):
        assert {f"steps.{t}.hook_in", f"steps.{t}.hook_out", f"steps.{t}.high.hook_hidden"} <= names
        for k in range(3):
            assert {f"steps.{t}.inner.{k}.{h}" for h in ("hook_in", "hook_out", "hook_hidden")} <= names
    assert not any(".low." in n for n in names)  # the nested loop's hooks live under its own name
    assert len(names) == 1 + 4 * (3 + 3 * 3)


# ------------------------------------------------------------------ running and caching
def test_outputs_are_identical_and_every_step_is_cached(huginn):
    model, hooked = huginn
    x = tokens()
    with torch.no_grad():
        ref = model(x, steps=5)
        plain = hooked(x, steps=5)
        noop = hooked.run_with_hooks(x, steps=5, fwd_hooks=[(lambda n: True, lambda act, hook: None)])
        out, cache = hooked.run_with_cache(x, steps=5)
    assert torch.equal(ref, plain) and torch.equal(ref, noop) and torch.equal(ref, out)
    assert sorted(cache) == sorted(f"steps.{t}.{h}" for t in range(5) for h in ("hook_in", "hook_out"))
    states = stack(cache, "hook_out", loop="steps")
    assert states.shape == (5, 3, 10, 64)
    with torch.no_grad():  # the same rollout by hand
        e = model.prelude(model.embed(x) + model.pos(torch.arange(10)))
        s = torch.zeros_like(e)
        for t in range(5):
            assert torch.equal(cache[f"steps.{t}.hook_in"], s)
            s = model.core(s, e)
            assert torch.equal(states[t], s)


def test_patching_one_step_changes_only_later_steps(huginn):
    _, hooked = huginn
    x = tokens(seed=1)
    with torch.no_grad():
        _, clean = hooked.run_with_cache(x, steps=6)
        with hooked.hooks(fwd_hooks=[("steps.2.hook_out", lambda act, hook: act + 1.0)]):
            _, patched = hooked.run_with_cache(x, steps=6)
    for t in range(6):
        same_in, same_out = (torch.equal(clean[f"steps.{t}.{h}"], patched[f"steps.{t}.{h}"])
                             for h in ("hook_in", "hook_out"))
        assert same_in == (t <= 2) and same_out == (t < 2), t
    assert torch.equal(patched["steps.2.hook_out"], clean["steps.2.hook_out"] + 1.0)
    assert torch.equal(patched["steps.3.hook_in"], patched["steps.2.hook_out"])


def test_nested_counters_restart_per_outer_step(two_level):
    model, hooked = two_level
    x = torch.randn(2, 6)
    with torch.no_grad():
        out, cache = hooked.run_with_cache(x, cycles=3)
        assert torch.equal(out, model(x, cycles=3))
        e = model.embed(x)
        assert torch.equal(cache["hook_embed"], e)
        z_high, z_low = torch.zeros(2, model.d), torch.zeros(2, model.d)
        for t in range(3):
            assert torch.equal(cache[f"steps.{t}.hook_in"], z_high)
            for k in range(3):
                z_low = model.cycle.low(z_low, z_high + e)
                assert torch.equal(cache[f"steps.{t}.inner.{k}.hook_out"], z_low)
            z_high = model.cycle.high(z_high, z_low)
            assert torch.equal(cache[f"steps.{t}.hook_out"], z_high)
    assert "steps.3.hook_in" not in cache and len(cache) == 1 + 3 * (3 + 3 * 3)
    inner = stack(cache, "hook_hidden", loop="steps.1.inner")
    assert inner.shape == (3, 2, 2 * model.d)


def test_beyond_max_steps_raises_and_leaves_the_model_as_it_was(two_level):
    model, hooked = two_level
    low_hook = model.cycle.low.hook_hidden
    x = torch.randn(2, 6)
    with pytest.raises(ValueError, match=r"loop 'steps'.*max_steps=4"):
        hooked(x, cycles=5)
    model.cycle.n_low = 4
    try:
        with pytest.raises(ValueError, match=r"loop 'inner'.*per call of loop 'steps'.*max_steps=3"):
            hooked(x, cycles=1)
    finally:
        model.cycle.n_low = 3
    for m in (model.cycle, model.cycle.low):
        assert "forward" not in m.__dict__  # nothing shadowed outside a forward of the wrapper
    assert model.cycle.low.hook_hidden is low_hook and not low_hook.fwd_hooks
    with torch.no_grad():
        assert torch.equal(hooked(x, cycles=2), model(x, cycles=2))


def test_the_original_model_is_not_changed(two_level):
    model, hooked = two_level
    x = torch.randn(2, 6)
    seen = []
    with torch.no_grad():
        hooked.run_with_hooks(x, fwd_hooks=[("steps.0.inner.1.hook_hidden", lambda a, hook: seen.append(hook.name))])
        model(x)  # a direct call fires no wrapper hook
    assert seen == ["steps.0.inner.1.hook_hidden"]
    assert all(not hp.fwd_hooks for hp in hooked.hook_dict.values())
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


def test_gru_cell_loop_patching_attribution_and_dynamics():
    model = GRULoop().eval()
    hooked = loop_indexed(model, loops={"time": "cell"}, max_steps=10)
    g = torch.Generator().manual_seed(0)
    clean, corrupted = torch.randn(4, 6, 3, generator=g), torch.randn(4, 6, 3, generator=g)
    with torch.no_grad():
        out, cache = hooked.run_with_cache(clean)
    states = stack(cache, "hook_out", loop="time")
    assert states.shape == (6, 4, 12) and torch.equal(stack(cache, "hook_in", loop="time"), clean.transpose(0, 1))
    metric = lambda out: out[:, 0] - out[:, 1]  # noqa: E731
    res = patch(hooked, clean, corrupted, metric, sites=Sites("time.*.hook_out"))
    scores = res.df.set_index("site")["score"]
    assert len(scores) == 6 and scores["time.5.hook_out"] == pytest.approx(1.0)
    # one site by hand: write the clean state after time step 2 into the corrupted run
    with torch.no_grad():
        mc, mr = metric(model(clean)).mean(), metric(model(corrupted)).mean()
        patched = hooked.run_with_hooks(corrupted, fwd_hooks=[("time.2.hook_out", lambda a, hook: cache[hook.name])])
    assert scores["time.2.hook_out"] == pytest.approx(float((metric(patched).mean() - mr) / (mc - mr)), abs=1e-5)
    approx = attribute(hooked, clean, corrupted, metric, sites=Sites("time.*.hook_out"))
    assert approx.df.set_index("site")["score"]["time.5.hook_out"] == pytest.approx(1.0, abs=1e-4)  # linear head
    grads = {}
    with hooked.hooks(bwd_hooks=[("time.3.hook_out", lambda g, hook: grads.setdefault(hook.name, g))]):
        hooked(clean).sum().backward()
    assert grads["time.3.hook_out"].shape == (4, 12)
    lens = dyn.iteration_lens(hooked, clean, state_hooks="time.{t}.hook_out", readout=model.head)
    last = lens.df[lens.df.step == 5]
    assert last["matches_final"].all() and (last["final"].to_numpy() == out.argmax(-1).numpy()).all()


def test_transformer_lens_blocks_in_a_loop():
    model = BridgeLoop().eval()
    hooked = loop_indexed(model, loops={"steps": model.core}, max_steps=5)
    names = set(hooked.hook_dict)
    for t in range(5):
        for l in range(2):
            assert {f"steps.{t}.blocks.{l}.{h}" for h in ("hook_in", "hook_out", "attn.hook_pattern",
                                                          "ln1.hook_scale", "mlp.hook_out")} <= names
    assert not any("_original_component" in n for n in names)
    x = torch.randint(0, 20, (2, 7), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref = model(x, steps=3)
        out, cache = hooked.run_with_cache(x, steps=3)
    assert torch.equal(ref, out)
    patterns = stack(cache, "blocks.0.attn.hook_pattern", loop="steps")
    assert patterns.shape == (3, 2, 4, 7, 7) and not torch.equal(patterns[0], patterns[1])
    sc = step_cache(cache, 1, model=hooked)  # TransformerLens shorthand on one loop step
    assert torch.equal(sc["pattern", 0], cache["steps.1.blocks.0.attn.hook_pattern"])
    assert torch.equal(cache["steps.1.hook_in"], cache["steps.0.hook_out"])
    with torch.no_grad(), hooked.hooks(fwd_hooks=[("steps.1.blocks.1.hook_in", lambda a, hook: a * 0)]):
        bumped, after = hooked.run_with_cache(x, steps=3)  # zero the residual entering block 1 at step 1
    assert not torch.equal(bumped, ref)
    for name in ("steps.0.hook_out", "steps.1.blocks.0.hook_out", "steps.1.blocks.0.attn.hook_pattern"):
        assert torch.equal(after[name], cache[name]), name  # what ran before the patch is untouched
    for name in ("steps.1.blocks.1.hook_out", "steps.2.blocks.0.attn.hook_pattern"):
        assert not torch.equal(after[name], cache[name]), name


def test_bad_loops_are_refused_with_clear_errors():
    model = Huginn()
    with pytest.raises(ValueError, match="not a submodule"):
        loop_indexed(model, loops={"steps": nn.Linear(2, 2)})
    with pytest.raises(ValueError, match="ModuleList"):
        loop_indexed(model, loops={"steps": model.core.blocks})
    with pytest.raises(ValueError, match="loop name"):
        loop_indexed(model, loops={"model": model.core})
    with pytest.raises(ValueError, match="max_steps"):
        loop_indexed(model, loops={"steps": model.core}, max_steps=0)
    with pytest.raises(ValueError, match="is not a submodule"):
        loop_indexed(model, loops={"steps": "no.such.module"})
    hooked = loop_indexed(model, loops={"steps": "core"}, max_steps=4)
    with pytest.raises(UnknownHookError, match="steps"):
        hooked.run_with_hooks(tokens(), fwd_hooks=[("steps.0.hook_outt", lambda a, hook: a)])
