"""The gain-circuit recipe: the adaptation experiment's circuit with both gain sets (``workbench train gain``).

The gains are not learned by the shared trainer: the objective is a deterministic expectation
over p(s) with a closed-form optimum (``models.gain``), so ``fit`` solves it exactly (or by
deterministic gradient descent with ``--solver gradient``), checks the closed form against
gradient descent and saves the circuit with both gain sets; the run then evaluates the saved
checkpoint like every other family's.
"""

from __future__ import annotations

import time
from pathlib import Path

import pandas as pd

from models.gain import GAIN_SETS, GainCircuit, GainConfig, analytic_gains, gradient_gains, optimise_gains
from models.gain_experiment import run as run_experiment, sampled_correlations
from models.recipes import Setup, check_writable, from_args
from workbench import checkpoints
from workbench.train import hardware

# One circuit; its variants are settings of GainConfig's fields (``--energy``, ``--biased`` ...).
PRESETS: dict[str, dict] = {}


def build(args) -> Setup:
    cfg = from_args(GainConfig, args)
    refuse_existing(args.out, args.overwrite)
    started = time.time()
    return Setup(args, GainCircuit(cfg), info={"started": started})


def refuse_existing(out: str | Path, overwrite: bool) -> None:
    """Never replace a checkpoint by accident: one already in ``out`` needs ``--overwrite``."""
    check_writable(out)
    found = [n for n in (checkpoints.CONFIG, checkpoints.WEIGHTS, checkpoints.METRICS, checkpoints.PENDING)
             if (Path(out) / n).exists()]
    if found and not overwrite:
        raise FileExistsError(f"{out} already holds a checkpoint ({', '.join(found)}); pass --overwrite to replace "
                              "it, or choose another --out")


def fit(setup: Setup, train) -> dict:
    """Solve both gain sets, check the closed form against gradient descent, save the circuit."""
    model, cfg = setup.model, setup.model.cfg
    solver = setup.args.solver or ("gradient" if cfg.energy else "analytic")
    solved = optimise_gains(model, solver)
    # The closed form and gradient descent through the recurrent steady state must agree.
    agreement = {}
    if cfg.energy == 0:
        for name in GAIN_SETS:
            dist = cfg.distribution(name)
            t1 = time.time()
            res = gradient_gains(model, dist)
            exact = analytic_gains(model, dist)
            agreement[name] = {"max_rel_diff": float(((res.gains - exact).abs() / exact).max()),
                               "iterations": res.iterations, "grad_norm": res.grad_norm,
                               "wall_s": round(time.time() - t1, 2)}
    checkpoints.save(train.out, model)
    setup.info["solver"] = {"used": solver, "sets": solved, "gradient_vs_analytic": agreement}
    return {"train_wall_s": round(time.time() - setup.info["started"], 2), "hardware": hardware(), "seed": train.seed}


def evaluate(model: GainCircuit, setup: Setup) -> dict:
    cfg, args = model.cfg, setup.args
    result = run_experiment(model)
    sampled = sampled_correlations(model, result, args.n_samples, args.seed)
    return {
        "evaluation": {"effects": result.effects.to_dict("records"), "sampled_check": sampled,
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
    lines = [effects_table(pd.DataFrame(metrics["evaluation"]["effects"]))]
    agreement = metrics["solver"]["gradient_vs_analytic"]
    if agreement:
        worst = max(a["max_rel_diff"] for a in agreement.values())
        lines.append(f"\nanalytic vs gradient-descent gains: max relative difference {worst:.2e}")
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
    agree = metrics["solver"]["gradient_vs_analytic"]
    agree_text = "; ".join(f"{k}: max relative difference {v['max_rel_diff']:.1e} after {v['iterations']} "
                           f"iterations" for k, v in agree.items())
    if not agree:
        sets = metrics["solver"]["sets"]
        agree_text = "gradient descent only (energy > 0 has no closed form); " + "; ".join(
            f"{k}: {v['iterations']} iterations, final max |dL/dlog g| {v['grad_norm']:.1e}" for k, v in sets.items())
    s = ev["sampled_check"]
    return dict(
        title=f"Gain-controlled recurrent circuit: {folder.name}",
        headline=(f"gain circuit (n={config['n_neurons']}): adaptation by gains alone - near-adapter maxima "
                  f"{h['max_change_near']:+.2f}, peak shift {h['peak_shift_away_deg']:+.2f} deg away, near-pair "
                  f"correlation {h['corr_change_near']:+.3f}"),
        what=(what or _WHAT.format(**config)) + (_ENERGY.format(**config) if config["energy"] else "")
        + "\n\nConfig: " + ", ".join(f"{k}={v}" for k, v in config.items()),
        results=rows,
        results_note=(f"Measured on the saved checkpoint: {ev['data']}. 'before' = gains optimised for the uniform "
                      "distribution, 'after' = gains optimised for the biased one; same W, same stimuli. "
                      f"Sampled check of the decorrelation on {s['n']} fresh stimuli from the biased distribution "
                      f"(seed {s['seed']}, adapter fraction {s['adapter_fraction']:.3f}): near-pair correlation "
                      f"{s['near_pairs_before']:.3f} -> {s['near_pairs_after']:.3f}.\n\n"
                      f"Gain solvers: {agree_text}. Build, solve, gradient check and save took "
                      f"{tr['train_wall_s']:.1f} s."),
        notes=_NOTES,
    )


_WHAT = """\
A population of {n_neurons} orientation-tuned neurons (von Mises feedforward tuning, kappa={kappa}), fixed
recurrent weights W (local excitation w_exc={w_exc}, broad inhibition w_inh={w_inh}) and one gain per neuron.
Steady state r* = (I - G W)^(-1) G f(s); dynamics tau dr/dt = -r + G (f(s) + W r). The checkpoint holds W and two
gain sets: optimised for the uniform orientation distribution ({uniform!r}) and for the biased one ({biased!r}).
No weight is learned: W is fixed by construction, the gains are the optimum of the objective below.

Objective (our formulation; the paper's full text was not available to us):
L(g) = alpha * sum_i rbar_i - sum_i log rbar_i, with rbar = E_p[r*(s; g)] and alpha={alpha}. The first term is the
total activity averaged over p(s); log rbar_i is the largest entropy (up to a constant) a non-negative response
with mean rbar_i can have, a bound on what neuron i can convey about s at that activity.

Derivation of the analytic gains: r* is linear in f, so rbar = G (m + W rbar) with m = E_p[f(s)]. On stable gains
with positive net drive the map g -> rbar is one-to-one, with inverse g_i = rbar_i / (m_i + (W rbar)_i). L is
separable and strictly convex in rbar, dL/drbar_i = alpha - 1/rbar_i, so rbar_i = 1/alpha for all i (mean responses
equalised) and g_i* = 1 / (alpha m_i + (W 1)_i). Since d rbar/d g = (I - G W)^(-1) diag(m + W rbar) is invertible,
it is the only stationary point of L(g); gradient descent on log g through the recurrent steady state finds it."""

_ENERGY = """

This checkpoint adds a quadratic activity cost, energy/2 * E_p[sum_i r*_i(s)^2] with energy={energy}, to L(g).
That objective has no closed form; its gains were found by gradient descent on log g (backtracking steps)."""

_NOTES = """\
- Neurons tuned near an over-represented adapter see a larger mean drive m_i, so their optimal gain falls;
  far neurons' gains rise slightly. Every effect in the table comes from these gain changes propagated through W.
- Repulsion needs the recurrence: without W a gain change only scales a tuning curve. Here a flank neuron's
  neighbours on the adapter side turned their gains down, so stimuli on that side recruit less recurrent
  excitation and the peak moves away.
- Decorrelation is specific to pairs tuned near the adapter; pairs far from it become slightly more correlated
  (their gains, hence their recurrent amplification, rose), and the all-pair mean barely moves. Both are listed.
- Correlations are signal correlations of noise-free steady-state responses across the biased ensemble; the model
  has no noise, so noise correlations are not modelled. Synthetic population only: the V1 data set (Benucci et al.
  2013) is not available offline, so there is no quantitative fit to data.
- The circuit is linear; responses stay non-negative for the shipped parameters (checked by a test), not in general."""
