"""ACT RNN glue for the analyses (parity): inputs, metric, probe rows and targets, post-hoc codebook.

* ``patching_setup``: parity vectors, the same vectors with the sign of one nonzero entry
  flipped (the count of +1 entries changes by one, so the parity flips on every pair; the
  number of nonzero entries, the task's difficulty, stays), and the signed output logit
  (positive = the clean answer). Every pair keeps the contract of ``probes.pairs``.
* ``collect_states``: the state after every ponder step (``time.0.ponder.{n}.hook_state``)
  and the mean-field state, one row per vector, with targets ``parity``, ``n_nonzero`` and
  ``n_steps`` (N(t)); ``halts`` is the site-dependent target "halts at this ponder step".
* ``codebook_report``: k-means codebook over the ponder states (ACT has no discrete bottleneck).
* ``STUDY``: the family's study (``probes.study``) for the command line and the explorer.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

import probes
from models import registry
from models.act import ACT
from models.act_data import parity_batch
from probes import pairs
from probes.study import Experiment, Option, Study, Target
from workbench import codebook
from workbench.hooks import stack
from workbench.results import Result
from workbench.sites import Site, Sites
from workbench.tasks import parity as par

__all__ = ["Experiment", "corrupt", "patching_setup", "collect_states", "halts", "codebook_report", "STUDY"]


def parity_task(model: ACT) -> par.ParityConfig:
    """The model's task (``models.registry``), if it is parity: the ACT analyses cover parity only."""
    task = registry.task_of(model)
    if not isinstance(task, par.ParityConfig):
        raise ValueError(f"the ACT analyses cover the parity task; this model was trained on "
                         f"{model.cfg.task_name!r} (use the Python API with your own inputs and metric)")
    return task


def corrupt(vectors: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The vectors with the sign of one random nonzero entry flipped: parity flips, n_nonzero stays."""
    out = np.array(vectors, dtype=np.int8, copy=True)
    for i, row in enumerate(out):
        nonzero = np.flatnonzero(row)
        if not len(nonzero):
            raise ValueError(f"vector {i} has no nonzero entry: no sign flip can change its parity")
        j = int(nonzero[rng.integers(len(nonzero))])
        out[i, j] = -out[i, j]
    return out


def patching_setup(model: ACT, n: int = 8, seed: int = 0, *, vectors=None, corrupted=None,
                   margin: float = pairs.MARGIN) -> Experiment:
    """Parity vectors, each with one nonzero entry's sign flipped (parity flips), and the signed logit.

    Every pair keeps the contract of ``probes.pairs``: the corrupted vector's parity (the
    exact solver's) differs from the clean one, and the signed output of the clean run exceeds
    the corrupted run's by ``margin``. ``vectors`` ([B, size] in {-1, 0, 1}, and optionally
    your own ``corrupted``): a ``ValueError`` names the pairs that break it; sampled (``n``
    vectors): vectors are drawn until ``n`` keep it.
    """
    task = parity_task(model)
    rng = np.random.default_rng(seed)

    def build(items: list[tuple[np.ndarray, np.ndarray]]) -> Experiment:
        return _experiment(model, task, np.stack([a for a, _ in items]), np.stack([b for _, b in items]))

    if vectors is not None:
        clean = np.asarray(getattr(vectors, "vectors", vectors))
        par.check_vectors(clean, task.size)
        corr = corrupt(clean, rng) if corrupted is None else np.asarray(getattr(corrupted, "vectors", corrupted))
        par.check_vectors(corr, task.size)
        if corr.shape != clean.shape:
            raise ValueError(f"clean vectors {list(clean.shape)} and corrupted {list(corr.shape)} differ in shape")
        exp = build(list(zip(clean, corr)))
        pairs.check(exp.target_changed, exp.gaps, margin, [f"vector {i}" for i in range(len(clean))], what="vector")
        return exp

    def sample(k: int) -> list[tuple[np.ndarray, np.ndarray]]:
        v = par.sample(task, k, rng).vectors
        return list(zip(v, corrupt(v, rng)))

    exp, drawn = pairs.select(sample, build, lambda e: e.gaps, lambda e: e.target_changed, n, margin)
    if drawn > n:
        exp.description += (f"; {n} of {drawn} sampled vectors kept: the others broke the contract "
                            f"(clean metric above corrupted by {margin:g})")
    return exp


def _experiment(model: ACT, task: par.ParityConfig, clean_v: np.ndarray, corr_v: np.ndarray) -> Experiment:
    clean_set, corr_set = par.from_vectors(clean_v, task.size), par.from_vectors(corr_v, task.size)
    clean, corrupted = parity_batch(clean_set)["inputs"], parity_batch(corr_set)["inputs"]
    sign = torch.from_numpy(2.0 * clean_set.target - 1.0).float()

    def metric(out) -> Tensor:
        return out.outputs[:, -1, 0] * sign

    changed = clean_set.target != corr_set.target
    gaps = pairs.metric_gaps(model, clean, corrupted, metric, {})
    return Experiment(clean, corrupted, metric, {}, Sites("time.*.ponder.*.hook_state"),
                      f"{len(clean_v)} parity vectors of size {task.size}; corrupted: the sign of one nonzero entry "
                      "flipped (the parity flips, the number of nonzero entries stays); metric: output logit "
                      "signed by the clean parity", gaps, changed)


@torch.no_grad()
def collect_states(model: ACT, n: int = 2000, seed: int = 0, batch_size: int = 500) -> probes.Activations:
    """States after each ponder step (those every batch reaches) and the mean-field state."""
    task = parity_task(model)
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
    task = parity_task(model)
    problems = par.sample(task, n, np.random.default_rng(seed))
    _, cache = model.run_with_cache(parity_batch(problems)["inputs"], names_filter=lambda s: s.endswith("hook_state"))
    states = stack(cache, "hook_state", loop="time.0.ponder")  # [ponder steps, n, state]
    truth = np.broadcast_to(problems.target.astype(int), states.shape[:2])
    rep = codebook.analyze_states(states, k, truth=truth, seed=seed)
    rep.meta.update({"model": "ACT", "states": "time.0.ponder.{n}.hook_state (frozen after a sample halts)"})
    return rep


# ------------------------------------------------------------------- study
class ACTStudy(Study):
    """ACT on parity: sign flips of one entry, the signed output, ponder-state probes and codebook."""

    family = "act"
    metrics = ("signed output logit", "clean answer probability")
    page_sites = ("time.*.ponder.*.hook_state", "none")
    default_target = "parity"
    sizes = {"patch": (8, 1, 256), "probe": (400, 20, 5000), "codebook": (300, 10, 5000)}

    def check(self, model) -> None:
        parity_task(model)

    def options(self, model, analysis: str) -> list[Option]:
        if analysis != "codebook":
            return []
        return [Option("k", "Clusters k", 8, 2, 256, help="clusters of the post-hoc (k-means) codebook",
                       query="k", per_family=True)]

    def experiment(self, model, n: int, seed: int, **options) -> Experiment:
        return patching_setup(model, n=n, seed=seed)

    def metric(self, model, experiment: Experiment, name: str):
        if name != "clean answer probability":
            return super().metric(model, experiment, name)
        signed = experiment.metric
        return lambda out: torch.sigmoid(signed(out))

    def collect(self, model, n: int, seed: int, *, batch_size: int | None = None, progress: bool = False,
                **options) -> probes.Activations:
        self.check(model)
        return collect_states(model, n, seed=seed, **({"batch_size": batch_size} if batch_size else {}))

    def targets(self, model) -> dict[str, Target]:
        return {"parity": Target("parity", help="the parity of the vector"),
                "halts": Target(halts, sites="time.*.ponder.*", help="the model halts at this ponder step")}

    def codebook(self, model, n: int, seed: int, k: int = 8, **options) -> Result:
        self.check(model)
        return codebook_report(model, n=n, k=k, seed=seed)


STUDY = ACTStudy()
