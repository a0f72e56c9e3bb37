import numpy as np
import pytest
import torch

from tests.test_oracles import LinearLoop
from tests.test_patching import reasoner_case
from workbench.attribution import attribute
from workbench.patching import patch
from workbench.sites import Sites

pytestmark = pytest.mark.usefixtures("one_thread")


def linear_model() -> LinearLoop:
    """s_{t+1} = M s_t A + x over [batch, 5, 3], 4 steps built: every activation enters the output linearly."""
    return LinearLoop(pos=5, d=3, max_steps=4)


def test_attribution_equals_exact_patching_on_a_linear_model():
    torch.manual_seed(0)
    model = linear_model()
    clean, corrupted = torch.randn(2, 5, 3), torch.randn(2, 5, 3)
    w = torch.randn(5, 3)
    metric = lambda out: (out * w).sum((1, 2))  # noqa: E731
    sites = Sites("steps.*.hook_*", positions="each")
    for ablation in (None, "zero", "mean", "resample"):
        exact = patch(model, clean, corrupted, metric, sites, ablation=ablation)
        approx = attribute(model, clean, corrupted, metric, sites, ablation=ablation)
        assert list(exact.df.site) == list(approx.df.site) and len(exact.df) == 3 * 2 * 5
        np.testing.assert_allclose(approx.df.score, exact.df.score, atol=1e-4)
        assert (approx.df.note == "").all()


def test_discrete_bottleneck_sites_are_marked_not_estimated():
    model, s = reasoner_case(n=1)
    res = attribute(model, s.clean, s.corrupted, s.metric,
                    Sites(["steps.*.blocks.0.hook_resid_pre", "steps.*.bottleneck.hook_codes"], positions=[0, 7]),
                    forward_kwargs=s.forward_kwargs)
    T = s.forward_kwargs["steps"]
    codes = res.df.component == "bottleneck.hook_codes"
    assert (res.df.note[codes] == "integer activation").all() and res.df.score[codes].isna().all()
    resid = res.df[~codes]
    early, last = resid[resid.step < T - 1], resid[resid.step == T - 1]
    assert (early.note == "no gradient path").all() and early.score.isna().all()  # the argmax cuts the gradient
    assert (last.note == "").all() and last.score.notna().all()
    # what could not be computed is counted, named and drawn, never silently blank
    counts = res.counts()
    assert counts["no gradient path"] == len(early) and counts["integer activation"] == int(codes.sum())
    assert (res.df.status[res.df.note != ""] == res.df.note[res.df.note != ""]).all()
    text = res.summary()
    assert f"{len(early)} no gradient path" in text and "integer activation" in text
    assert set(res.top(100).site) == set(last.site)  # only estimated sites are ranked
    fig = res.figure()
    grey = [t for t in fig.data if t.name and "no gradient path" in t.name]
    assert grey and grey[0].showlegend and grey[0].colorscale[0][1] == "#bdbdbd"
    assert f"({len(early)} sites" in grey[0].name and f"{len(early)} no gradient path" in fig.layout.title.text
    z = np.asarray(grey[0].z, dtype=float)
    assert np.nansum(z) > 0  # the grey layer covers the cells without an estimate


def test_continuous_latent_carries_gradients_through_the_loop():
    model, s = reasoner_case(n=1, latent="continuous")
    sites = Sites("steps.*.blocks.1.hook_resid_pre", positions="each")
    approx = attribute(model, s.clean, s.corrupted, s.metric, sites, forward_kwargs=s.forward_kwargs)
    exact = patch(model, s.clean, s.corrupted, s.metric, sites, forward_kwargs=s.forward_kwargs)
    assert (approx.df.note == "").all() and approx.df.score.notna().all()
    assert np.corrcoef(approx.df.score, exact.df.score)[0, 1] > 0.5


def test_bad_inputs_give_clear_errors():
    model = linear_model()
    x = torch.randn(2, 5, 3)
    with pytest.raises(ValueError, match=r"shape \[batch\] = \[2\]"):
        attribute(model, x, x + 1, lambda out: out.sum(), "steps.0.hook_state")
    with pytest.raises(ValueError, match="same shape"):
        attribute(model, x, x[:1], lambda out: out.sum((1, 2)), "steps.0.hook_state")
    with pytest.raises(ValueError, match="closest valid names"):
        attribute(model, x, x + 1, lambda out: out.sum((1, 2)), "steps.0.hook_stat")


def test_act_attribution_through_ponder_steps():
    from tests.test_patching_act_warp import act_case

    model, clean, corrupted, metric = act_case()
    res = attribute(model, clean, corrupted, metric, Sites("time.0.ponder.*.hook_state"))
    assert (res.df.note == "").all() and res.df.score.notna().all()
    first = res.df.iloc[0]
    assert first.ponder == 0 and first.time == 0
