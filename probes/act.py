"""ACT RNN glue for the analyses (parity): inputs, metric, probe rows and targets, post-hoc codebook.

* ``patching_setup``: parity vectors, the same vectors with one nonzero entry set to 0 (the
  parity flips), and the signed output logit (positive = the clean answer).
* ``collect_states``: the state after every ponder step (``time.0.ponder.{n}.hook_state``)
  and the mean-field state, one row per vector, with targets ``parity``, ``n_nonzero`` and
  ``n_steps`` (N(t)); ``halts`` is the site-dependent target "halts at this ponder step".
* ``codebook_report``: k-means codebook over the ponder states (ACT has no discrete bottleneck).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

import probes
from models.act import ACT
from models.act_data import parity_batch
from models.act_eval import task_of
from workbench import codebook
from workbench.hooks import stack
from workbench.results import Result
from workbench.sites import Site, Sites
from workbench.tasks import parity as par

__all__ = ["Experiment", "patching_setup", "collect_states", "halts", "codebook_report"]


@dataclass
class Experiment:
    """Inputs, metric and default sites for ``patch`` / ``attribute``."""

    clean: Tensor
    corrupted: Tensor
    metric: callable
    forward_kwargs: dict
    sites: Sites
    description: str


def _parity_only(model: ACT) -> par.ParityConfig:
    if model.cfg.task_name != "parity":
        raise ValueError(f"the ACT analyses cover the parity task; this model was trained on "
                         f"{model.cfg.task_name!r} (use the Python API with your own inputs and metric)")
    return task_of(model)


def patching_setup(model: ACT, n: int = 8, seed: int = 0) -> Experiment:
    """Parity vectors, each with one nonzero entry zeroed (parity flips), and the signed logit."""
    task = _parity_only(model)
    problems = par.sample(task, n, np.random.default_rng(seed))
    clean = parity_batch(problems)["inputs"]
    corrupted = clean.clone()
    rng = np.random.default_rng([seed, 1])
    for i in range(n):
        nonzero = torch.nonzero(clean[i, 0]).squeeze(1)
        corrupted[i, 0, int(nonzero[rng.integers(len(nonzero))])] = 0.0
    sign = torch.from_numpy(2.0 * problems.target - 1.0).float()

    def metric(out) -> Tensor:
        return out.outputs[:, -1, 0] * sign

    return Experiment(clean, corrupted, metric, {}, Sites("time.*.ponder.*.hook_state"),
                      f"{n} parity vectors of size {task.size}; corrupted: one nonzero entry set to 0 "
                      "(parity flips); metric: output logit signed by the clean parity")


@torch.no_grad()
def collect_states(model: ACT, n: int = 2000, seed: int = 0, batch_size: int = 500) -> probes.Activations:
    """States after each ponder step (those every batch reaches) and the mean-field state."""
    task = _parity_only(model)
    problems = par.sample(task, n, np.random.default_rng(seed))
    x = parity_batch(problems)["inputs"]
    n_steps = torch.cat([model(x[i:i + batch_size]).n_steps[:, 0] for i in range(0, n, batch_size)])
    reach = min(int(n_steps[i:i + batch_size].max()) for i in range(0, n, batch_size))
    batches = [probes.ProbeBatch((x[i:i + batch_size],), {}, np.arange(len(x[i:i + batch_size])), None,
                                 {"item": np.arange(i, min(i + batch_size, n)),
                                  "parity": problems.target[i:i + batch_size].astype(int),
                                  "n_nonzero": problems.n_nonzero[i:i + batch_size],
                                  "n_steps": n_steps[i:i + batch_size].numpy()})
               for i in range(0, n, batch_size)]
    sites = Sites(lambda name: name == "time.0.hook_state"
                  or (name.startswith("time.0.ponder.") and name.endswith(".hook_state")
                      and int(name.split(".")[3]) < reach))
    return probes.collect(model, batches, sites)


def halts(rows) -> callable:
    """Site-dependent target: does the model halt at this site's ponder step (N(t) = n + 1)?"""
    n_steps = rows["n_steps"].to_numpy()

    def target(site: Site) -> np.ndarray:
        n = site.loops.get("ponder")
        if n is None:
            raise ValueError(f"'halts' needs a ponder-step site (time.{{t}}.ponder.{{n}}.); got {site.name!r}")
        return n_steps == n + 1

    return target


@torch.no_grad()
def codebook_report(model: ACT, n: int = 1000, k: int = 8, seed: int = 0) -> Result:
    """Post-hoc codebook (k-means) over the ponder states, decoded against the parity."""
    task = _parity_only(model)
    problems = par.sample(task, n, np.random.default_rng(seed))
    _, cache = model.run_with_cache(parity_batch(problems)["inputs"], names_filter=lambda s: s.endswith("hook_state"))
    states = stack(cache, "hook_state", loop="time.0.ponder")  # [ponder steps, n, state]
    truth = np.broadcast_to(problems.target.astype(int), states.shape[:2])
    rep = codebook.analyze_states(states, k, truth=truth, seed=seed)
    rep.meta.update({"model": "ACT", "states": "time.0.ponder.{n}.hook_state (frozen after a sample halts)"})
    return rep
