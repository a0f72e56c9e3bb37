import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from workbench.tasks import dynamics as dy

SYSTEMS = list(dy.SYSTEMS)


@pytest.mark.parametrize("system", SYSTEMS)
def test_integrator_matches_the_exact_solver(system):
    cfg = dy.DynamicsConfig(system=system)
    for traj in dy.sample(cfg, 6, seed=3):
        exact = dy.solve(system, traj.params, traj.initial, traj.times)
        assert exact.shape == traj.states.shape == (cfg.length, cfg.d_state)
        np.testing.assert_allclose(traj.states, exact, atol=1e-6)


@pytest.mark.parametrize("system", SYSTEMS)
def test_parameters_are_metadata_within_their_ranges(system):
    cfg = dy.DynamicsConfig(system=system)
    trajs = dy.sample(cfg, 50, seed=0)
    spec = dy.SYSTEMS[system]
    P = dy.param_array(trajs)
    assert P.shape == (50, len(spec.param_names))
    lo, hi = np.array(spec.param_ranges).T
    assert (P >= lo).all() and (P <= hi).all()
    assert (P.std(axis=0) > 0.1 * (hi - lo)).all()  # really random, not a constant
    assert all(list(t.params) == list(spec.param_names) for t in trajs)


def test_same_seed_same_data_and_seeds_differ():
    cfg = dy.DynamicsConfig(system="msd")
    a, b, c = dy.sample(cfg, 5, 7), dy.sample(cfg, 5, 7), dy.sample(cfg, 5, 8)
    assert a == b
    assert a != c


def test_physics_invariants():
    lv = dy.sample(dy.DynamicsConfig(system="lv"), 8, 1)
    for t in lv:  # Lotka-Volterra conserves its first integral
        v = dy.lv_invariant(t.states, t.params)
        assert np.ptp(v) < 1e-6
        assert (t.states > 0).all()
    for t in dy.sample(dy.DynamicsConfig(system="msd"), 8, 1):  # a damped oscillator loses energy
        p = t.params
        energy = 0.5 * p["m"] * t.states[:, 1] ** 2 + 0.5 * p["k"] * t.states[:, 0] ** 2
        assert (np.diff(energy) <= 1e-9).all()
    for t in dy.sample(dy.DynamicsConfig(system="sine"), 8, 1):
        assert t.times[-1] == pytest.approx(1.0)
        assert t.states[0, 0] == pytest.approx(math.sin(t.params["phi"]))


def test_noise_perturbs_observations_only():
    clean = dy.sample(dy.DynamicsConfig(system="msd"), 20, 4)
    noisy = dy.sample(dy.DynamicsConfig(system="msd", noise=0.1), 20, 4)
    assert [t.params for t in clean] == [t.params for t in noisy]
    resid = dy.stack(noisy) - dy.stack(clean)
    assert 0.08 < resid.std() < 0.12


@settings(max_examples=30, deadline=None)
@given(st.sampled_from(SYSTEMS), st.integers(0, 2**32 - 1), st.integers(2, 40))
def test_text_round_trip(system, seed, length):
    cfg = dy.DynamicsConfig(system=system, length=length, context=1)
    for traj in dy.sample(cfg, 2, seed):
        assert dy.parse_trajectory(dy.format_trajectory(traj)) == traj


@pytest.mark.parametrize("edit, message", [
    (lambda s: s.replace("system msd", "system pendulum"), r"line 1, column 8: unknown system 'pendulum'"),
    (lambda s: s.replace("dt ", "dT "), r"line 2, column 1: expected 'dt \.\.\.'"),
    (lambda s: s.replace("params m=", "params mass="), r"line 3, column 8: unknown parameter 'mass'"),
    (lambda s: s.replace(" k=", " c="), r"line 3, .*parameter 'c' given twice"),
    (lambda s: s.replace("states x v", "states x"), r"line 4, column 8: state columns"),
    (lambda s: s.rsplit("\n", 2)[0] + "\n1.0 oops\n", r"line \d+, column 5: 'oops' is not a finite number"),
    (lambda s: s.rsplit("\n", 2)[0] + "\n1.0 2.0 3.0\n", r"line \d+, column 1: 3 values; expected 2"),
    (lambda s: s.rsplit("\n", 2)[0] + "\nnan 1.0\n", r"'nan' is not a finite number"),
    (lambda s: "system msd\n", r"too short"),
])
def test_parse_errors_name_line_column_and_rule(edit, message):
    text = dy.format_trajectory(dy.sample(dy.DynamicsConfig(system="msd", length=5, context=1), 1, 0)[0])
    with pytest.raises(ValueError, match=message):
        dy.parse_trajectory(edit(text))


def test_parse_rejects_too_long_and_bad_dt():
    text = dy.format_trajectory(dy.sample(dy.DynamicsConfig(system="lv", length=6, context=1), 1, 0)[0])
    with pytest.raises(ValueError, match="line 10, column 1: 6 states; at most 5 allowed"):
        dy.parse_trajectory(text, max_length=5)
    with pytest.raises(ValueError, match="line 2, column 4: 'x' is not a finite number"):
        dy.parse_trajectory(text.replace("dt 0.1", "dt x"))


def test_config_validation_names_the_field():
    with pytest.raises(ValueError, match="system='pendulum'; allowed"):
        dy.DynamicsConfig(system="pendulum")
    with pytest.raises(ValueError, match="context=64 must be in 1..length-1=63"):
        dy.DynamicsConfig(system="sine", context=64)
    with pytest.raises(ValueError, match="dt=-1"):
        dy.DynamicsConfig(dt=-1.0)
    cfg = dy.DynamicsConfig(system="sine")
    assert (cfg.length, cfg.context, cfg.d_state) == (64, 16, 1)


def test_forecast_mse_checks_the_horizon():
    truth = np.zeros((3, 10, 2))
    assert dy.forecast_mse(truth, np.ones((3, 6, 2)), context=4) == 1.0
    with pytest.raises(ValueError, match=r"expected \(3, 6, 2\)"):
        dy.forecast_mse(truth, np.ones((3, 5, 2)), context=4)
