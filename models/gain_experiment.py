"""The adaptation experiment on the gain circuit: uniform vs biased orientation statistics.

Gains optimised for a uniform p(s) are the *before* (unadapted) condition; gains optimised
for a biased p(s), the adapter over-represented, are *after*. Only the gains differ; W and
the feedforward tuning are the same. Which objective the gains optimise is the model's
(``cfg.objective``: 'fidelity', or the 'homeostatic' ablation). Three effects are measured
against the uniform condition, as in the V1 experiments (Benucci, Saleem & Carandini 2013):

1. **Response maxima and minima**: per neuron, the largest and smallest steady-state
   response over orientations. Expected: both fall for neurons tuned near the adapter (the
   paper's direction); we also expect, and list, that both rise for neurons tuned far from it.
2. **Tuning-curve repulsion**: the shift of each neuron's tuning-curve peak, signed so that
   positive is away from the adapter. Expected: positive for neurons on the adapter's flanks
   (neurons at the adapter or orthogonal to it cannot shift, by symmetry). In the circuit the
   shift comes from W alone: a neuron's neighbours on the adapter side lowered their gains,
   so stimuli on that side recruit less recurrent excitation.
3. **Decorrelation**: signal correlations between neuron pairs across the stimuli of the
   biased ensemble (weighted by p(s)), before vs after. Expected: lower for pairs tuned near
   the adapter, the neurons the over-represented stimulus drives together. All-pair and
   far-pair means are reported beside it.

Besides: the spread of the mean rates under the biased p(s) (homeostasis: exact for the
homeostatic objective by construction, partial and emergent for the fidelity one), and the
coding terms of both gain sets under the biased p(s): the decoding error, the activity and
the model's own objective (which the adapted gains must lower).

Tuning curves and expectations use the circuit's orientation grid (``GainConfig.grid``),
exact quadrature over p(s); ``sampled_correlations`` repeats effect 3 on stimuli drawn by the
task's sampler.

>>> result = run(models.load("gain-v1"))
>>> result.effects                       # one row per measure: before, after, change, expected sign
>>> result.neurons                       # one row per neuron: gains, max/min, peak shift
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np
import pandas as pd
import torch

from workbench.tasks import orientation as ori

from .gain import GainCircuit
from .gain_solvers import analytic_gains, default_solver, gradient_gains

NEAR_DEG = 30.0  # "tuned near the adapter": |preferred - adapter| <= NEAR_DEG
FAR_DEG = 60.0  # "tuned far from the adapter": |preferred - adapter| >= FAR_DEG


@dataclass
class AdaptationResult:
    neurons: pd.DataFrame  # one row per neuron
    effects: pd.DataFrame  # one row per measure
    tuning: pd.DataFrame  # tidy: condition, neuron, preferred, orientation, response
    corr_before: np.ndarray  # [n, n] under the biased ensemble, uniform-optimised gains
    corr_after: np.ndarray  # [n, n] under the biased ensemble, biased-optimised gains
    corr_reference: np.ndarray  # [n, n] under the uniform ensemble, uniform-optimised gains
    preferred: np.ndarray  # [n] degrees
    adapter: float
    distribution: str  # the biased distribution, text format
    objective: str = "fidelity"  # the objective the gains optimise (the model's cfg.objective)

    def pairs(self) -> pd.DataFrame:
        """Tidy pair table (i < j): preferred orientations, group, correlations."""
        i, j = np.triu_indices(len(self.preferred), 1)
        d = np.abs(ori.circular_distance(self.preferred, self.adapter))
        group = np.where((d[i] <= NEAR_DEG) & (d[j] <= NEAR_DEG), "near",
                         np.where((d[i] >= FAR_DEG) & (d[j] >= FAR_DEG), "far", "mixed"))
        return pd.DataFrame({"i": i, "j": j, "preferred_i": self.preferred[i], "preferred_j": self.preferred[j],
                             "group": group, "corr_reference": self.corr_reference[i, j],
                             "corr_before": self.corr_before[i, j], "corr_after": self.corr_after[i, j]})

    def reproduced(self) -> bool:
        return bool(self.effects.loc[self.effects.expected != "", "reproduced"].all())


# ----------------------------------------------------------------- measures
@torch.no_grad()
def tuning_curves(model: GainCircuit, gains="uniform", orientations: Optional[np.ndarray] = None) -> np.ndarray:
    """Steady-state responses on an orientation grid: [K, n] (K = len(orientations))."""
    s = ori.grid(model.cfg.grid) if orientations is None else orientations
    return model(torch.as_tensor(s, dtype=torch.float64), gains=gains).numpy()


def peak_orientation(curves: np.ndarray, orientations: np.ndarray) -> np.ndarray:
    """Peak of each tuning curve on an evenly spaced periodic grid, parabolic sub-grid refinement: [n]."""
    K = len(orientations)
    step = ori.PERIOD / K
    i = curves.argmax(0)
    cols = np.arange(curves.shape[1])
    a, b, c = curves[(i - 1) % K, cols], curves[i, cols], curves[(i + 1) % K, cols]
    denom = a - 2 * b + c
    offset = np.where(denom < 0, 0.5 * (a - c) / np.where(denom < 0, denom, 1.0), 0.0)
    return ori.wrap(orientations[i] + offset * step)


def correlation(curves: np.ndarray, p: np.ndarray) -> np.ndarray:
    """Correlation between neurons of responses across stimuli weighted by p: [n, n]."""
    x = curves - p @ curves
    cov = (x * p[:, None]).T @ x
    sd = np.sqrt(np.diag(cov))
    return cov / np.outer(sd, sd)


def _mean_pairs(corr: np.ndarray, sel: np.ndarray) -> float:
    i, j = np.triu_indices(len(corr), 1)
    keep = sel[i] & sel[j]
    return float(corr[i, j][keep].mean())


# ------------------------------------------------------------------ the run
def run(model: GainCircuit, biased: Optional[ori.OrientationDistribution] = None, solver: str = "stored") -> AdaptationResult:
    """Measure the three effects: before = the uniform gain set, after = gains for ``biased``.

    ``biased`` defaults to the config's biased distribution. ``solver`` picks the after gains:
    ``'stored'`` (the model's biased set; only for the config's distribution), ``'analytic'``
    (the closed form; a ``ValueError`` where the objective has none for ``biased``),
    ``'gradient'`` (descent from the stored biased gains) or ``'auto'`` (the closed form where
    there is one, else gradient descent), solved here for ``biased``.
    """
    dist = biased or model.cfg.distribution("biased")
    if dist.kind != "biased":
        raise ValueError(f"the adaptation experiment needs a biased distribution; got {ori.format_distribution(dist)!r}")
    if solver == "stored":
        if dist != model.cfg.distribution("biased"):
            raise ValueError("solver='stored' uses the model's biased gain set, which was optimised for "
                             f"{model.cfg.biased!r}; for another distribution use solver='auto', 'analytic' or "
                             "'gradient'")
        after = model.gains_biased.clone()
    elif solver not in ("auto", "analytic", "gradient"):
        raise ValueError(f"solver={solver!r}; allowed: stored, auto, analytic, gradient")
    elif (default_solver(model, dist) if solver == "auto" else solver) == "analytic":
        after = analytic_gains(model, dist)
    else:
        after = gradient_gains(model, dist, init=model.gains_biased).gains
    before = model.gains_uniform.clone()

    s = ori.grid(model.cfg.grid)
    p_biased, p_uniform = ori.density(dist, s), ori.density(ori.UNIFORM, s)
    R0, R1 = tuning_curves(model, before, s), tuning_curves(model, after, s)
    pref = model.preferred.numpy()
    d = ori.circular_distance(pref, dist.adapter)
    side = np.sign(d)
    peak0, peak1 = peak_orientation(R0, s), peak_orientation(R1, s)
    neurons = pd.DataFrame({
        "neuron": np.arange(len(pref)), "preferred": pref, "distance": d,
        "gain_before": before.numpy(), "gain_after": after.numpy(),
        "max_before": R0.max(0), "max_after": R1.max(0), "min_before": R0.min(0), "min_after": R1.min(0),
        "mean_rate_before": p_biased @ R0, "mean_rate_after": p_biased @ R1,
        "peak_before": peak0, "peak_after": peak1,
        "shift_away": ori.circular_distance(peak1, peak0) * side,
    })
    c0, c1, cref = correlation(R0, p_biased), correlation(R1, p_biased), correlation(R0, p_uniform)
    near, far = np.abs(d) <= NEAR_DEG, np.abs(d) >= FAR_DEG
    flank = (np.abs(d) > 0) & (np.abs(d) < 90)
    rows = []

    def add(effect, measure, b, a, expected=""):
        change = a - b
        ok = {"<0": change < 0, ">0": change > 0, "": True}[expected]
        rows.append({"effect": effect, "measure": measure, "before": float(b), "after": float(a),
                     "change": float(change), "expected": expected, "reproduced": bool(ok)})

    n = neurons
    add("maxima/minima", f"mean response maximum, neurons within {NEAR_DEG:g} deg of the adapter",
        n.max_before[near].mean(), n.max_after[near].mean(), "<0")
    add("maxima/minima", f"mean response minimum, neurons within {NEAR_DEG:g} deg of the adapter",
        n.min_before[near].mean(), n.min_after[near].mean(), "<0")
    add("maxima/minima", f"mean response maximum, neurons {FAR_DEG:g}+ deg from the adapter",
        n.max_before[far].mean(), n.max_after[far].mean(), ">0")
    add("maxima/minima", f"mean response minimum, neurons {FAR_DEG:g}+ deg from the adapter",
        n.min_before[far].mean(), n.min_after[far].mean(), ">0")
    add("repulsion", "mean peak shift away from the adapter (deg), flank neurons", 0.0, n.shift_away[flank].mean(), ">0")
    add("repulsion", "largest peak shift away from the adapter (deg)", 0.0, n.shift_away.max())
    add("repulsion", "fraction of flank neurons shifted away", 0.0, float((n.shift_away[flank] > 0).mean()))
    add("decorrelation", f"mean correlation, pairs within {NEAR_DEG:g} deg of the adapter",
        _mean_pairs(c0, near), _mean_pairs(c1, near), "<0")
    add("decorrelation", f"mean correlation, pairs {FAR_DEG:g}+ deg from the adapter", _mean_pairs(c0, far), _mean_pairs(c1, far))
    add("decorrelation", "mean correlation, all pairs", _mean_pairs(c0, np.ones_like(near)), _mean_pairs(c1, np.ones_like(near)))
    spread = lambda r: float(np.std(r) / np.mean(r))  # noqa: E731
    add("homeostasis", "spread (std/mean) of the mean rates under the biased p(s)",
        spread(n.mean_rate_before), spread(n.mean_rate_after), "<0")
    t0, t1 = model.objective_terms(before, dist), model.objective_terms(after, dist)
    add("coding", "decoding error of (cos 2s, sin 2s) under the biased p(s)", t0["decoding_error"], t1["decoding_error"])
    add("coding", "activity E[sum_i r_i^2] under the biased p(s)", t0["activity"], t1["activity"])
    add("coding", f"the model's ({model.cfg.objective}) objective under the biased p(s)", t0["objective"],
        t1["objective"], "<0")

    tuning = pd.concat([
        pd.DataFrame({"condition": cond, "neuron": np.repeat(np.arange(len(pref)), len(s)),
                      "preferred": np.repeat(pref, len(s)), "orientation": np.tile(s, len(pref)),
                      "response": R.T.reshape(-1)})
        for cond, R in (("before", R0), ("after", R1))
    ], ignore_index=True)
    return AdaptationResult(neurons, pd.DataFrame(rows), tuning, c0, c1, cref, pref, dist.adapter,
                            ori.format_distribution(dist), model.cfg.objective)


@torch.no_grad()
def sampled_correlations(model: GainCircuit, result: AdaptationResult, n: int = 20000, seed: int = 0) -> dict:
    """Effect 3 on ``n`` stimuli drawn from the biased distribution by the task's sampler."""
    dist = ori.parse(result.distribution)
    stimuli = ori.sample(dist, n, seed)
    s = torch.tensor([x.orientation for x in stimuli], dtype=torch.float64)
    before = np.corrcoef(model(s, gains=torch.tensor(result.neurons.gain_before.to_numpy())).numpy().T)
    after = np.corrcoef(model(s, gains=torch.tensor(result.neurons.gain_after.to_numpy())).numpy().T)
    near = np.abs(result.neurons.distance.values) <= NEAR_DEG
    return {"n": n, "seed": seed, "adapter_fraction": float(np.mean([x.from_adapter for x in stimuli])),
            "near_pairs_before": _mean_pairs(before, near), "near_pairs_after": _mean_pairs(after, near)}


# ------------------------------------------------------------------ patching
def scale_gains_hook(neurons: np.ndarray, factor: float):
    """A ``hook_gains`` hook multiplying the gains of ``neurons`` (indices or bool mask) by ``factor``."""
    idx = torch.as_tensor(np.flatnonzero(neurons) if np.asarray(neurons).dtype == bool else np.asarray(neurons))

    def hook(gains, hook):
        gains = gains.clone()
        gains[:, idx] = gains[:, idx] * factor
        return gains

    return hook


@torch.no_grad()
def patched_tuning(model: GainCircuit, neurons, factor: float, gains="uniform") -> np.ndarray:
    """Tuning curves [K, n] with the gains of a subpopulation scaled through ``hook_gains``.

    >>> near = np.abs(model.preferred.numpy() + 20) <= 10       # neurons tuned to -30..-10 deg
    >>> R = patched_tuning(model, near, 0.5)                    # their gains halved
    """
    s = torch.as_tensor(ori.grid(model.cfg.grid), dtype=torch.float64)
    return model.run_with_hooks(s, gains=gains, fwd_hooks=[("hook_gains", scale_gains_hook(neurons, factor))]).numpy()
