import numpy as np
import pytest
import torch

import models
from models.gain import (GAIN_SETS, GainCircuit, GainConfig, UnstableCircuitError, analytic_gains, gradient_gains,
                         optimise_gains)
from models.gain_experiment import patched_tuning, peak_orientation, run, tuning_curves
from workbench.hooks import UnknownHookError, stack
from workbench.tasks import orientation as ori

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def model():
    return GainCircuit(GainConfig()).eval()


@pytest.fixture(scope="module")
def result(model):
    return run(model)


def stimuli(k=180):
    return torch.tensor(ori.grid(k), dtype=torch.float64)


# ------------------------------------------------------------ dynamics and hooks
@pytest.mark.parametrize("gains", GAIN_SETS)
def test_steady_state_matches_long_integration(model, gains):
    s = stimuli(60)
    steady = model(s, gains=gains)
    g = model.gain_set(gains)
    # r* solves r = G (f + W r)
    f = model.feedforward(s)
    assert torch.allclose(steady, g * (f + steady @ model.W.T), atol=1e-12)
    long = model(s, gains=gains, steps=model.cfg.max_steps)
    assert torch.allclose(long, steady, rtol=1e-5, atol=1e-6)
    short = model(s, gains=gains, steps=10)
    assert (short - steady).abs().max() > 0.1  # 10 steps are far from converged: the test can fail


def test_euler_follows_the_linear_ode():
    """With a small dt the Euler rates match the exact solution r(t) = r* + e^{At}(r0 - r*)."""
    small = GainCircuit(GainConfig(dt=0.5, max_steps=200))  # dt/tau = 0.05, 200 steps = 10 tau
    s = stimuli(12)
    g = small.gains_uniform
    A = (g[:, None] * small.W - torch.eye(small.n, dtype=torch.float64)) / small.cfg.tau
    steady = small(s, gains=g)
    exact = steady - (torch.linalg.matrix_exp(A * 200 * small.cfg.dt) @ steady.T).T  # r0 = 0
    euler = small(s, gains=g, steps=200)
    assert (euler - exact).abs().max() / exact.abs().max() < 0.02


def test_every_step_and_site_is_hooked(model):
    s = stimuli(8)
    out, cache = model.run_with_cache(s, steps=5)
    for name in ("hook_feedforward", "hook_gains"):
        assert cache[name].shape == (8, model.n)
    for t in range(5):
        for site in ("hook_recurrent_drive", "hook_input", "hook_rates"):
            assert f"time.{t}.{site}" in cache
    assert "time.5.hook_rates" not in cache and "steady.hook_rates" not in cache
    rates = stack(cache, "hook_rates", loop="time")
    assert rates.shape == (5, 8, model.n) and torch.equal(rates[-1], out)
    # the recurrent drive at step t is W r(t dt), the rates of the previous step
    assert torch.allclose(cache["time.3.hook_recurrent_drive"], rates[2] @ model.W.T)
    out, cache = model.run_with_cache(s)
    assert torch.equal(cache["steady.hook_rates"], out) and "time.0.hook_rates" not in cache
    assert model.loop_sizes == {"time": model.cfg.max_steps}
    with pytest.raises(UnknownHookError, match="hook_rates"):
        model.run_with_hooks(s, fwd_hooks=[("time.0.hook_rate", lambda x, hook: x)])
    with pytest.raises(ValueError, match="steps=401 is out of range"):
        model(s, steps=401)


def test_patching_recurrent_drive_and_rates(model):
    s = stimuli(6)
    zero = lambda x, hook: torch.zeros_like(x)  # noqa: E731
    # without the recurrent drive the steady state is the feedforward response G f
    out = model.run_with_hooks(s, fwd_hooks=[("steady.hook_recurrent_drive", zero)])
    assert torch.allclose(out, model.gains * model.feedforward(s))
    # zeroing the rates at step 2 restarts the dynamics: step 3 sees no recurrent drive
    _, cache = model.run_with_cache(s, steps=4)
    with model.hooks(fwd_hooks=[("time.2.hook_rates", zero)]):
        _, patched = model.run_with_cache(s, steps=4)
    assert torch.equal(cache["time.1.hook_rates"], patched["time.1.hook_rates"])
    assert torch.count_nonzero(patched["time.3.hook_recurrent_drive"]) == 0
    assert not torch.allclose(cache["time.3.hook_rates"], patched["time.3.hook_rates"])


def test_patching_gains_of_a_subpopulation_moves_tuning_curves(model):
    """Halve the gains of neurons tuned to -30..-10 deg: their neighbours' peaks move away from them."""
    pref = model.preferred.numpy()
    group = (pref >= -30) & (pref <= -10)
    s = ori.grid(model.cfg.grid)
    clean = tuning_curves(model, "uniform")
    patched = patched_tuning(model, group, 0.5)
    # the hook is the same as running with the scaled gains
    g = model.gains_uniform.clone()
    g[torch.as_tensor(group)] *= 0.5
    assert np.allclose(patched, tuning_curves(model, g))
    shift = ori.circular_distance(peak_orientation(patched, s), peak_orientation(clean, s))
    right, left = (pref > -10) & (pref <= 10), (pref < -30) & (pref >= -50)
    assert (shift[right] > 0.2).all() and (shift[left] < -0.2).all()  # repelled on both sides
    assert (patched.max(0)[group] < clean.max(0)[group]).all()
    # patching never edits the stored gain set
    assert torch.equal(model.gains_uniform, GainCircuit(GainConfig()).gains_uniform)


# --------------------------------------------------------------------- stability
def test_unstable_weights_are_rejected_with_a_clear_error():
    # strong narrow excitation on top of balanced inhibition: the optimal gains cannot be stable
    with pytest.raises(UnstableCircuitError, match="optimal gains for 'uniform' make the circuit unstable"):
        GainCircuit(GainConfig(w_exc=40.0, w_exc_kappa=4.0, w_inh=8.0))
    circuit = GainCircuit(GainConfig())
    circuit.W.mul_(3.0)  # stronger recurrence under the same gains
    with pytest.raises(UnstableCircuitError, match=r"spectral radius of G W is \d\.\d+ >= 1.*w_exc, w_inh"):
        circuit(stimuli(4))


def test_unstable_or_negative_gains_are_rejected(model):
    s = stimuli(4)
    with pytest.raises(UnstableCircuitError, match=r"spectral radius of G W is \d+\.\d+ >= 1.*lower the gains"):
        model(s, gains=torch.full((model.n,), 2.0))
    with pytest.raises(UnstableCircuitError):  # also in the dynamics, and when a hook sets the gains
        model.run_with_hooks(s, steps=3, fwd_hooks=[("hook_gains", lambda g, hook: g * 3.0)])
    with pytest.raises(ValueError, match="finite and >= 0; neuron 5"):
        g = model.gains_uniform.clone()
        g[5] = -0.1
        model(s, gains=g)
    with pytest.raises(ValueError, match=r"shape \[n\] or \[batch, n\] with n=36"):
        model(s, gains=torch.ones(5))
    with pytest.raises(ValueError, match="do not match 4 stimuli"):
        model(s, gains=model.gains_uniform.expand(3, -1))
    # per-stimulus gains: each row is checked on its own
    rows = model.gains_uniform.expand(4, -1).clone()
    rows[2] *= 3.0
    with pytest.raises(UnstableCircuitError):
        model(s, gains=rows)


def test_analytic_optimum_needs_positive_net_drive():
    with pytest.raises(ValueError, match="no optimum with positive gains.*raise alpha or lower w_inh"):
        GainCircuit(GainConfig(w_inh=20.0))
    with pytest.raises(ValueError, match="dt=20.0 > tau=10.0"):
        GainConfig(dt=20.0)
    with pytest.raises(ValueError, match="biased=.*character 7: unknown key 'adaptor'"):
        GainConfig(biased="biased adaptor=0")


# ------------------------------------------------------------------ gain solvers
@pytest.mark.parametrize("name", GAIN_SETS)
def test_analytic_and_gradient_gains_agree(model, name):
    dist = model.cfg.distribution(name)
    exact = analytic_gains(model, dist)
    # starts from constant gains, not from the closed form; stops at max |dL/dlog g| < 1e-6, ten times
    # the float64 floor of this loss (about 1e-7, where the descent can stall), which leaves the
    # gains within about 1e-6 of the closed form
    res = gradient_gains(model, dist, tol=1e-6)
    assert res.converged and res.iterations > 5
    assert torch.allclose(res.gains, exact, rtol=1e-5)
    # the optimum equalises the mean responses at 1/alpha (homeostasis)
    s, p = model.expectation_grid(dist)
    assert torch.allclose(p @ model(s, gains=exact), torch.full((model.n,), 1 / model.cfg.alpha, dtype=torch.float64), rtol=1e-9)
    # and is a minimum: random stable perturbations raise the objective
    gen = torch.Generator().manual_seed(0)
    base = float(model.objective(exact, dist))
    for _ in range(5):
        g = exact * torch.exp(0.05 * torch.randn(model.n, generator=gen, dtype=torch.float64))
        assert float(model.objective(g, dist)) > base


def test_energy_term_has_no_closed_form_and_gradient_descent_solves_it():
    circuit = GainCircuit(GainConfig(energy=0.5))
    dist = circuit.cfg.distribution("biased")
    with pytest.raises(ValueError, match="no closed form"):
        analytic_gains(circuit, dist)
    summary = optimise_gains(circuit, "gradient")
    assert all(v["converged"] for v in summary.values())
    energy_free = analytic_gains(circuit, dist, closed_form=True)
    assert float(circuit.objective(circuit.gains_biased, dist)) < float(circuit.objective(energy_free, dist))
    effects = run(circuit).effects
    assert effects.loc[effects.expected != "", "reproduced"].all()


# -------------------------------------------------------- the adaptation effects
def test_gains_fall_near_the_adapter(result):
    n = result.neurons
    assert np.allclose(n.gain_before, n.gain_before[0])  # uniform p(s): one gain for all
    at, orth = n.distance.abs().idxmin(), n.distance.abs().idxmax()
    assert n.gain_after[at] < 0.9 * n.gain_before[at] and n.gain_after[orth] > n.gain_before[orth]
    by_distance = n.assign(d=n.distance.abs()).groupby("d").gain_after.mean()
    assert (np.diff(by_distance.values) >= -1e-12).all()  # lowest at the adapter, rising away from it


def test_effect_1_maxima_and_minima(result):
    n = result.neurons
    at, orth = n.distance.abs().idxmin(), n.distance.abs().idxmax()
    assert n.max_after[at] < n.max_before[at] and n.min_after[at] < n.min_before[at]
    assert n.max_after[orth] > n.max_before[orth] and n.min_after[orth] > n.min_before[orth]
    assert (n[["min_before", "min_after"]] >= 0).all().all()  # responses stay non-negative


def test_effect_2_peaks_shift_away_from_the_adapter(result):
    n = result.neurons
    flank = (n.distance.abs() > 0) & (n.distance.abs() < 90)
    assert (n.shift_away[flank] > 0).all()
    assert n.shift_away.max() > 2.0  # degrees
    assert np.allclose(n.shift_away[~flank], 0, atol=1e-9)  # at and orthogonal to the adapter: symmetric


def test_effect_2_repulsion_needs_the_recurrence():
    """Without recurrent weights a gain change only scales a tuning curve: no shift at all."""
    feedforward = GainCircuit(GainConfig(w_exc=0.0, w_inh=0.0))
    n = run(feedforward).neurons
    assert (n.gain_after != n.gain_before).any()
    assert np.abs(n.shift_away).max() < 1e-9


def test_effect_3_decorrelation_near_the_adapter(result):
    pairs = result.pairs()
    near = pairs[pairs.group == "near"]
    assert near.corr_after.mean() < near.corr_before.mean() - 0.05
    assert (near.corr_after < near.corr_before + 1e-12).mean() > 0.9
    # the biased ensemble raises near-pair correlations above the uniform-ensemble reference
    assert near.corr_before.mean() > near.corr_reference.mean()


def test_all_expected_effects_reproduced_and_fast(result):
    assert result.reproduced()
    assert set(result.effects.effect) == {"maxima/minima", "repulsion", "decorrelation", "homeostasis"}


def test_other_adapters_repel_too(model):
    dist = ori.biased(adapter=40.0, weight=0.3, width=5.0)
    res = run(model, dist, solver="analytic")
    assert res.reproduced()
    with pytest.raises(ValueError, match="solver='stored'"):
        run(model, dist, solver="stored")
    with pytest.raises(ValueError, match="needs a biased distribution"):
        run(model, ori.UNIFORM, solver="analytic")


# --------------------------------------------------------------------- the zoo
def test_shipped_checkpoint_loads_with_both_gain_sets():
    circuit = models.load("gain-v1")
    assert isinstance(circuit, GainCircuit)
    for name in GAIN_SETS:
        assert torch.allclose(circuit.gain_set(name), analytic_gains(circuit, circuit.cfg.distribution(name)), rtol=1e-10)
    metrics = models.metrics("gain-v1")
    assert metrics["evaluation"]["all_reproduced"]
    fresh = run(circuit).effects
    stored = {r["measure"]: r["change"] for r in metrics["evaluation"]["effects"]}
    assert np.allclose(fresh.change, [stored[m] for m in fresh.measure])


# ------------------------------------------------------------------- figures
def test_figures_show_the_measured_data(result):
    from apps.views import gain as views

    figs = views.all_figures(result)
    assert set(figs) == {"effects", "tuning", "shift", "maxmin", "correlations", "gains"}
    assert len(figs["tuning"].data) == 14  # seven neurons, before and after
    shift = figs["shift"].data[0]
    assert np.allclose(sorted(shift.x), sorted(result.neurons.distance))
    heat = [t for t in figs["correlations"].data if t.type == "heatmap"]
    assert np.allclose(heat[0].z, result.corr_before) and np.allclose(heat[2].z, result.corr_after - result.corr_before)
    assert np.allclose(figs["gains"].data[1].y, result.neurons.sort_values("preferred").gain_after)
    bars = figs["effects"].data[0]
    assert len(bars.x) == (result.effects.expected != "").sum()
