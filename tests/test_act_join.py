"""Rows that join an ACT run at a ponder step (``ACT.forward(..., join=fn)``), the rows that reach
each hook (``ACT.hook_rows``), and exact patching of ponder steps in that single joined pass."""

import numpy as np
import pytest
import torch

import models
from tests.test_oracles import reference_patch, reference_scores, triples
from workbench.patching import patch
from workbench.sites import Sites
from workbench.tasks import addition as add

pytestmark = pytest.mark.usefixtures("one_thread")
FIELDS = ("outputs", "n_steps", "remainder", "state")


@pytest.fixture(scope="module")
def addition():
    """The shipped addition model, two sequences (the second one step shorter) and their mask."""
    model = models.load("act-addition")
    config = add.AdditionConfig(**model.cfg.task)
    problems = [add.make_problem([512, 7, 86, 999], config), add.make_problem([31, 408, 5], config)]
    batch = add.encode(problems, config)
    return model, torch.from_numpy(batch["inputs"]), torch.from_numpy(batch["mask"])


def fired(model, *args) -> set[str]:
    """The hooks a plain run fires (recorded by a hook on every HookPoint)."""
    names: set[str] = set()
    with torch.no_grad():
        model.run_with_hooks(*args, fwd_hooks=[(lambda n: True, lambda act, hook: names.add(hook.name))])
    return names


def test_rows_that_join_at_a_ponder_step_continue_from_the_row_they_copy(addition):
    """join(t, n, running) appends copies of rows at ponder step n of input step t; a hook then moves one
    copy's state, and every final row must equal a separate plain run of its own sequence with
    the same change (or none)."""
    model, x, mask = addition
    with torch.no_grad():
        plain = model(x, mask)
    n = int(plain.n_steps[0, 1]) - 1  # the last ponder step of sequence 0 at input step 1
    grows = {(1, n): torch.tensor([0]), (2, 0): torch.tensor([1, 2])}  # row 2 copies 0; rows 3, 4 copy 1, 2
    calls, size = [], [2]

    def join(t, i, running):  # running: the rows of the batch as it stands that take this step
        assert running.dtype == torch.bool and running.shape == (size[0],)
        assert running[:2].tolist() == (plain.n_steps[:, t] > i).tolist()
        calls.append((t, i))
        size[0] += len(grows.get((t, i), []))
        return grows.get((t, i))

    def bump(act, hook):  # the copy that joined at (1, n): rows 0..2 then
        assert act.shape[0] == 3
        return torch.cat([act[:2], act[2:] + 0.5])

    site = f"time.1.ponder.{n}.hook_state"
    with torch.no_grad():
        got = model.run_with_hooks(x, mask, join=join, fwd_hooks=[(site, bump)])
        moved = model.run_with_hooks(x[:1], mask[:1], fwd_hooks=[(site, lambda act, hook: act + 0.5)])
    ran = {tuple(int(k) for k in name.split(".")[1:4:2]) for name in fired(model, x, mask)
           if name.endswith("hook_input")}  # ponder steps of the plain run: (t, n)
    assert set(calls) >= ran and calls == sorted(calls)  # at the start of every ponder step that runs
    expected = [(plain, 0), (plain, 1), (moved, 0), (plain, 1), (moved, 0)]
    for field in FIELDS:
        value = getattr(got, field)
        assert value.shape[0] == 5
        for r, (run, i) in enumerate(expected):
            torch.testing.assert_close(value[r], getattr(run, field)[i], atol=1e-5, rtol=1e-5,  # logits up to ~15
                                       msg=f"{field} row {r}")
    assert not torch.allclose(got.outputs[2], plain.outputs[0], atol=1e-3)  # the change did reach the output


def test_join_rejects_what_is_not_rows_of_the_batch(addition):
    from workbench.inputs import InputTypeError

    model, x, mask = addition
    with pytest.raises(InputTypeError, match=r"join\(0, 0\) must return None or a 1-d integer tensor"):
        model(x, mask, join=lambda t, n, running: [0])
    with pytest.raises(ValueError, match=r"join\(1, 0\) returned rows \[2\]; allowed 0..1"):
        model(x, mask, join=lambda t, n, running: torch.tensor([2]) if (t, n) == (1, 0) else None)
    with pytest.raises(ValueError, match=r"join\(1, 0\) returned rows \[3\]; allowed 0..2"):  # grown at (0, 0)
        model(x, mask, join=lambda t, n, running: {(0, 0): torch.tensor([0]), (1, 0): torch.tensor([3])}.get((t, n)))
    with pytest.raises(InputTypeError, match="join must be a function"):
        model(x, mask, join=3)
    _, cache = model.run_with_cache(x, mask)
    with pytest.raises(ValueError, match="does not combine with start="):
        model(x, mask, start=model.resume_state(cache, 1), join=lambda t, n, running: None)
    assert model.joins({}) and not model.joins({"start": None})


@pytest.mark.parametrize("name", ["act-addition", "act-parity"])
def test_hook_rows_say_which_hooks_a_run_of_those_rows_fires(name, addition):
    """Oracle: the hooks a plain run of each row alone (and of the whole batch) fires."""
    model = models.load(name)
    if name == "act-addition":
        x, mask = addition[1:]
    else:
        x = torch.from_numpy(np.random.default_rng(0).choice([-1.0, 0.0, 1.0], (4, 1, model.cfg.input_size))).float()
        mask = torch.ones(4, 1, dtype=torch.bool)
    with torch.no_grad():
        out = model(x, mask)
    alone = [fired(model, x[r:r + 1], mask[r:r + 1]) for r in range(len(x))]
    everyone = fired(model, x, mask)
    assert len({len(a) for a in alone}) > 1  # the rows ponder for different numbers of steps
    for hook in model.hook_dict:
        rows = model.hook_rows(out, hook)
        assert rows.tolist() == [hook in a for a in alone], hook
        assert bool(rows.any()) == (hook in everyone), hook


@pytest.mark.parametrize("seed", [1, 11, 22])
def test_patching_ponder_steps_in_one_joined_pass_equals_the_loop(seed):
    """Parity pairs where the clean and the corrupted run ponder for different numbers of steps
    (seed 1: the corrupted run ponders longer, so the joined batch fires steps the clean run never
    does; 11 and 22: the clean run ponders longer, so some sites are never reached by the corrupted
    run and are no-ops): the single pass, the chunked resumed runs, the full re-runs and the
    per-site reference agree on the sites, their status and their metrics."""
    from probes.act import patching_setup

    model = models.load("act-parity")
    s = patching_setup(model, n=2, seed=seed)
    sites = Sites("time.*.ponder.*.hook_state")
    one = patch(model, s.clean, s.corrupted, s.metric, sites)
    assert one.meta["joined"] and one.meta["forwards"] == 1
    chunks = patch(model, s.clean, s.corrupted, s.metric, sites, memory_mb=1e-5)  # no room to grow: chunks
    plain = patch(model, s.clean, s.corrupted, s.metric, sites, reuse_prefix=False)
    assert not chunks.meta["joined"] and not plain.meta["joined"]
    with torch.no_grad():
        clean_steps = int(model(s.clean).n_steps.max())
        corrupted_steps = int(model(s.corrupted).n_steps.max())
    assert list(one.df.ponder) == list(range(clean_steps))  # the clean run's ponder steps, no more
    assert one.meta["copies_run"] == len(one.df)  # and no copy joins at a step the clean rows do not take
    never = one.df.ponder >= corrupted_steps
    assert (one.df.status[never] == "no-op").all() and (one.df.metric[never] == one.meta["metric_corrupted"]).all()
    loop = reference_scores(*reference_patch(model, s.clean, s.corrupted, s.metric, triples(one.df)))
    for other in (chunks, plain):  # scores: the metrics are logits of ~10, equal to a few float32 steps
        assert list(other.df.hook) == list(one.df.hook) and list(other.df.status) == list(one.df.status)
        np.testing.assert_allclose(other.df.score, one.df.score, atol=1e-5, rtol=0)
    np.testing.assert_allclose(loop, one.df.score, atol=1e-5, rtol=0)
    assert one.meta["metric_clean"] == pytest.approx(chunks.meta["metric_clean"], abs=1e-4)


@pytest.mark.parametrize("seed", [1, 11])
def test_attribution_takes_the_sites_patch_takes_when_the_runs_ponder_differently(seed):
    """attribute on parity pairs whose runs ponder for different numbers of steps (seed 1: the
    corrupted run longer, 11: the clean run longer) has patch's sites, 0 where the corrupted run
    never gets, and elsewhere (clean - corrupted) . dM/da computed here by hand."""
    from probes.act import patching_setup
    from workbench.attribution import attribute

    model = models.load("act-parity")
    s = patching_setup(model, n=2, seed=seed)
    sites = Sites("time.*.ponder.*.hook_state")
    exact = patch(model, s.clean, s.corrupted, s.metric, sites)
    approx = attribute(model, s.clean, s.corrupted, s.metric, sites)
    assert list(approx.df.hook) == list(exact.df.hook)
    assert (approx.df.status == "ok").all()

    names = list(approx.df.hook)
    with torch.no_grad():
        _, clean_cache = model.run_with_cache(s.clean, names_filter=names)
    acts = {}

    def keep(act, hook):  # a node of the graph (computed from the parameters), not a new leaf
        assert act.requires_grad
        acts[hook.name] = act

    with torch.enable_grad():
        out = model.run_with_hooks(s.corrupted, fwd_hooks=[(lambda n: n in names, keep)])
        reached = [n for n in names if n in acts]
        grads = dict(zip(reached, torch.autograd.grad(s.metric(out).mean(), [acts[n] for n in reached])))
    assert len(reached) < len(names) if seed == 11 else len(reached) == len(names)
    for name, estimate in zip(names, approx.df.estimate):
        expected = float(((clean_cache[name] - acts[name].detach()) * grads[name]).sum()) if name in grads else 0.0
        assert estimate == pytest.approx(expected, abs=1e-4), name


def test_a_keyword_tensor_with_a_row_per_input_is_refused_with_the_way_to_pass_it(addition):
    """Patching copies the positional inputs only: a per-row keyword tensor (ACT's mask) is refused
    before any forward, and passed with the inputs it gives the reference's scores."""
    model, x, mask = addition
    corrupted = x.clone()
    corrupted[:, 0] = x[:, 0].roll(1, dims=-1)  # another first token
    metric = lambda out: out.outputs[:, -1].sum(-1)  # noqa: E731
    sites = Sites("time.1.ponder.*.hook_state")
    with pytest.raises(ValueError, match=r"forward_kwargs\['mask'\] is a tensor with a row per input \(\[2, 4\], "
                                         r"batch 2\).*clean=\(x, mask\)"):
        patch(model, x, corrupted, metric, sites, forward_kwargs={"mask": mask})
    res = patch(model, (x, mask), (corrupted, mask), metric, sites)
    assert res.meta["joined"]
    loop = reference_scores(*reference_patch(model, (x, mask), (corrupted, mask), metric, triples(res.df)))
    np.testing.assert_allclose(res.df.score, loop, atol=1e-5, rtol=0)
