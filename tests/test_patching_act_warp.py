"""Exact patching on the continuous-state families: ACT's ponder steps and WARP's time steps
(resuming, the corrupted run sharing the copies' forward, copies joining mid-loop)."""

import numpy as np
import pytest
import torch

from tests.test_oracles import reference_patch, triples
from tests.test_patching import patch_loop
from workbench.patching import patch, resumable
from workbench.sites import Site, Sites

pytestmark = pytest.mark.usefixtures("one_thread")


def act_case():
    from models.act import ACT, ACTConfig

    torch.manual_seed(0)
    model = ACT(ACTConfig(input_size=6, hidden=12, cell="gru", max_ponder=6, halt_bias_init=-1.0)).eval()
    clean = torch.randint(-1, 2, (3, 1, 6)).float()
    corrupted = clean.clone()
    corrupted[:, 0, 0] = -corrupted[:, 0, 0] + (corrupted[:, 0, 0] == 0).float()  # flip or set the first entry
    return model, clean, corrupted, (lambda out: out.outputs[:, -1, 0])


def warp_case():
    from models.warp import Warp, WarpConfig

    torch.manual_seed(0)
    warp = Warp(WarpConfig(d_in=2, seq_len=12)).eval()
    with torch.no_grad():
        warp.B.normal_(0, 0.3)
    x = torch.randn(2, 12, 2).cumsum(1) * 0.2
    xc = x.clone()
    xc[:, :3] += 0.5  # the inputs differ at steps 0..2 only
    target = x[:, 1:]
    return warp, x, xc, (lambda out: -((out.mean[:, :-1] - target) ** 2).mean((1, 2)))


def test_act_ponder_steps_and_warp_time_steps_batched_equal_loop():
    model, clean, corrupted, metric = act_case()
    for sites in (Sites("time.0.ponder.*.hook_state"), Sites("time.0.ponder.*.hook_halt_logit")):
        fast = patch(model, clean, corrupted, metric, sites)
        loop = patch_loop(model, clean, corrupted, metric, sites)
        np.testing.assert_allclose(fast.df.metric, loop.df.metric, atol=1e-5, rtol=0)
        assert "ponder" in fast.df and fast.meta["resume"]  # copies start at their ponder step
    warp, x, xc, err = warp_case()
    sites = Sites("time.*.hook_theta", time=[0, 3, 6, 9])
    fast, loop = patch(warp, x, xc, err, sites), patch_loop(warp, x, xc, err, sites)
    np.testing.assert_allclose(fast.df.metric, loop.df.metric, atol=1e-5, rtol=0)
    assert list(fast.df.time) == [0, 3, 6, 9] and len(fast.figure().data) == 1 and fast.meta["resume"]
    plain = patch(warp, x, xc, err, sites, reuse_prefix=False)
    np.testing.assert_allclose(fast.df.metric, plain.df.metric, atol=1e-5, rtol=0)


def test_warp_patches_every_time_step_in_one_forward_where_copies_join_at_their_step():
    warp, x, xc, err = warp_case()
    sites = Sites(["time.*.hook_theta", "time.*.hook_input"])
    rows = {}

    def count(module, args, act) -> None:
        rows.setdefault(module.name, len(act))

    handles = [warp.time[t].hook_theta.register_forward_hook(count) for t in range(12)]
    try:
        one = patch(warp, x, xc, err, sites)
    finally:
        for h in handles:
            h.remove()
    # clean + corrupted (2 x 2 rows), and 2 copies of 2 rows for each site at or before the step
    assert rows == {f"time.{t}.hook_theta": 4 + 4 * (t + 1) for t in range(12)}
    assert one.meta["joined"] and one.meta["forwards"] == 1 and one.meta["copies_run"] == 24
    chunks = patch(warp, x, xc, err, sites, memory_mb=1e-5)  # no room for the grown batch: chunks instead
    assert not chunks.meta["joined"] and chunks.meta["forwards"] > 1
    loop = patch_loop(warp, x, xc, err, sites)
    for other in (chunks, loop):
        np.testing.assert_allclose(one.df.metric, other.df.metric, atol=1e-5, rtol=0)
    assert list(one.df.hook) == list(chunks.df.hook) and list(one.df.status) == list(chunks.df.status)
    inputs = one.df[one.df.hook.str.endswith("hook_input")]
    assert list(inputs.status) == ["ok"] * 3 + ["no-op"] * 9  # equal inputs from step 3 on change nothing
    assert one.meta["metric_clean"] == pytest.approx(chunks.meta["metric_clean"], abs=1e-6)
    assert one.meta["last_step"] == chunks.meta["last_step"]
    # named sites and a given source take the same single pass
    named = [Site("time.7.hook_theta"), Site("time.2.hook_theta")]
    zeros = {"time.7.hook_theta": torch.zeros(2, warp.cfg.d_theta)}
    for kw in ({}, {"sources": zeros}):
        fast, plain = patch(warp, x, xc, err, named, **kw), patch(warp, x, xc, err, named, reuse_prefix=False, **kw)
        assert fast.meta["joined"] and not plain.meta["joined"]
        np.testing.assert_allclose(fast.df.metric, plain.df.metric, atol=1e-5, rtol=0)
    assert fast.df.metric[0] != pytest.approx(one.df.set_index("hook").metric["time.7.hook_theta"], abs=1e-3)
    # sites outside the loop, or an ablation, keep the usual path
    assert not patch(warp, x, xc, err, "parallel.hook_theta", forward_kwargs={"mode": "parallel"}).meta["joined"]
    assert not patch(warp, x, xc, err, sites, ablation="zero").meta["joined"]
    with pytest.raises(ValueError, match="did not fire"):
        patch(warp, x[:, :6], xc[:, :6], lambda out: out.mean[:, -1, 0], "time.9.hook_theta")


def test_command_line_on_an_act_checkpoint(tmp_path):
    from apps.commands import analysis
    from models.act import ACT, ACTConfig
    from workbench import checkpoints

    torch.manual_seed(0)
    checkpoints.save(tmp_path / "act", ACT(ACTConfig(input_size=6, hidden=12, cell="gru", max_ponder=5,
                                                     task_name="parity", task={"size": 6})))
    out = tmp_path / "out"
    assert analysis.main(["patch", str(tmp_path / "act"), "--n", "6", "--out", str(out)]) == 0
    import pandas as pd

    df = pd.read_csv(out / "patch.csv")
    assert set(df.component) == {"hook_state"} and list(df.ponder) == sorted(df.ponder)
    for verb in ("probe", "codebook"):
        assert analysis.main([verb, str(tmp_path / "act"), "--n", "64", "--out", str(out)]) == 0
    assert (out / "probe_halts.csv").exists() and (out / "codebook_pca.csv").exists()


def test_act_setup_flips_parity_on_every_pair_and_checks_its_contract():
    import models
    from probes import act as pa
    from workbench.tasks import parity as par

    model = models.load("act-parity")
    s = pa.patching_setup(model, n=64, seed=0)
    clean, corr = s.clean[:, 0].numpy().astype(int), s.corrupted[:, 0].numpy().astype(int)
    flips = sum(par.solve(a.tolist()) != par.solve(b.tolist()) for a, b in zip(clean, corr))
    assert flips == 64 and s.target_changed.all()
    assert ((clean != 0).sum(1) == (corr != 0).sum(1)).all()  # the difficulty stays
    assert (s.gaps >= 1e-3).all()
    res = patch(model, s.clean, s.corrupted, s.metric, s.sites)
    assert res.df.score.between(-0.05, 1.05).all()  # scores keep their meaning
    wrong = pa.corrupt(clean, np.random.default_rng(0))
    minus = np.flatnonzero(clean[5] == -1)
    wrong[5] = clean[5]
    if len(minus):
        wrong[5, minus[0]] = 0  # zeroing a -1 entry (the old corruption): the parity stays
    with pytest.raises(ValueError, match=r"1 of 64 .*vector 5: the corruption leaves the target unchanged"):
        pa.patching_setup(model, vectors=clean, corrupted=wrong)
    with pytest.raises(ValueError, match=r"vector 0: metric clean - corrupted = .* < margin 1e\+06"):
        pa.patching_setup(model, vectors=clean[:4], margin=1e6)


@pytest.mark.parametrize("name", ["act-parity", "act-addition", "act-parity-no-act"])
def test_act_resumes_at_every_time_and_ponder_step_bit_for_bit(name):
    import models

    model = models.load(name)
    assert resumable(model) and model.resume_inner == "ponder"
    x = torch.randn(3, model.cfg.max_time, model.cfg.input_size).sign()
    mask = torch.ones(3, model.cfg.max_time, dtype=torch.bool)
    mask[0, -1] = False  # a shorter sequence: masked steps do not ponder
    out, cache = model.run_with_cache(x, mask)
    T = x.shape[1]
    ponders = {t: sum(1 for n in cache if n.startswith(f"time.{t}.ponder.") and n.endswith(".hook_state"))
               for t in range(T)}
    for t in range(T + 1):
        for n in range(ponders.get(t, 1)):
            state = model.resume_state(cache, t, n)
            assert set(model.resume_names(t, n)) <= set(cache)
            got = model(x, mask, start=state)
            for field in ("outputs", "n_steps", "remainder", "state"):
                assert torch.equal(getattr(got, field), getattr(out, field)), (t, n, field)


@pytest.mark.parametrize("kwargs", [{}, {"context": 8, "horizon": 12}])
def test_warp_resumes_at_every_time_step_bit_for_bit(kwargs):
    import models

    model = models.load("warp-msd")
    assert resumable(model)
    x = torch.randn(2, 20, model.cfg.d_in)
    out, cache = model.run_with_cache(x, **kwargs)
    for t in range(out.steps + 1):
        got = model(x, start=model.resume_state(cache, t), **kwargs)
        for field in ("thetas", "inputs", "mean"):
            assert torch.equal(getattr(got, field), getattr(out, field)), (t, field)
    with pytest.raises(ValueError, match="parallel"):
        model(x, mode="parallel", start=model.resume_state(cache, 1))


def test_act_patches_in_the_same_forward_as_its_corrupted_run():
    model, clean, corrupted, metric = act_case()
    sites = Sites("time.0.ponder.*.hook_state")
    one = patch(model, clean, corrupted, metric, sites)
    assert one.meta["forwards"] == 1
    apart = patch(model, clean, corrupted, metric, sites, memory_mb=1e-5)  # no room: the corrupted run apart
    assert apart.meta["forwards"] > 1
    np.testing.assert_allclose(one.df.metric, apart.df.metric, atol=1e-6, rtol=0)
    assert one.meta["metric_corrupted"] == pytest.approx(apart.meta["metric_corrupted"], abs=1e-6)
    loop = patch_loop(model, clean, corrupted, metric, sites)
    np.testing.assert_allclose(one.df.metric, loop.df.metric, atol=1e-5, rtol=0)
    # a model without the resume protocol: no-ops are found after that forward (step 0 mixes the zero state)
    from tests.test_oracles import LinearLoop

    torch.manual_seed(0)
    linear, x = LinearLoop(), torch.randn(2, 4, 3)
    res = patch(linear, x, x + 1, lambda out: out.sum((1, 2)), Sites("steps.*.hook_mixed"))
    assert res.meta["forwards"] == 1 and res.df.status.tolist() == ["no-op", "ok", "ok"]
    assert res.df.metric[0] == res.meta["metric_corrupted"]
    ref = reference_patch(linear, x, x + 1, lambda out: out.sum((1, 2)), triples(res.df))[0]
    np.testing.assert_allclose(res.df.metric, ref, atol=1e-5, rtol=0)
