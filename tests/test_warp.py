import math

import numpy as np
import pytest
import torch

from models.gru import GRU, GRUConfig, hidden_for_params
from models.warp import Warp, WarpConfig
from models.warp_data import Forcing, digits_batch, dynamics_batch
from workbench.hooks import UnknownHookError, stack
from workbench.tasks import digits as dg
from workbench.tasks import dynamics as dy

VARIANTS = {
    "plain": dict(d_in=2),
    "hyper-mlp": dict(d_in=2, hyper_hidden=6, root_act="silu"),
    "x-and-fourier": dict(d_in=2, init="learned", tau_freqs=2, root_takes_x=True, root_depth=1),
    "phys-msd": dict(d_in=2, physics="msd", phys_scales=(1.0, 0.3, 5.0), gaussian=True),
    "phys-sine": dict(d_in=1, physics="sine"),
    "classifier": dict(d_in=1, regress=False, n_classes=10, init="learned", root_depth=1),
    "both-heads": dict(d_in=1, n_classes=10, init="learned"),
}


def small(seed=0, perturb=True, dtype=torch.float64, **kw) -> Warp:
    """A small WARP with a trained-looking (non-identity) A and nonzero B."""
    torch.manual_seed(seed)
    kw = {"root_width": 8, "seq_len": 40, **kw}
    model = Warp(WarpConfig(**kw)).to(dtype).eval()
    if perturb:
        D = model.cfg.d_theta
        with torch.no_grad():
            model.A_raw.add_(torch.randn(D, D, dtype=dtype) * 0.05 / math.sqrt(D) / model.cfg.a_scale)
            model.B.normal_(0, 0.2)
    return model


def inputs(model, batch=3, T=None, seed=1):
    g = torch.Generator().manual_seed(seed)
    T = T or model.cfg.seq_len
    return torch.randn(batch, T, model.cfg.d_in, generator=g, dtype=model.B.dtype).cumsum(1) * 0.2


@pytest.mark.parametrize("name", list(VARIANTS))
def test_parallel_and_recurrent_modes_agree(name):
    model = small(**VARIANTS[name])
    x = inputs(model)
    par, rec = model(x, mode="parallel"), model(x, mode="recurrent")
    for key in ("thetas", "mean", "std", "logits", "phys", "inputs"):
        a, b = getattr(par, key), getattr(rec, key)
        assert (a is None) == (b is None), key
        if a is not None:
            assert a.shape == b.shape
            assert (a - b).abs().max() < 1e-5, key
    f32 = small(dtype=torch.float32, **VARIANTS[name])
    x32 = x.float()
    assert (f32(x32, mode="parallel").thetas - f32(x32).thetas).abs().max() < 1e-4


@pytest.mark.parametrize("name", ["plain", "x-and-fourier", "phys-msd"])
def test_identity_A_and_zero_B_keep_theta_constant(name):
    model = small(perturb=False, **VARIANTS[name])
    assert torch.equal(model.A, torch.eye(model.cfg.d_theta, dtype=model.B.dtype))
    assert not model.B.any()
    x = inputs(model)
    for mode in ("recurrent", "parallel"):
        th = model(x, mode=mode).thetas
        assert torch.allclose(th, th[:, :1].expand_as(th), atol=1e-12)
        assert th[:, 0].std() > 0 or model.cfg.init == "learned"


@pytest.mark.parametrize("name", ["plain", "hyper-mlp", "x-and-fourier", "phys-msd", "phys-sine", "classifier"])
def test_root_rebuilt_from_theta_reproduces_the_output(name):
    model = small(**VARIANTS[name])
    x = inputs(model)
    out = model(x)
    for t in (0, 7, model.cfg.seq_len - 1):
        f = model.root_at(t, x, sample=2)
        assert isinstance(f.layers[0], torch.nn.Linear)
        pred = f(model.tau(t), out.inputs[2, t])
        expect = out.mean[2, t] if out.mean is not None else out.logits[2, t]
        assert torch.allclose(pred, expect, atol=1e-10)
    # the same weights evaluated over a grid of tau: an ordinary function of time
    f = model.root_at(10, x)
    grid = torch.linspace(0, 1, 5, dtype=x.dtype)
    u = out.inputs[0, 10].expand(5, -1)
    assert f(grid, u).shape[0] == 5


def test_every_step_is_hooked_and_stack_matches_the_output():
    model = small(**VARIANTS["phys-msd"])
    x = inputs(model, T=12)
    out, cache = model.run_with_cache(x)
    sites = ["hook_input", "hook_dx", "hook_theta", "root.hook_in", "root.layers.0.hook_pre", "root.layers.1.hook_post",
             "root.hook_out", "hook_phys", "hook_output", "hook_std"]
    for t in range(12):
        for s in sites:
            assert f"time.{t}.{s}" in cache
    assert "time.12.hook_theta" not in cache
    assert torch.equal(stack(cache, "hook_theta", loop="time").transpose(0, 1), out.thetas)
    assert torch.equal(stack(cache, "hook_output", loop="time").transpose(0, 1), out.mean)
    assert cache["time.3.hook_dx"].equal(x[:, 3] - x[:, 2]) and not cache["time.0.hook_dx"].any()
    assert model.loop_sizes == {"time": 40}
    _, pcache = model.run_with_cache(x, mode="parallel")
    assert pcache["parallel.hook_theta"].shape == (3, 12, model.cfg.d_theta)
    assert torch.allclose(pcache["parallel.root.layers.1.hook_post"], stack(cache, "root.layers.1.hook_post",
                                                                            loop="time").transpose(0, 1))
    assert not any(k.startswith("time.") for k in pcache)


def test_patching_theta_total_effect_in_recurrent_direct_effect_in_parallel():
    model = small(**VARIANTS["plain"])
    x = inputs(model, T=10)
    clean = model(x)

    def shift(theta, hook):
        return theta + 0.5

    patched = model.run_with_hooks(x, fwd_hooks=[("time.4.hook_theta", shift)])
    assert torch.equal(patched.mean[:, :4], clean.mean[:, :4])  # earlier steps untouched
    assert not torch.allclose(patched.thetas[:, 5:], clean.thetas[:, 5:])  # propagates through A
    assert (patched.mean[:, 4:] - clean.mean[:, 4:]).abs().amax(dim=(0, 2)).min() > 1e-6

    def shift_step4(thetas, hook):
        thetas = thetas.clone()
        thetas[:, 4] += 0.5
        return thetas

    direct = model.run_with_hooks(x, mode="parallel", fwd_hooks=[("parallel.hook_theta", shift_step4)])
    changed = (direct.mean - clean.mean).abs().amax(dim=(0, 2)) > 1e-9
    assert changed.tolist() == [t == 4 for t in range(10)]
    assert torch.allclose(direct.mean[:, 4], patched.mean[:, 4])  # same at the patched step itself


def test_generation_feeds_predictions_back():
    model = small(**VARIANTS["x-and-fourier"])
    x = inputs(model, T=30)
    C, H = 8, 22
    gen = model(x, context=C, horizon=H)
    assert gen.steps == C + H - 1
    teacher = model(x[:, :C])
    assert torch.allclose(gen.mean[:, :C], teacher.mean)  # the context is read as given
    assert torch.equal(gen.inputs[:, C:], gen.mean[:, C - 1:-1])  # then its own predictions
    assert torch.allclose(model.generate(x[:, :C], H), gen.mean[:, C - 1:], atol=1e-12)
    # a feed mask that is all True is teacher forcing
    full = model(x, feed=torch.ones(3, 30, dtype=torch.bool))
    assert torch.allclose(full.mean, model(x, mode="parallel").mean, atol=1e-10)
    # a long context may come with more data than the model would read
    assert model(inputs(model, T=60), context=10, horizon=5).steps == 14


def test_physics_heads_follow_their_formulas():
    model = small(**VARIANTS["phys-msd"])
    x = inputs(model)
    out = model(x)
    m, c, k = out.phys.unbind(-1)
    pos, vel = out.inputs.unbind(-1)
    dt = model.cfg.dt
    assert torch.allclose(out.mean[..., 0], pos + dt * vel)
    assert torch.allclose(out.mean[..., 1], vel - dt * (c * vel + k * pos) / m)
    assert (out.phys > 0).all()
    sine = small(**VARIANTS["phys-sine"])
    o = sine(inputs(sine))
    tau = (torch.arange(40, dtype=torch.float64) + 1) / 39
    assert torch.allclose(o.mean[..., 0], torch.sin(2 * math.pi * tau + o.phys[..., 0]))


def test_losses_train_A_B_and_theta0_in_both_modes():
    model = small(**VARIANTS["both-heads"]).train()
    x = inputs(model)
    label = torch.tensor([1, 2, 3])
    for feed in (None, torch.rand(3, 40, generator=torch.Generator().manual_seed(0)) < 0.5):
        model.zero_grad()
        batch = {"x": x, "label": label} | ({"feed": feed} if feed is not None else {})
        loss, stats = model.loss(batch)
        loss.backward()
        assert set(stats) == {"mse", "ce", "acc"}
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in (model.A_raw, model.B, model.theta0))


def test_bad_inputs_get_clear_errors():
    model = small(**VARIANTS["plain"])
    x = inputs(model)
    with pytest.raises(ValueError, match=r"x must be a float tensor \[batch, time, d_in=2\]; got \(3, 40\)"):
        model(x[..., 0])
    with pytest.raises(ValueError, match="d_in=2"):
        model(x[..., :1])
    with pytest.raises(ValueError, match="float tensor"):
        model(x.long())
    bad = x.clone()
    bad[1, 5, 0] = float("nan")
    with pytest.raises(ValueError, match="non-finite values .* first at batch 1, time 5"):
        model(bad)
    with pytest.raises(ValueError, match="41 time steps; this model supports at most seq_len=40"):
        model(inputs(model, T=41))
    with pytest.raises(ValueError, match=r"context=10 \+ horizon=40 - 1 = 49 steps"):
        model(x, context=10, horizon=40)
    with pytest.raises(ValueError, match="mode='scan'; allowed"):
        model(x, mode="scan")
    with pytest.raises(ValueError, match="generation .* needs mode='recurrent'"):
        model(x, mode="parallel", context=5)
    with pytest.raises(ValueError, match=r"feed must be a bool tensor \[batch, time\]"):
        model(x, feed=torch.ones(3, 40))
    with pytest.raises(ValueError, match="t=40 is out of range"):
        model.root_at(40, x)
    with pytest.raises(UnknownHookError, match="loop 'time' has indices 0..39"):
        model.run_with_hooks(x, fwd_hooks=[("time.40.hook_theta", lambda a, hook: a)])
    with pytest.raises(ValueError, match="needs a regression head"):
        small(**VARIANTS["classifier"])(inputs(small(**VARIANTS["classifier"])), context=4)
    with pytest.raises(ValueError, match="physics='msd' predicts a state of 2 dims"):
        WarpConfig(d_in=1, physics="msd")
    with pytest.raises(ValueError, match="root_act='sigmoid'"):
        WarpConfig(root_act="sigmoid")
    with pytest.raises(ValueError, match="needs a head"):
        WarpConfig(regress=False)


def test_stable_A_keeps_its_largest_singular_value_at_most_one():
    model = small(perturb=False, **VARIANTS["plain"]).train()
    D = model.cfg.d_theta
    with torch.no_grad():
        model.A_raw.copy_(torch.randn(D, D, dtype=torch.float64) * 3 / math.sqrt(D) / model.cfg.a_scale)
    assert torch.linalg.matrix_norm(model.A.detach(), 2) <= 1 + 1e-9
    assert torch.linalg.matrix_norm(model.eye + model.cfg.a_scale * model.A_raw.detach(), 2) > 2
    x = inputs(model, T=40) * 10
    assert model.eval()(x, mode="parallel").thetas.abs().max() < 1e3


def test_A_follows_every_change_of_A_raw():
    """A is kept between gradient-free calls; every way A_raw changes must show in it."""
    model = small(**VARIANTS["plain"])
    D = model.cfg.d_theta

    def expected() -> torch.Tensor:  # the formula, written out: M / max(1, ||M||_2)
        M = torch.eye(D, dtype=torch.float64) + model.cfg.a_scale * model.A_raw.detach()
        return M / max(1.0, float(torch.linalg.matrix_norm(M, 2)))

    with torch.no_grad():
        first = model.A
        assert model.A is first  # kept, not recomputed
        model.A_raw.mul_(1.5)  # in place, as an optimiser step
        assert torch.allclose(model.A, expected(), atol=1e-10)
        model.A_raw.data[0, 0] += 0.5  # through .data, which no version counter sees
        assert torch.allclose(model.A, expected(), atol=1e-10)
        state = {k: v.clone() for k, v in model.state_dict().items()}
        state["A_raw"] = torch.randn(D, D, dtype=torch.float64) * 3 / math.sqrt(D) / model.cfg.a_scale
        model.load_state_dict(state)
        assert torch.allclose(model.A, expected(), atol=1e-10)
        assert torch.linalg.matrix_norm(model.A, 2) <= 1 + 1e-9  # the rescaled branch
    model.float()  # new storage, new dtype
    with torch.no_grad():
        assert model.A.dtype == torch.float32
        assert torch.allclose(model.A.double(), expected(), atol=1e-5)
    model.A.sum().backward()  # with gradients: computed afresh, differentiable
    assert model.A_raw.grad is not None and model.A_raw.grad.abs().sum() > 0


def test_config_round_trip_and_spectrum():
    model = small(**VARIANTS["phys-msd"])
    again = Warp.from_config(model.config_dict())
    assert again.cfg == model.cfg and again.cfg.d_theta == model.cfg.d_theta
    eig = small(perturb=False).spectrum()
    assert torch.allclose(eig.abs(), torch.ones_like(eig.abs()))


def test_gru_baseline_shares_the_interface_and_hooks():
    torch.manual_seed(0)
    g = GRU(GRUConfig(d_in=2, hidden=12, seq_len=30)).eval()
    x = torch.randn(4, 30, 2)
    out, cache = g.run_with_cache(x)
    assert out.mean.shape == (4, 30, 2) and out.thetas.shape == (4, 30, 12)
    assert torch.equal(stack(cache, "hook_hidden", loop="time").transpose(0, 1), out.thetas)
    gen = g(x, context=10, horizon=21)
    assert torch.equal(gen.inputs[:, 10:], gen.mean[:, 9:-1])
    patched = g.run_with_hooks(x, fwd_hooks=[("time.5.hook_hidden", lambda h, hook: h * 0)])
    assert torch.equal(patched.mean[:, :5], out.mean[:, :5]) and not torch.allclose(patched.mean[:, 6:], out.mean[:, 6:])
    loss, stats = g.train().loss({"x": x, "feed": torch.rand(4, 30) < 0.5})
    loss.backward()
    assert "mse" in stats and g.cell.weight_hh.grad is not None
    with pytest.raises(ValueError, match="31 time steps"):
        g(torch.randn(1, 31, 2))
    n = sum(p.numel() for p in GRU(GRUConfig(d_in=2, hidden=hidden_for_params(20_000, 2))).parameters())
    assert abs(n - 20_000) < 1_000


def test_training_batches_and_forcing_schedule():
    f = Forcing(min=0.25, decay=100, start=50)
    assert [f.p(s) for s in (0, 49, 50, 100, 150, 10_000)] == [1.0, 1.0, 1.0, 0.625, 0.25, 0.25]
    task = dy.DynamicsConfig(system="lv")
    rng = np.random.default_rng(0)
    assert set(dynamics_batch(task, 4, rng, 0, f)) == {"x"}
    b = dynamics_batch(task, 64, rng, 10_000, f)
    assert b["x"].shape == (64, 128, 2) and b["feed"][:, :task.context].all()
    assert 0.15 < b["feed"][:, task.context:].float().mean() < 0.35
    d = digits_batch(dg.DigitsConfig(), 8, rng, 0, Forcing(min=1.0))
    assert d["x"].shape == (8, 64, 1) and d["label"].shape == (8,) and "feed" not in d


def test_train_and_eval_commands_write_a_checkpoint_card_and_table(tmp_path):
    import json

    import pandas as pd

    from apps.cli import main

    out = tmp_path / "tiny"
    assert main(["train", "warp", "--task", "sine", "--steps", "4", "--batch-size", "4", "--warmup", "1",
                 "--root-width", "6", "--eval-n", "4", "--final-n", "8", "--threads", "1", "--no-progress",
                 "--forcing-decay", "2", "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["headline"]["metric"] == "forecast_mse_x1e-2" and metrics["evaluation"]["n"] == 8
    assert metrics["train"]["step"] == 4 and "wall time" in (out / "card.md").read_text()
    gru = tmp_path / "gru"
    assert main(["train", "warp", "--task", "sine", "--arch", "gru", "--steps", "2", "--batch-size", "4",
                 "--root-width", "6", "--eval-n", "4", "--final-n", "8", "--no-progress", "--out", str(gru)]) == 0
    report = tmp_path / "eval"
    assert main(["eval", "warp", "--models", f"{out},{gru}", "--n", "8", "--out", str(report)]) == 0
    table = (report / "dynamics_table.csv").read_text()
    assert "sine" in table and "GRU" in table and "WARP" in table
    assert (report / "results.html").stat().st_size > 1000 and (report / "forecast_sine.html").is_file()
    margin = pd.read_csv(report / "margins.csv")
    assert len(margin) == 2 and set(margin.model) == {str(out), str(gru)} and (margin.n == 8).all()
    results = pd.read_csv(report / "results.csv")
    assert set(results.metric) == {"mse_x1e-2", "one_step_x1e-2"} and len(results) == 4
    assert main(["eval", "warp", "--models", "no-such-model", "--out", str(report)]) == 2


def test_figures_are_built_from_data_and_reject_bad_shapes():
    import pandas as pd

    from apps.views import warp as views
    from models.warp_eval import theta_pca

    model = small(**VARIANTS["phys-msd"])
    x = inputs(model, batch=1)
    with torch.no_grad():
        out = model(x)
    T, C = 40, 10
    fig = views.forecast_figure(np.arange(T), x[0].numpy(), {"WARP": np.zeros((T - C, 2))}, C, ("x", "v"))
    assert len(fig.data) == 4
    coords, ev = theta_pca(out.thetas[0].numpy())
    assert coords.shape == (T, 3) and ev[0] >= ev[1] >= ev[2]
    assert len(views.theta_pca_figure(coords, np.linspace(0, 1, T), ev, context=C).data) == 2
    assert views.theta_pca_figure(coords[:, :2], np.linspace(0, 1, T)).data[0].type == "scatter"
    spec = views.spectrum_figure(model.spectrum().numpy())
    assert len(spec.data[1].x) == model.cfg.d_theta
    phys = views.phys_params_figure(np.linspace(0, 1, T), out.phys[0].numpy(), ("m", "c", "k"), {"m": 1.0}, 0.25)
    assert len(phys.data) == 3
    table = pd.DataFrame({"GRU": [1.0], "WARP": [0.5]}, index=["msd"])
    digits = pd.DataFrame({"model": ["warp-digits"], "metric": ["accuracy"], "value": [0.95], "n": [450]})
    assert len(views.results_table_figure(table, digits).data) == 2
    assert len(views.digits_figure(np.linspace(0, 1, 64), np.zeros(32), 32).data) == 3
    with pytest.raises(ValueError, match=r"forecast 'WARP' must be \[30, 2\]"):
        views.forecast_figure(np.arange(T), x[0].numpy(), {"WARP": np.zeros((T, 2))}, C)
    with pytest.raises(ValueError, match=r"params must be \[T=40, p=2\]"):
        views.phys_params_figure(np.linspace(0, 1, T), out.phys[0].numpy(), ("m", "c"))
    with pytest.raises(ValueError, match="completion 32"):
        views.digits_figure(np.zeros(64), np.zeros(30), 32)


# ------------------------------------------------------------ shipped checkpoints
def _shipped(prefixes: tuple[str, ...]) -> list[str]:
    """Zoo models named like the WARP presets (the zoo holds what has been trained and committed)."""
    import models

    return [n for n in models.zoo_names() if n.startswith(prefixes)]


SHIPPED_DYNAMICS = _shipped(("warp-msd", "warp-phys-", "gru-", "warp-sine", "warp-lv"))


def test_the_zoo_ships_the_issue_models():
    assert {"warp-msd", "warp-phys-msd", "warp-sine", "warp-lv", "gru-msd", "gru-sine", "gru-lv"} <= set(SHIPPED_DYNAMICS)
    assert _shipped(("warp-digits",)) == ["warp-digits"]


def _fresh_mse(name: str, n: int = 96, seed: int = 4242) -> float:
    import models
    from models.warp_eval import forecast_eval

    torch.set_num_threads(1)
    return forecast_eval(models.load(name), n=n, seed=[seed, 1])["mse_x1e-2"]


@pytest.mark.parametrize("name", SHIPPED_DYNAMICS)
def test_shipped_forecaster_meets_its_card_on_fresh_data(name):
    import models

    card = models.metrics(name)["headline"]["value"]
    assert _fresh_mse(name) < 1.5 * card + 0.05  # a new seed: within sampling noise of the card
    size = (models.resolve(name) / "model.safetensors").stat().st_size
    assert size < 2_000_000


def test_shipped_msd_models_keep_the_papers_order():
    warp, phys, gru = (_fresh_mse(n) for n in ("warp-msd", "warp-phys-msd", "gru-msd"))
    assert warp < gru
    assert phys < warp


def test_shipped_digits_model_classifies_and_completes():
    import models
    from models.warp_data import digits_split
    from models.warp_eval import digits_eval, forecast, model_task
    from workbench.tasks import digits as dg

    torch.set_num_threads(1)
    model = models.load("warp-digits")
    ev = digits_eval(model)
    # the held-out split is fixed, so the measurement is deterministic: the 0.90 target itself
    assert ev["n"] == 450 and ev["accuracy"] >= 0.90
    assert abs(ev["accuracy"] - models.metrics("warp-digits")["test"]["accuracy"]) <= 3 / 450  # as its card says
    # completion per image: typical images close, few run away (one runaway image dominates the mean, and
    # its size depends on the last bits of the arithmetic, so the mean is not compared)
    task = model_task(model)
    x = torch.from_numpy(dg.sequences(digits_split(task, "test").pixels))
    with torch.no_grad():
        per_image = ((forecast(model, x, task.context) - x[:, task.context:]) ** 2).mean(dim=(1, 2))
    assert float(per_image.median()) < 0.2 and float((per_image > 1).float().mean()) < 0.05


def test_margins_compare_forecasters_trajectory_by_trajectory():
    import pandas as pd

    from models.warp_eval import margins

    # model a's errors against b's on 4 shared trajectories: b / a = 10, 10, 2, 0.5
    errs = {"a": [1.0, 1.0, 1.0, 4.0], "b": [10.0, 10.0, 2.0, 2.0]}
    rows = [{"task": "msd", "kind": k.upper(), "model": k, "trajectory": i, "mse_x1e-2": e}
            for k, es in errs.items() for i, e in enumerate(es)]
    m = margins(pd.DataFrame(rows)).set_index(["model", "other"])
    a = m.loc[("a", "b")]
    assert a.mean_ratio == pytest.approx(24 / 7)  # the table's margin: mean 6 / mean 1.75
    assert a.median_ratio == pytest.approx(6.0) and a.share_better == pytest.approx(0.75)
    assert a.p10_ratio == pytest.approx(0.5 + 0.3 * 1.5)  # numpy's linear interpolation between 0.5 and 2
    assert m.loc[("b", "a")].share_better == pytest.approx(0.25) and a.n == 4


@pytest.mark.parametrize("name", ["plain", "phys-msd"])
def test_one_step_predicts_each_target_from_the_true_states_before_it(name):
    from models.gru import GRU, GRUConfig
    from models.warp_eval import one_step

    context = 12
    warp = small(**VARIANTS[name])
    x = inputs(warp, batch=5, T=40)
    for model in (warp, GRU(GRUConfig(d_in=2, hidden=8)).double().eval()):
        got = one_step(model, x, context, batch_size=2)  # batches of 2: the split must not matter
        with torch.no_grad():  # oracle: run each prefix x[:, :t] and keep its last prediction
            want = torch.stack([model(x[:, :t]).mean[:, -1] for t in range(context, 40)], 1)
        assert got.shape == (5, 40 - context, 2)
        torch.testing.assert_close(got, want, atol=1e-9, rtol=1e-7)


def test_the_euler_floor_is_the_formula_with_the_true_parameters():
    from models.warp_eval import euler_true_params
    from workbench.tasks import dynamics as dy

    task = dy.DynamicsConfig(system="msd")
    got = euler_true_params(task, n=6, seed=[9, 1])
    # oracle: the Euler map is linear, s_{j+1} = M s_j, so the j-th forecast is M^j applied to the last context state
    trajs = dy.sample(task, 6, np.random.default_rng([9, 1]))
    free, one = [], []
    for t in trajs:
        m, c, k, h = t.params["m"], t.params["c"], t.params["k"], task.dt
        M = np.array([[1.0, h], [-h * k / m, 1.0 - h * c / m]])
        x = np.asarray(t.states, dtype=np.float64)
        H = task.length - task.context
        pred = np.stack([np.linalg.matrix_power(M, j) @ x[task.context - 1] for j in range(1, H + 1)])
        free.append(((pred - x[task.context:]) ** 2).mean())
        one.append(((x[task.context - 1:-1] @ M.T - x[task.context:]) ** 2).mean())
    assert got["forecast_mse_x1e-2"] == pytest.approx(100 * np.mean(free), rel=1e-9)
    assert got["one_step_x1e-2"] == pytest.approx(100 * np.mean(one), rel=1e-9)
    assert got["one_step_x1e-2"] < got["forecast_mse_x1e-2"]  # errors compound when the formula runs free
    with pytest.raises(ValueError, match="not 'lv'"):
        euler_true_params(dy.DynamicsConfig(system="lv"), n=2)
