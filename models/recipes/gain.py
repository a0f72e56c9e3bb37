"""The gain-circuit recipe: the adaptation experiment's circuit with both gain sets (``workbench train gain``).

The gains are not learned by the shared trainer: the objective (``models.gain``; ``--objective
fidelity``, the default, or ``homeostatic``, the ablation) is a deterministic expectation over
p(s), so ``fit`` solves it (the closed form where there is one, else gradient descent; ``--solver``
forces one), checks every set by a second gradient descent from another start (against the
closed form where there is one) and saves the circuit with both gain sets; the run then
evaluates the saved checkpoint like every other family's.
"""

from __future__ import annotations

import time
from pathlib import Path

import pandas as pd

from models.gain import GAIN_SETS, GainCircuit, GainConfig
from models.gain_solvers import analytic_gains, gradient_gains, has_closed_form, optimise_gains
from models.gain_experiment import run as run_experiment, sampled_correlations
from models.recipes import Setup, check_writable, from_args
from workbench import checkpoints
from workbench.train import hardware

# One circuit; its variants are settings of GainConfig's fields (``--objective``, ``--alpha``, ``--biased`` ...).
PRESETS: dict[str, dict] = {}


def build(args) -> Setup:
    cfg = from_args(GainConfig, args)
    refuse_existing(args.out, args.overwrite)
    started = time.time()
    return Setup(args, GainCircuit(cfg, solve=False), info={"started": started})


def refuse_existing(out: str | Path, overwrite: bool) -> None:
    """Never replace a checkpoint by accident: one already in ``out`` needs ``--overwrite``."""
    check_writable(out)
    found = [n for n in (checkpoints.CONFIG, checkpoints.WEIGHTS, checkpoints.METRICS, checkpoints.PENDING)
             if (Path(out) / n).exists()]
    if found and not overwrite:
        raise FileExistsError(f"{out} already holds a checkpoint ({', '.join(found)}); pass --overwrite to replace "
                              "it, or choose another --out")


def fit(setup: Setup, train) -> dict:
    """Solve both gain sets, check each by a second descent from the other set's gains, save the circuit."""
    model = setup.model
    solved = optimise_gains(model, setup.args.solver or "auto")
    # Every set is solved again by gradient descent through the recurrent steady state, started from the other
    # set's (unequal, for a biased set) gains, and compared with the closed form where there is one, else with
    # the stored gains: a check of the closed form, of the descent, and that the optimum does not hang on the start.
    checks = {}
    for name, other in zip(GAIN_SETS, reversed(GAIN_SETS)):
        dist = model.cfg.distribution(name)
        t1 = time.time()
        res = gradient_gains(model, dist, init=model.gain_set(other))
        closed = has_closed_form(model, dist)
        ref = analytic_gains(model, dist) if closed else model.gain_set(name)
        checks[name] = {"reference": "closed form" if closed else f"stored gains ({solved[name]['solver']})",
                        "start": f"the {other} set", "max_rel_diff": float(((res.gains - ref).abs() / ref).max()),
                        "iterations": res.iterations, "grad_norm": res.grad_norm, "converged": res.converged,
                        "wall_s": round(time.time() - t1, 2)}
    checkpoints.save(train.out, model)
    setup.info["solver"] = {"used": setup.args.solver or "auto", "sets": solved, "checks": checks}
    return {"train_wall_s": round(time.time() - setup.info["started"], 2), "hardware": hardware(), "seed": train.seed}


def evaluate(model: GainCircuit, setup: Setup) -> dict:
    cfg, args = model.cfg, setup.args
    result = run_experiment(model)
    sampled = sampled_correlations(model, result, args.n_samples, args.seed)
    return {
        "evaluation": {"effects": result.effects.to_dict("records"), "sampled_check": sampled,
                       "objective": cfg.objective,
                       "data": f"tuning curves on a {cfg.grid}-orientation grid; expectations over p(s) by exact "
                               f"quadrature; uniform: {cfg.uniform!r}; biased: {cfg.biased!r}",
                       "all_reproduced": result.reproduced()},
        "solver": setup.info["solver"],
        "neurons": result.neurons.round(6).to_dict("records"),
    }


def headline(parts: dict, setup: Setup) -> dict:
    change = {r["measure"]: r["change"] for r in parts["evaluation"]["effects"]}
    pick = lambda key: float(next(v for m, v in change.items() if m.startswith(key)))  # noqa: E731
    return {
        "max_change_near": pick("mean response maximum, neurons within"),
        "peak_shift_away_deg": pick("mean peak shift"),
        "corr_change_near": pick("mean correlation, pairs within"),
    }


def report(metrics: dict, setup: Setup) -> str:
    lines = [f"objective: {metrics['evaluation']['objective']}", effects_table(pd.DataFrame(metrics["evaluation"]["effects"]))]
    for name, c in metrics["solver"]["checks"].items():
        lines.append(f"{name}: second gradient descent (from {c['start']}) vs {c['reference']}: max relative "
                     f"difference {c['max_rel_diff']:.1e} ({c['iterations']} iterations)")
    lines.append(f"wrote {setup.args.out} in {metrics['train']['train_wall_s']:.1f} s")
    return "\n".join(lines)


def effects_table(effects: pd.DataFrame) -> str:
    """The experiment's effects as printed text, 'reproduced' as yes / NO where a direction is expected."""
    table = effects.copy()
    table["reproduced"] = [("yes" if ok else "NO") if exp else "" for ok, exp in zip(table.reproduced, table.expected)]
    return table.to_string(index=False, float_format=lambda x: f"{x:.4f}")


def card(folder: Path, stored: dict, metrics: dict, what: str | None) -> dict:
    config = stored["config"]
    h, ev, tr = metrics["headline"], metrics["evaluation"], metrics["train"]
    rows = [{"effect": r["effect"], "measure": r["measure"], "before (uniform gains)": r["before"],
             "after (adapted gains)": r["after"], "change": r["change"],
             "expected": r["expected"] or "(reported)",
             "reproduced": ("yes" if r["reproduced"] else "NO") if r["expected"] else ""}
            for r in ev["effects"]]
    sets, checks = metrics["solver"]["sets"], metrics["solver"]["checks"]
    solver_text = "; ".join(
        f"{k}: {v['solver']}" + (f" ({v['iterations']} iterations, final max |dL/dlog g| {v['grad_norm']:.1e})"
                                 if v["solver"] == "gradient" else "") for k, v in sets.items())
    check_text = "; ".join(f"{k}: descent from {c['start']} vs {c['reference']}, max relative difference "
                           f"{c['max_rel_diff']:.1e} after {c['iterations']} iterations" for k, v in checks.items()
                           for c in [v])
    s = ev["sampled_check"]
    objective = config["objective"]
    what_text = what or (_WHAT.format(**config) + (_FIDELITY if objective == "fidelity" else _HOMEOSTATIC).format(**config))
    return dict(
        title=f"Gain-controlled recurrent circuit: {folder.name}",
        headline=(f"gain circuit (n={config['n_neurons']}, {objective} objective): adaptation by gains alone - "
                  f"near-adapter maxima {h['max_change_near']:+.2f}, peak shift {h['peak_shift_away_deg']:+.2f} deg "
                  f"away, near-pair correlation {h['corr_change_near']:+.3f}"),
        what=what_text + (_ENERGY.format(**config) if config["energy"] else "")
        + "\n\nConfig: " + ", ".join(f"{k}={v}" for k, v in config.items()),
        results=rows,
        results_note=(f"Measured on the saved checkpoint: {ev['data']}. 'before' = gains optimised for the uniform "
                      "distribution, 'after' = gains optimised for the biased one; same W, same stimuli. Decoding "
                      f"error and activity use the config's noise (noise_in={config['noise_in']}, "
                      f"noise_out={config['noise_out']}) whatever the objective. "
                      f"Sampled check of the decorrelation on {s['n']} fresh stimuli from the biased distribution "
                      f"(seed {s['seed']}, adapter fraction {s['adapter_fraction']:.3f}): near-pair correlation "
                      f"{s['near_pairs_before']:.3f} -> {s['near_pairs_after']:.3f}.\n\n"
                      f"Gain solvers: {solver_text}. Checks: {check_text}. Build, solve, checks and save took "
                      f"{tr['train_wall_s']:.1f} s."),
        notes=_NOTES[objective],
    )


_WHAT = """\
A population of {n_neurons} orientation-tuned neurons (von Mises feedforward tuning, kappa={kappa}), fixed
recurrent weights W (local excitation w_exc={w_exc}, broad inhibition w_inh={w_inh}) and one gain per neuron.
Steady state r* = A(g) f(s), A = (I - G W)^(-1) G; dynamics tau dr/dt = -r + G (f(s) + W r). The checkpoint holds W
and two gain sets: optimised for the uniform orientation distribution ({uniform!r}) and for the biased one
({biased!r}). No weight is learned: W is fixed by construction, the gains are the optimum of the objective below.

"""

_FIDELITY = """\
Objective: coding fidelity against activity (our formulation of the paper's trade-off; its full text was not
available to us). Noisy responses r = A(g) (f(s) + xi) + eta with input noise xi ~ N(0, {noise_in}^2 I) and output
noise eta ~ N(0, {noise_out}^2 I); the stimulus on the circle, x(s) = (cos 2s, sin 2s); the error of the best affine
decoder of x from r under p(s), E(g) = tr[C_xx - C_xr (C_rr + N(g))^(-1) C_rx] with N(g) = noise_in^2 A A^T +
noise_out^2 I; and L(g) = E(g) + alpha * E_p[sum_i r*_i(s)^2] with alpha={alpha}.

Closed form for the uniform set: with a uniform p(s) on a grid that is a multiple of n, C_ff, W and A(g 1) are
circulant and x lives in Fourier mode 1, so for equal gains L(g) = tr C_xx - ||C_xf||^2 a_1^2 / (a_1^2 (lambda_1 +
noise_in^2) + noise_out^2) + alpha (sum_k a_k^2 lambda_k + n mbar^2 a_0^2), a_k = g / (1 - g w_k); its minimiser is a
stationary point of L over all gains by the symmetry. The biased set has no closed form: gradient descent (BFGS on
log g through the recurrent steady state)."""

_HOMEOSTATIC = """\
Objective: the homeostatic ablation (ours; it depends on mean rates only, not on the tuning):
L(g) = alpha * sum_i rbar_i - sum_i log rbar_i, with rbar = E_p[r*(s; g)] and alpha={alpha}. A flat response with
the same mean rates scores the same.

Derivation of the analytic gains: r* is linear in f, so rbar = G (m + W rbar) with m = E_p[f(s)]. On stable gains
with positive net drive the map g -> rbar is one-to-one, with inverse g_i = rbar_i / (m_i + (W rbar)_i). L is
separable and strictly convex in rbar, dL/drbar_i = alpha - 1/rbar_i, so rbar_i = 1/alpha for all i (mean responses
equalised) and g_i* = 1 / (alpha m_i + (W 1)_i). Since d rbar/d g = (I - G W)^(-1) diag(m + W rbar) is invertible,
it is the only stationary point of L(g); gradient descent on log g through the recurrent steady state finds it."""

_ENERGY = """

This checkpoint adds a quadratic activity cost, energy/2 * E_p[sum_i r*_i(s)^2] with energy={energy}, to L(g).
That objective has no closed form; its gains were found by gradient descent on log g."""

_COMMON_NOTES = """
- Repulsion needs the recurrence: without W a gain change only scales a tuning curve. Here a flank neuron's
  neighbours on the adapter side turned their gains down, so stimuli on that side recruit less recurrent
  excitation and the peak moves away.
- Decorrelation is specific to pairs tuned near the adapter; pairs far from it become slightly more correlated
  (their gains, hence their recurrent amplification, rose), and the all-pair mean barely moves. Both are listed.
- Correlations are signal correlations of the noise-free steady-state responses across the biased ensemble; the
  noise of the fidelity objective is independent of the stimulus and is not in them. Synthetic population only:
  the V1 data set (Benucci et al. 2013) is not available offline, so there is no quantitative fit to data.
- The circuit is linear; responses stay non-negative for the shipped parameters (checked by a test), not in general."""

_NOTES = {
    "fidelity": """\
- Under the biased p(s) the neurons the adapter drives are active more often, so the activity cost of their gain
  rises and their gains fall; the fidelity term keeps them from falling to zero and moves gain to the neurons far
  from the adapter. The coding rows show what that does, on average over p(s), to decoding error and activity.
- The mean rates become more equal (the homeostasis row) without being constrained to: homeostasis is partial
  and emergent here, exact only in the homeostatic ablation.""" + _COMMON_NOTES,
    "homeostatic": """\
- This is the ablation: the objective sees mean rates only. Neurons tuned near an over-represented adapter see a
  larger mean drive m_i, so their optimal gain falls; far neurons' gains rise slightly. Every effect in the table
  comes from these gain changes propagated through W, but not from a coding trade-off.""" + _COMMON_NOTES,
}
