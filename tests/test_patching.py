from dataclasses import asdict

import numpy as np
import pytest
import torch

from models.reasoner import Reasoner, ReasonerConfig
from probes.reasoner import patching_setup
from tests.test_oracles import reference_patch, triples
from tests.toy import ToyLoop
from workbench.hooks import UnknownHookError
from workbench.patching import patch, resumable
from workbench.sites import Site, Sites
from workbench.tasks import graph_arith as ga

TASK = ga.GraphArithConfig(n_nodes=6, n_leaves=3, max_depth=2)

pytestmark = pytest.mark.usefixtures("one_thread")


def patch_loop(model, clean, corrupted, metric, sites, forward_kwargs=None):
    """The per-site reference (tests/test_oracles.py) on the sites ``patch`` resolves."""
    import types

    res = patch(model, clean, corrupted, metric, sites, forward_kwargs=forward_kwargs)
    values, _, _ = reference_patch(model, clean, corrupted, metric, triples(res.df), forward_kwargs=forward_kwargs)
    return types.SimpleNamespace(df=res.df.assign(metric=values))


def small_reasoner(**kw) -> Reasoner:
    torch.manual_seed(0)
    cfg = {"d_model": 16, "n_heads": 2, "d_mlp": 32, "max_steps": 6, "task": asdict(TASK), **kw}
    return Reasoner(ReasonerConfig(**cfg)).eval()


def reasoner_case(n: int = 2, **kw):
    """A small reasoner with clean / corrupted problems and the answer's logit difference."""
    model = small_reasoner(**kw)
    setup = patching_setup(model, ga.sample(TASK, n, 1), seed=0, steps=4)
    return model, setup


@pytest.fixture(scope="module")
def toy():
    torch.manual_seed(0)
    model = ToyLoop(d=4, max_steps=5)
    clean, corrupted = torch.randn(3, 4), torch.randn(3, 4)
    w = torch.randn(4)
    return model, clean, corrupted, (lambda out: out @ w)


def test_patching_a_site_with_its_own_clean_value_gives_one_and_corrupted_gives_zero(toy):
    model, clean, corrupted, metric = toy
    kw = {"steps": 3}
    res = patch(model, clean, corrupted, metric, "steps.2.hook_state", forward_kwargs=kw)
    assert res.df.score.tolist() == [1.0]  # the last state is the output: exactly the clean run
    noise = patch(model, clean, corrupted, metric, "steps.2.hook_state", ablation="resample", forward_kwargs=kw)
    assert noise.df.score.tolist() == [0.0]  # the corrupted value written into the clean run
    same = patch(model, clean, clean.clone() + 1, metric, Sites("steps.*.hook_state"), forward_kwargs=kw)
    assert (same.df.score.between(-10, 10)).all() and len(same.df) == 3


def test_reasoner_whole_input_patch_is_one_and_batched_equals_per_site_loop():
    model, s = reasoner_case()
    kw = s.forward_kwargs
    for fused, tol in ((False, 1e-6), (True, 1e-4)):  # fused: the copies' attention kernel differs in the last bits
        whole = patch(model, s.clean, s.corrupted, s.metric, "steps.0.hook_input", forward_kwargs=kw, fused=fused)
        assert abs(whole.df.score.item() - 1) < tol
        back = patch(model, s.clean, s.corrupted, s.metric, "steps.0.hook_input", ablation="resample",
                     forward_kwargs=kw, fused=fused)
        assert abs(back.df.score.item()) < tol
    L = s.clean.shape[1]
    grid = [Sites("steps.*.blocks.*.hook_resid_pre", positions=range(0, L, 4)),
            Sites("steps.*.bottleneck.hook_codes", positions=range(1, L, 5)),
            Sites("steps.*.blocks.1.attn.hook_z", heads="each", steps=[0, 3]),
            Sites("steps.1.blocks.0.attn.hook_pattern", positions=[2, 9], heads=[0, 1])]
    for sites in grid:
        fast = patch(model, s.clean, s.corrupted, s.metric, sites, forward_kwargs=kw)
        full = patch(model, s.clean, s.corrupted, s.metric, sites, forward_kwargs=kw, reuse_prefix=False)
        loop = patch_loop(model, s.clean, s.corrupted, s.metric, sites, forward_kwargs=kw)
        assert list(fast.df.site) == list(loop.df.site)
        np.testing.assert_allclose(fast.df.metric, loop.df.metric, atol=1e-5, rtol=0)
        np.testing.assert_allclose(full.df.metric, loop.df.metric, atol=1e-5, rtol=0)
    assert fast.meta["resume"] and resumable(model)


def test_prefix_reuse_skips_settled_and_noop_sites_but_not_results():
    model, s = reasoner_case(n=1)
    L = s.clean.shape[1]
    res = patch(model, s.clean, s.corrupted, s.metric, Sites("steps.*.blocks.*.hook_resid_pre", positions="each"),
                forward_kwargs=s.forward_kwargs)
    assert len(res.df) == 4 * 2 * L
    assert res.meta["sites_noop"] > 0  # e.g. positions before the changed leaf in layer 0
    assert res.meta["copies_settled"] > 0  # argmax unchanged after the patched step: later steps not run
    noop = res.df.metric == res.meta["metric_corrupted"]
    assert noop.sum() >= res.meta["sites_noop"]


def test_continuous_latent_reasoner_matches_loop():
    model, s = reasoner_case(n=1, latent="continuous")
    sites = Sites("steps.*.hook_resid_final", positions=[0, 5, 11], steps=[0, 2])
    fast = patch(model, s.clean, s.corrupted, s.metric, sites, forward_kwargs=s.forward_kwargs)
    loop = patch_loop(model, s.clean, s.corrupted, s.metric, sites, forward_kwargs=s.forward_kwargs)
    np.testing.assert_allclose(fast.df.metric, loop.df.metric, atol=1e-5, rtol=0)


def test_patching_codes_sets_a_variable_value_at_a_step():
    model, s = reasoner_case(n=1)
    pos = int(s.leaf_pos[0])
    site = Site("steps.0.bottleneck.hook_codes", pos=pos)
    res = patch(model, s.clean, s.corrupted, s.metric, [site], forward_kwargs=s.forward_kwargs)
    clean_out, cache = model.run_with_cache(s.clean, **s.forward_kwargs)

    def set_value(codes, hook):
        codes = codes.clone()
        codes[:, pos] = cache[site.name][:, pos]
        return codes

    manual = model.run_with_hooks(s.corrupted, fwd_hooks=[(site.name, set_value)], **s.forward_kwargs)
    assert res.df.metric.item() == pytest.approx(float(s.metric(manual).detach().mean()), abs=1e-5)


def test_zero_and_mean_ablation_match_manual_hooks():
    model, s = reasoner_case()
    kw = s.forward_kwargs
    name = "steps.2.blocks.1.hook_mlp_out"
    _, corr_cache = model.run_with_cache(s.corrupted, names_filter=name, **kw)
    for ablation, value in [("zero", lambda a: torch.zeros_like(a)),
                            ("mean", lambda a: corr_cache[name].mean(0, keepdim=True).expand_as(a))]:
        res = patch(model, s.clean, s.corrupted, s.metric, Sites(name, positions=[3]), ablation=ablation,
                    forward_kwargs=kw)

        def hook(act, hook, value=value):
            act = act.clone()
            act[:, 3] = value(act)[:, 3]
            return act

        with torch.no_grad():
            manual = model.run_with_hooks(s.clean, fwd_hooks=[(name, hook)], **kw)
        assert res.df.metric.item() == pytest.approx(float(s.metric(manual).mean()), abs=1e-5)
        assert res.meta["ablation"] == ablation


def test_result_table_and_figure(tmp_path):
    model, s = reasoner_case(n=1)
    res = patch(model, s.clean, s.corrupted, s.metric, Sites("steps.*.blocks.*.hook_resid_pre", positions=[0, 4, 8]),
                forward_kwargs=s.forward_kwargs)
    assert {"site", "hook", "component", "step", "layer", "pos", "metric", "score"} <= set(res.df.columns)
    fig = res.figure()
    assert len(fig.data) == 2  # one heatmap per layer, step down, position across
    assert fig.data[0].z.shape == (4, 3)
    res.to_csv(tmp_path / "p.csv")
    res.to_html(tmp_path / "p.html")
    assert (tmp_path / "p.csv").read_text().startswith("site,hook,component")
    assert res.top(2).shape[0] == 2


def test_bad_inputs_give_clear_errors(toy):
    model, clean, corrupted, metric = toy
    kw = {"steps": 2}
    with pytest.raises(ValueError, match=r"metric must return a tensor of shape \[batch\] = \[3\]"):
        patch(model, clean, corrupted, lambda out: out.sum(), "steps.0.hook_state", forward_kwargs=kw)
    with pytest.raises(ValueError, match="same shape"):
        patch(model, clean, corrupted[:2], metric, "steps.0.hook_state", forward_kwargs=kw)
    with pytest.raises(UnknownHookError, match="closest valid names"):
        patch(model, clean, corrupted, metric, "steps.0.hook_stat", forward_kwargs=kw)
    with pytest.raises(ValueError, match="did not fire"):
        patch(model, clean, corrupted, metric, "steps.4.hook_state", forward_kwargs=kw)
    with pytest.raises(ValueError, match="ablation='shuffle'"):
        patch(model, clean, corrupted, metric, "steps.0.hook_state", ablation="shuffle", forward_kwargs=kw)
    with pytest.raises(ValueError, match="the metric is the same on clean"):
        patch(model, clean, clean.clone(), metric, "steps.0.hook_state", forward_kwargs=kw)
    with pytest.raises(ValueError, match="sites is empty"):
        patch(model, clean, corrupted, metric, [], forward_kwargs=kw)


def test_command_line_writes_csv_and_html(tmp_path, capsys):
    from apps import cli
    from apps.commands import analysis
    from workbench import checkpoints

    checkpoints.save(tmp_path / "m", small_reasoner(max_steps=8))
    out = tmp_path / "out"
    assert analysis.main(["patch", str(tmp_path / "m"), "--positions", "0,4", "--out", str(out)]) == 0
    assert (out / "patch.csv").read_text().count("\n") == 1 + 7 * 2 * 2  # steps x layers x positions
    assert cli.main(["attribute", str(tmp_path / "m"), "--sites", "steps.*.hook_input",
                     "--positions", "none", "--out", str(out)]) == 0
    assert (out / "attribute.html").exists()
    assert "no gradient path" in capsys.readouterr().out
    assert analysis.main(["patch", str(tmp_path / "m"), "--sites", "steps.0.hook_inptu", "--out", str(out)]) == 2
    assert "closest valid names" in capsys.readouterr().err


def test_given_sources_set_a_code_to_any_value():
    model, s = reasoner_case(n=1)
    name, pos = "steps.1.bottleneck.hook_codes", int(s.target_pos[0])
    _, cache = model.run_with_cache(s.corrupted, names_filter=name, **s.forward_kwargs)
    codes = cache[name].clone()
    codes[:, pos, 3] = 7  # the variable defined at pos holds 7 after step 1
    res = patch(model, s.clean, s.corrupted, s.metric, [Site(name, pos)], sources={name: codes},
                forward_kwargs=s.forward_kwargs)
    with torch.no_grad():
        manual = model.run_with_hooks(s.corrupted, fwd_hooks=[(name, lambda a, hook: codes)], **s.forward_kwargs)
    assert res.df.metric.item() == pytest.approx(float(s.metric(manual).mean()), abs=1e-5)
    assert int(manual.codes[0, 1, pos, 3]) == 7


# ------------------------------------------------------ results that cannot mislead


def test_ablation_top_sites_are_those_with_the_largest_effect(toy):
    model, clean, corrupted, metric = toy
    kw = {"steps": 3}
    sites = Sites("steps.*.hook_*")
    for ablation in ("zero", "mean", "resample", None):
        res = patch(model, clean, corrupted, metric, sites, ablation=ablation, forward_kwargs=kw)
        expect = res.df.score if ablation is None else 1 - res.df.score
        np.testing.assert_allclose(res.df.effect, expect)
        top = res.top(3)
        order = expect.abs().sort_values(ascending=False, kind="stable").index
        assert list(top.site) == list(res.df.loc[order, "site"][:3])
        assert "effect = " in res.summary() and res.best().site == top.site.iloc[0]
    zero = patch(model, clean, corrupted, metric, sites, ablation="zero", forward_kwargs=kw)
    unaffected = zero.df.loc[(zero.df.score - 1).abs().idxmin(), "site"]
    assert unaffected not in set(zero.top(2).site)  # score ~1: the ablation changed nothing there


def test_noop_sites_are_marked_and_not_ranked():
    model, s = reasoner_case(n=1)
    res = patch(model, s.clean, s.corrupted, s.metric, Sites("steps.*.blocks.0.hook_resid_pre", positions="each"),
                forward_kwargs=s.forward_kwargs)
    assert res.counts()["no-op"] == res.meta["sites_noop"] > 0
    assert (res.top(1000).status == "ok").all() and len(res.top(1000)) == len(res.df) - res.meta["sites_noop"]
    assert f"{res.meta['sites_noop']} no-op" in res.summary()


def test_reasoner_and_warp_setups_check_their_contract():
    import models
    from probes import warp as pw

    model = small_reasoner()
    s = patching_setup(model, n=3, seed=0, steps=4)
    assert s.target_changed.all() and (s.gaps >= 1e-3).all() and len(s.problems) == 3
    with pytest.raises(ValueError, match=r"problem \d: metric clean - corrupted = .* < margin 100"):
        patching_setup(model, ga.sample(TASK, 2, 1), seed=0, steps=4, margin=100.0)
    warp = models.load("warp-msd")
    w = pw.patching_setup(warp, n=2, seed=0)
    assert w.target_changed.all() and (w.gaps > 1e-3).all()
    with pytest.raises(ValueError, match=r"trajectory 0: the corruption leaves the target unchanged"):
        pw.patching_setup(warp, clean=w.clean, corrupted=w.clean)


def test_refilled_batches_give_the_same_scores_as_one_group_per_resume_point():
    model, s = reasoner_case(n=2)
    kw, L = s.forward_kwargs, s.clean.shape[1]
    for sites in (Sites("steps.*.blocks.*.hook_resid_pre", positions="each"),
                  Sites("steps.*.bottleneck.hook_codes", positions=range(0, L, 3))):
        for memory_mb in (512, 1e-3):  # 1e-3: one copy per forward, so the sweep splits every step's batch
            refill = patch(model, s.clean, s.corrupted, s.metric, sites, forward_kwargs=kw, memory_mb=memory_mb)
            groups = patch(model, s.clean, s.corrupted, s.metric, sites, forward_kwargs=kw, memory_mb=memory_mb,
                           refill=False)
            assert refill.meta["refill"] and not groups.meta["refill"]
            np.testing.assert_allclose(refill.df.metric, groups.df.metric, atol=1e-6, rtol=0)
            assert list(refill.df.status) == list(groups.df.status)
            assert refill.meta["last_step"] == groups.meta["last_step"]  # each copy rejoined the base run alike
    refill = patch(model, s.clean, s.corrupted, s.metric, sites, forward_kwargs=kw)
    groups = patch(model, s.clean, s.corrupted, s.metric, sites, forward_kwargs=kw, refill=False)
    assert refill.meta["forwards"] < groups.meta["forwards"]  # each step entered once, not once per resume point
    loop = patch_loop(model, s.clean, s.corrupted, s.metric, sites, forward_kwargs=kw)
    np.testing.assert_allclose(refill.df.metric, loop.df.metric, atol=1e-5, rtol=0)


def test_copies_of_a_problem_share_one_attention_layout_and_resuming_embeds_no_tokens():
    from models.reasoner_data import tokens as encode

    model = small_reasoner(segment_window=2, causal=True)
    tokens, kw = encode(ga.sample(TASK, 2, 1), model.cfg), {"steps": 4}
    one = model.layout(tokens[:1].repeat(5, 1, 1))
    assert one.rows is None and one.mask.shape[0] == 1
    assert one.bias(model.blocks[0].attn, tokens.shape[1], model.cfg.rel_window).shape[0] == 1  # broadcast
    both = model.layout(tokens.repeat(3, 1, 1))
    sets = both.mask.shape[0]
    assert sets <= 2 and (sets == 1 or both.rows.tolist() == [*both.rows[:2].tolist()] * 3)
    with torch.no_grad():
        out, copies = model(tokens, **kw), model(tokens.repeat(3, 1, 1), **kw)
    for j in range(3):
        torch.testing.assert_close(copies.value_logits[2 * j: 2 * j + 2], out.value_logits, atol=1e-6, rtol=0)
    _, cache = model.run_with_cache(tokens, **kw)
    calls = []
    handle = model.embed.register_forward_hook(lambda *a: calls.append(1))
    try:
        with torch.no_grad():
            resumed = model(tokens, start=model.resume_state(cache, 2), **kw)
    finally:
        handle.remove()
    assert len(calls) == kw["steps"] - 2  # only each new step's codes; the input comes from the carry
    assert torch.equal(resumed.value_logits, out.value_logits)


@pytest.mark.parametrize("latent", ["discrete", "continuous"])
def test_patched_copies_take_the_fused_kernel_only_where_the_carry_stays_comparable(latent, monkeypatch):
    """Discrete reasoner: the copies run fused attention, the base runs do not (no-ops decided alike);
    continuous latent: nothing runs fused (its carry would never equal the base run's again)."""
    model, s = reasoner_case(n=1, latent=latent)
    kw = s.forward_kwargs
    sites = Sites("steps.*.blocks.*.hook_resid_pre", positions="each")
    calls = []
    sdpa = torch.nn.functional.scaled_dot_product_attention
    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention",
                        lambda *a, **k: calls.append(1) or sdpa(*a, **k))
    default = patch(model, s.clean, s.corrupted, s.metric, sites, forward_kwargs=kw, fused=False)
    assert not calls
    fused = patch(model, s.clean, s.corrupted, s.metric, sites, forward_kwargs=kw)
    assert bool(calls) == (latent == "discrete")
    assert list(fused.df.status) == list(default.df.status) and (default.df.status == "no-op").any()
    np.testing.assert_allclose(fused.df.metric, default.df.metric, atol=1e-5, rtol=0)
    if latent == "discrete":
        assert fused.meta["copies_settled"] == default.meta["copies_settled"] > 0
