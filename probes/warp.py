"""WARP glue for the analyses (dynamical systems, recurrent mode).

* ``patching_setup``: trajectories, trajectories of the same system with other physical
  parameters, and the negative one-step prediction error against the clean trajectory. Every
  pair keeps the contract of ``probes.pairs`` (the corrupted trajectory differs, and the
  clean run predicts the clean trajectory better than the corrupted run by a margin).
* ``collect_thetas``: theta_t (the root MLP's weights, ``time.{t}.hook_theta``) at every
  ``stride``-th step, one row per trajectory, with each physical parameter as a target
  (m, c, k for the mass-spring-damper; phi, f for the sine; ...), for ridge probes.
* ``codebook_report``: a k-means codebook over theta_t (WARP has no discrete bottleneck).
* ``STUDY``: the family's study (``probes.study``) for the command line and the explorer.
"""

from __future__ import annotations

import numpy as np
import torch

import probes
from models import registry
from models.warp import Warp
from probes import pairs
from probes.study import Experiment, Option, Study, Target
from workbench import codebook
from workbench.results import Result
from workbench.sites import Sites
from workbench.tasks import dynamics as dy

__all__ = ["patching_setup", "collect_thetas", "codebook_report", "STUDY"]


def dynamics_task(model: Warp) -> dy.DynamicsConfig:
    """The model's task (``models.registry``), if it is a dynamical system: the WARP analyses cover those."""
    task = _task(model)
    if not isinstance(task, dy.DynamicsConfig):
        raise ValueError("the WARP analyses cover the dynamical-systems tasks; this model has "
                         f"task {model.cfg.task!r} (use the Python API with your own inputs and metric)")
    return task


def _task(model: Warp):
    try:
        return registry.task_of(model)
    except ValueError:
        return None


def _sample(model: Warp, n: int, seed) -> tuple[torch.Tensor, list[dy.Trajectory]]:
    task = dynamics_task(model)
    trajs = dy.sample(task, n, np.random.default_rng(seed))
    return torch.from_numpy(dy.stack(trajs)).float(), trajs


def patching_setup(model: Warp, n: int = 4, seed: int = 0, *, clean: torch.Tensor | None = None,
                   corrupted: torch.Tensor | None = None, margin: float = pairs.MARGIN) -> Experiment:
    """Clean trajectories vs trajectories with other parameters; metric: -MSE of one-step predictions.

    Every pair keeps the contract of ``probes.pairs``: the corrupted trajectory differs from the
    clean one (another target to predict), and the clean run's metric exceeds the corrupted
    run's by ``margin``. ``clean`` and ``corrupted`` given ([B, T, d] each): a ``ValueError``
    names the pairs that break it; sampled (``n`` pairs): pairs are drawn until ``n`` keep it.
    """
    if (clean is None) != (corrupted is None):
        raise ValueError("pass both clean and corrupted trajectories, or neither (to sample them)")
    if clean is not None:
        clean, corrupted = torch.as_tensor(clean).float(), torch.as_tensor(corrupted).float()
        if clean.shape != corrupted.shape or clean.ndim != 3:
            raise ValueError(f"clean and corrupted must be [B, T, d] of one shape; got {list(clean.shape)} "
                             f"and {list(corrupted.shape)}")
        exp = _experiment(model, clean, corrupted)
        pairs.check(exp.target_changed, exp.gaps, margin, [f"trajectory {i}" for i in range(len(clean))],
                    what="trajectory")
        return exp
    dynamics_task(model)
    rng = np.random.default_rng(seed)

    def sample(k: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        a, _ = _sample(model, k, rng)
        b, _ = _sample(model, k, rng)
        return list(zip(a, b))

    def build(items) -> Experiment:
        return _experiment(model, torch.stack([a for a, _ in items]), torch.stack([b for _, b in items]))

    exp, drawn = pairs.select(sample, build, lambda e: e.gaps, lambda e: e.target_changed, n, margin)
    if drawn > n:
        exp.description += (f"; {n} of {drawn} sampled pairs kept: the others broke the contract "
                            f"(clean metric above corrupted by {margin:g})")
    return exp


def _experiment(model: Warp, clean: torch.Tensor, corrupted: torch.Tensor) -> Experiment:
    target = clean[:, 1:]

    def metric(out) -> torch.Tensor:
        return -((out.mean[:, :-1] - target) ** 2).mean((1, 2))

    T = clean.shape[1]
    changed = (clean[:, 1:] != corrupted[:, 1:]).flatten(1).any(1).numpy()
    gaps = pairs.metric_gaps(model, clean, corrupted, metric, {})
    return Experiment(clean, corrupted, metric, {}, Sites("time.*.hook_theta", time=range(0, T, max(1, T // 16))),
                      f"{len(clean)} {getattr(_task(model), 'system', 'given')} trajectories; corrupted: other physical "
                      "parameters; metric: minus the mean squared error of the one-step predictions of the clean "
                      "trajectory",
                      gaps, changed)


@torch.no_grad()
def collect_thetas(model: Warp, n: int = 2000, seed: int = 0, stride: int = 8, batch_size: int = 250) -> probes.Activations:
    """theta_t every ``stride`` steps, with the physical parameters as row metadata (targets)."""
    x, trajs = _sample(model, n, seed)
    params = {k: np.array([t.params[k] for t in trajs]) for k in trajs[0].params}
    batches = [probes.ProbeBatch((x[i:i + batch_size],), {}, np.arange(len(x[i:i + batch_size])), None,
                                 {"item": np.arange(i, min(i + batch_size, n)),
                                  **{k: v[i:i + batch_size] for k, v in params.items()}})
               for i in range(0, n, batch_size)]
    return probes.collect(model, batches, Sites("time.*.hook_theta", time=range(0, x.shape[1], stride)))


@torch.no_grad()
def codebook_report(model: Warp, n: int = 500, k: int = 16, seed: int = 0, stride: int = 8) -> Result:
    """Post-hoc codebook (k-means) over theta_t every ``stride`` steps."""
    x, _ = _sample(model, n, seed)
    keep = list(range(0, x.shape[1], stride))
    _, cache = model.run_with_cache(x, names_filter=lambda s: s.endswith("hook_theta"))
    states = torch.stack([cache[f"time.{t}.hook_theta"] for t in keep])  # [steps kept, n, D]
    rep = codebook.analyze_states(states, k, seed=seed)
    rep.meta.update({"model": "WARP", "states": f"time.{{t}}.hook_theta for t in {keep}"})
    rep.df["time"] = keep
    return rep


# ------------------------------------------------------------------- study
class WarpStudy(Study):
    """WARP on a dynamical system: other physical parameters, the one-step error, theta_t probes."""

    family = "warp"
    metrics = ("minus one-step MSE",)
    page_sites = ("time.*.hook_theta", "none")
    sizes = {"patch": (4, 1, 64), "probe": (200, 20, 2000), "codebook": (100, 10, 2000)}

    def check(self, model) -> None:
        dynamics_task(model)

    def options(self, model, analysis: str) -> list[Option]:
        stride = Option("stride", "Every k-th time step", 8, 1, max(1, int(model.cfg.seq_len)),
                        help="keep theta_t at every k-th time step", query="stride")
        if analysis == "codebook":
            return [Option("k", "Clusters k", 16, 2, 256, help="clusters of the post-hoc (k-means) codebook",
                           query="k", per_family=True)]
        return [stride]

    def experiment(self, model, n: int, seed: int, stride: int | None = None, **options) -> Experiment:
        exp = patching_setup(model, n=n, seed=seed)
        if stride:  # hand-typed sites keep every stride-th time step
            exp.loops = {"time": range(0, exp.clean.shape[1], stride)}
        return exp

    def collect(self, model, n: int, seed: int, *, batch_size: int | None = None, progress: bool = False,
                stride: int = 8, **options) -> probes.Activations:
        self.check(model)
        return collect_thetas(model, n, seed=seed, stride=stride, **({"batch_size": batch_size} if batch_size else {}))

    def targets(self, model) -> dict[str, Target]:
        return {p: Target(p, help=f"the physical parameter {p}") for p in dynamics_task(model).spec.param_names}

    def aliases(self, model) -> dict[str, tuple[str, ...]]:
        return {"params": tuple(dynamics_task(model).spec.param_names)}

    def codebook(self, model, n: int, seed: int, k: int = 8, **options) -> Result:
        self.check(model)
        return codebook_report(model, n=n, k=k, seed=seed)


STUDY = WarpStudy()
