"""WARP (and forecasters with its interface: the GRU baseline) for the explorer: a sampled
trajectory or digit, the forecast (completion) from its context, theta_t, the root function at
chosen steps, the spectrum of A and, for WARP-Phys, the physical parameters read from theta_t.

>>> traj = sample(model, seed=0)                  # a Trajectory of the model's system
>>> run = forecast_run(model, traj)               # ForecastRun: forecast [T - C, d], thetas [T - 1, D]
>>> run = digit_run(model, index=0)               # the same for a digit model (64 pixels, label)
>>> root_curves(model, run, steps=[10, 40])       # tidy rows: step, tau, output, value
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch

from models import registry
from models.warp import PHYS_PARAMS
from models.warp_eval import theta_pca
from workbench.tasks import digits as dg
from workbench.tasks import dynamics as dy


def task_of(model) -> dy.DynamicsConfig | dg.DigitsConfig:
    """The task the model was trained on (a dynamical system or the digits)."""
    if not getattr(model.cfg, "task", None):
        raise ValueError("this model stores no task in its config; the page needs the task to sample inputs")
    return registry.task_of(model)


def check_model(model) -> None:
    """Read what the pages need from the model's config; ``ValueError`` says what is unusable.

    A model without a task passes (the page explains that it cannot sample inputs)."""
    if not getattr(model.cfg, "task", None):
        return
    try:
        task = task_of(model)
        if isinstance(task, dy.DynamicsConfig):
            task.spec  # noqa: B018 - an unknown system raises here
    except (TypeError, ValueError, AttributeError, KeyError) as e:
        raise ValueError(f"the checkpoint's task config is unusable: {e}") from e


def is_digits(model) -> bool:
    return isinstance(task_of(model), dg.DigitsConfig)


def sample(model, seed: int) -> dy.Trajectory:
    """One fresh trajectory (random physical parameters) of the model's system."""
    task = task_of(model)
    if not isinstance(task, dy.DynamicsConfig):
        raise ValueError("this model was trained on the digits, not on a dynamical system; use digit_run")
    return dy.sample(task, 1, np.random.default_rng(int(seed)))[0]


@dataclass
class ForecastRun:
    """The forecasting protocol on one sequence: the first ``context`` values given, the rest generated."""

    truth: np.ndarray  # [T, d] the whole sequence
    times: np.ndarray  # [T]
    context: int
    forecast: np.ndarray  # [T - context, d] predictions of truth[context:]
    thetas: np.ndarray  # [T - 1, D] the state along the run (theta_t for WARP, the hidden state for a GRU)
    inputs: np.ndarray  # [T - 1, d] what each step read (truth in the context, then its own predictions)
    phys: np.ndarray | None  # [T - 1, p] physical parameters (WARP-Phys), else None
    state_names: tuple[str, ...]
    params: dict = field(default_factory=dict)  # the trajectory's physical parameters
    label: int | None = None  # digits: the true class
    predicted: int | None = None  # digits: the class the model reads from the whole sequence

    @property
    def mse(self) -> float:
        return float(((self.forecast - self.truth[self.context:]) ** 2).mean())


@torch.no_grad()
def _generate(model, x: torch.Tensor, C: int) -> tuple:
    T = x.shape[1]
    if not 1 <= C < T:
        raise ValueError(f"context={C} is out of range; allowed 1..{T - 1} (the sequence has {T} values)")
    out = model(x[:, :C], context=C, horizon=T - C)
    phys = out.phys[0].numpy() if getattr(out, "phys", None) is not None else None
    return out.mean[0, C - 1:].numpy(), out.thetas[0].numpy(), out.inputs[0].numpy(), phys


def forecast_run(model, traj: dy.Trajectory, context: int | None = None) -> ForecastRun:
    """Forecast ``traj`` from its first ``context`` states (default: the task's context)."""
    task = task_of(model)
    C = int(context) if context is not None else (task.context if isinstance(task, dy.DynamicsConfig) else 1)
    x = torch.from_numpy(traj.states[None]).float()
    forecast, thetas, inputs, phys = _generate(model, x, C)
    return ForecastRun(traj.states, traj.times, C, forecast, thetas, inputs, phys,
                       dy.SYSTEMS[traj.system].state_names, dict(traj.params))


def n_test_digits(model) -> int:
    return len(dg.load(task_of(model), "test"))


@torch.no_grad()
def digit_run(model, index: int, context: int | None = None) -> ForecastRun:
    """Complete test digit ``index`` from its first ``context`` pixels; classify the whole digit."""
    task = task_of(model)
    if not isinstance(task, dg.DigitsConfig):
        raise ValueError("this model was trained on a dynamical system, not on the digits; use forecast_run")
    data = dg.load(task, "test")
    if not 0 <= int(index) < len(data):
        raise ValueError(f"digit index {index} is out of range; allowed 0..{len(data) - 1} (the test split)")
    x = torch.from_numpy(dg.sequences(data.pixels[int(index):int(index) + 1]))
    C = task.context if context is None else int(context)
    forecast, thetas, inputs, _ = _generate(model, x, C) if model.cfg.regress else (None, None, None, None)
    predicted = None
    if getattr(model.cfg, "n_classes", 0):
        predicted = int(model(x, mode="parallel").logits[0, -1].argmax())
    if thetas is None:  # a pure classifier: theta_t of the teacher-forced run
        thetas = model(x).thetas[0].numpy()
    return ForecastRun(x[0].numpy(), np.arange(x.shape[1], dtype=float), C, forecast, thetas, inputs, None,
                       ("pixel",), {}, int(data.labels[int(index)]), predicted)


def taus(model, n: int) -> np.ndarray:
    """The decoding coordinate tau of steps 0..n-1."""
    return model.tau(torch.arange(n)).numpy()


def pca(run: ForecastRun, k: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """theta_t along the run on its principal components: (coords [T - 1, k], explained [k]).

    A theta_t that never moves (an untrained model) has no variance: explained is 0 then.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        coords, explained = theta_pca(run.thetas, k)
    return coords, np.nan_to_num(explained)


def check_steps(steps, n: int) -> list[int]:
    """Steps as ints in 0..n-1, deduplicated and sorted; ``ValueError`` for an empty or bad selection."""
    steps = sorted({int(s) for s in steps})
    if not steps:
        raise ValueError(f"choose at least one step (0..{n - 1})")
    bad = [s for s in steps if not 0 <= s < n]
    if bad:
        raise ValueError(f"steps {bad} are out of range; allowed 0..{n - 1}")
    return steps


@torch.no_grad()
def root_curves(model, run: ForecastRun, steps, n_tau: int = 101) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The root network of each chosen step, queried over tau in [0, 1].

    Returns (curves, marks): tidy rows (step, tau, output, value) for every regression output
    of the root ("next x": the predicted next value of x) and, for WARP-Phys, the physical
    parameters; and the points (same columns) where the model actually decodes each step.
    """
    if not hasattr(model, "root_from_theta"):
        raise ValueError(f"a {type(model).__name__} has no root network (only WARP encodes one in its state)")
    if run.inputs is None:
        raise ValueError("this model has no regression head: its root predicts no value to draw")
    steps = check_steps(steps, len(run.thetas))
    names = [f"next {s}" for s in run.state_names]
    phys_labels = list(phys_names(model))
    grid = torch.linspace(0.0, 1.0, n_tau, dtype=torch.float32)
    curves, marks = [], []
    for t in steps:
        f = model.root_from_theta(torch.from_numpy(run.thetas[t]))
        u = torch.from_numpy(run.inputs[t]).float()
        for tau_vals, sink in ((grid, curves), (model.tau(t).reshape(1), marks)):
            dec = f.decode(tau_vals, u.expand(len(tau_vals), -1))
            parts = [(names, dec["mean"])] + ([(phys_labels, dec["phys"])] if "phys" in dec else [])
            for labels, values in parts:
                for j, name in enumerate(labels):
                    sink.append(pd.DataFrame({"step": t, "tau": tau_vals.numpy(), "output": name,
                                              "value": values[:, j].numpy()}))
    return pd.concat(curves, ignore_index=True), pd.concat(marks, ignore_index=True)


def phys_names(model) -> tuple[str, ...]:
    return PHYS_PARAMS.get(getattr(model.cfg, "physics", "none"), ())
