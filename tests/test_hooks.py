import pytest
import torch
from transformer_lens import ActivationCache

from tests.toy import ToyLoop
from workbench.hooks import UnknownHookError, stack, template


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
