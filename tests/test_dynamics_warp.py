"""The loop-dynamics lab on WARP and the GRU baseline: readouts and basins with known answers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import models
from models import dynamics_adapters as da

torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _no_grad():
    with torch.no_grad():
        yield


@pytest.fixture(scope="module")
def warp():
    return models.load("warp-phys-msd")


@pytest.fixture(scope="module")
def digits():
    return models.load("warp-digits")


@pytest.fixture(scope="module")
def gru():
    return models.load("gru-msd")


def test_decode_theta_is_every_steps_own_output(warp, digits):
    for model in (warp, digits):
        x = da.WARP.inputs(model, 3, 0).inputs
        out = model(x, mode="recurrent")
        for t in (0, 17, out.steps - 1):
            dec = model.decode_theta(out.thetas[:, t], t, out.inputs[:, t])
            torch.testing.assert_close(dec["mean"], out.mean[:, t])
            if model.cfg.n_classes:
                torch.testing.assert_close(dec["logits"], out.logits[:, t])
    with pytest.raises(ValueError, match=r"theta must be \[batch, \d+\]"):
        warp.decode_theta(torch.zeros(3), 0, torch.zeros(3, 2))
    with pytest.raises(ValueError, match="reads the current input: give u"):
        warp.decode_theta(torch.zeros(2, warp.cfg.d_theta), 0)
    with pytest.raises(ValueError, match="t"):
        warp.decode_theta(torch.zeros(2, warp.cfg.d_theta), warp.cfg.seq_len, torch.zeros(2, 2))


def test_warp_lens_at_the_last_step_is_the_models_own_forecast(warp):
    res = da.run(warp, "lens", n=4, seed=0)
    batch = da.WARP.inputs(warp, 4, 0)
    out = warp(batch.inputs, mode="recurrent")
    T = res.meta["steps"]
    assert T == batch.inputs.shape[1] and res.meta["answers"] == "values"
    last = res.df[res.df.step == T - 1]
    assert (last["error_final"] == 0).all() and last["matches_final"].all()
    want = (out.mean[:, -1] - batch.target).norm(dim=-1).numpy()  # the model's own forecast error
    np.testing.assert_allclose(last["error_target"], want, rtol=1e-5, atol=1e-7)
    fig = res.figure()
    assert "distance" in fig.layout.yaxis2.title.text


def test_warp_classifier_lens_reads_its_label_at_the_last_step(digits):
    res = da.run(digits, "lens", n=8, seed=0)
    batch = da.WARP.inputs(digits, 8, 0)
    out = digits(batch.inputs, mode="recurrent")
    last = res.df[res.df.step == res.meta["steps"] - 1]
    assert res.meta["answers"] == "classes" and last["matches_final"].all()
    assert last["pred"].tolist() == out.logits[:, -1].argmax(-1).tolist()
    assert last["correct"].tolist() == (out.logits[:, -1].argmax(-1) == batch.target).tolist()
    assert last["rank_final"].eq(0).all()


def test_gru_lens_scores_each_steps_forecast_of_the_next_value(gru):
    res = da.run(gru, "lens", n=3, seed=0)
    x = da.GRU.inputs(gru, 3, 0).inputs
    full = da._sequences(gru, 3, 0)[0]
    out = gru(x)
    for t in (0, 50, x.shape[1] - 1):
        got = res.df[res.df.step == t]["error_target"].to_numpy()
        np.testing.assert_allclose(got, (out.mean[:, t] - full[:, t + 1]).norm(dim=-1).numpy(), rtol=1e-5, atol=1e-7)
    conv = da.run(gru, "convergence", n=3, seed=0)  # each step forecasts another value: no commit step
    assert "commit_step" not in conv.tables["examples"]


@pytest.mark.parametrize("name", ["warp", "digits", "gru"])
def test_basin_with_eps_zero_returns_at_once(name, warp, digits, gru):
    model = {"warp": warp, "digits": digits, "gru": gru}[name]
    res = da.run(model, "basin", n=3, seed=0, eps=(0.0,), max_steps=3, samples=2)
    assert res.meta["perturbed_steps"][0] == 0 and res.meta["perturbed_steps"][-1] == res.meta["steps"] - 1
    assert res.df["returns"].all() and not res.df["changed"].any()
    assert (res.df["recovery_time"] == 0).all()
    assert res.df["perturbation"].max() < 1e-4  # rounding only: the copies run in a larger batch


def test_warp_basin_resumed_at_step_t_equals_runs_from_step_0(warp):
    kw = dict(n=3, seed=1, eps=(0.1, 3.0), max_steps=3, samples=2)
    resumed, full = da.run(warp, "basin", **kw), da.run(warp, "basin", resume=False, **kw)
    assert resumed.meta["resumed"] and not full.meta["resumed"]
    assert resumed.meta["forwards"] == 3 and full.meta["forwards"] == 1  # one per step vs the whole grid
    for col in ("returns", "changed", "recovery_time"):
        assert resumed.df[col].equals(full.df[col]), col
    np.testing.assert_allclose(resumed.df["ratio"], full.df["ratio"], rtol=1e-4, atol=1e-6)
    by = resumed.tables["by_step"]
    assert by.loc[by.eps == 0.1, "return_rate"].min() >= by.loc[by.eps == 3.0, "return_rate"].max()


def test_every_analysis_runs_at_the_page_settings_on_the_sequence_models(warp, gru):
    for model in (warp, gru):
        a = da.adapters(model)
        assert a.analyses == ("lens", "convergence", "transfer", "basin", "fixed-points")
        for analysis in ("lens", "basin"):
            kw = da.page_defaults(a, analysis)
            res = da.run(model, analysis, seed=0, **{**kw, "n": 2})
            assert len(res.df) and res.summary() and res.figure().layout.title.text
