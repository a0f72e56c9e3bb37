"""Evaluating WARP and the GRU baseline on fresh data: the paper's tables.

* ``forecast_eval``: the forecasting protocol of ``workbench.tasks.dynamics``: the first
  ``context`` states of fresh trajectories are given, the rest is generated
  autoregressively; mean squared error over the generated states (the paper reports
  MSE x 10^-2).
* ``digits_eval``: sequence-classification accuracy (teacher-forced, last step) and
  completion MSE (context prefix, then pixel by pixel) on one digits split: ``val`` for
  every choice, ``test`` once at the end.
* ``digits_test_report``: the end of the digits protocol: test accuracy with a 95% Wilson
  interval, next to logistic regression and k-NN fit on the same training images (their
  own settings chosen on the validation split).
* ``euler_true_params``: WARP-Phys's formula on the mass-spring-damper with the true m, c, k
  (no learning): what exact identification of the parameters would forecast.
* ``results_table``: one tidy row per (model, metric).
* ``theta_pca``: the trajectory of theta_t projected on its principal components.
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import pandas as pd
import torch

from workbench.tasks import digits as dg
from workbench.tasks import dynamics as dy

from . import registry
from .gru import GRU
from .warp import Warp
from .warp_data import digits_split, task_name


def model_kind(model) -> str:
    """``GRU``, ``WARP`` or ``WARP-Phys``: the column of the paper's table."""
    if isinstance(model, GRU):
        return "GRU"
    if isinstance(model, Warp):
        return "WARP-Phys" if model.cfg.physics != "none" else "WARP"
    raise ValueError(f"not a WARP-family model: {type(model).__name__}")


def model_task(model):
    """The model's task (``DynamicsConfig`` or ``DigitsConfig``): ``models.registry.task_of``."""
    return registry.task_of(model)


@torch.no_grad()
def forecast(model, x: torch.Tensor, context: int, batch_size: int = 256) -> torch.Tensor:
    """Autoregressive forecast of x[:, context:] from x[:, :context]: [n, T - context, d]."""
    horizon = x.shape[1] - context
    return torch.cat([model.generate(x[i:i + batch_size, :context], horizon)
                      for i in range(0, len(x), batch_size)])


@torch.no_grad()
def one_step(model, x: torch.Tensor, context: int, batch_size: int = 256) -> torch.Tensor:
    """Teacher-forced predictions of x[:, context:], each from the true states before it: [n, T - context, d].

    The forecast's own targets, predicted one step ahead instead of fed back: how precisely the
    model reads the dynamics, apart from how its errors compound when it runs free.
    """
    return torch.cat([model(x[i:i + batch_size]).mean[:, context - 1:-1] for i in range(0, len(x), batch_size)])


def forecast_eval(model, task: Optional[dy.DynamicsConfig] = None, n: int = 512, seed=1,
                  batch_size: int = 256, with_one_step: bool = False) -> dict:
    """Forecast MSE on ``n`` fresh trajectories (``seed``); also per step and per sample, and with
    ``with_one_step`` the teacher-forced one-step MSE over the same targets (``one_step``: one
    more forward over the whole sequences)."""
    task = task or model_task(model)
    trajs = dy.sample(task, n, np.random.default_rng(seed))
    x = torch.from_numpy(dy.stack(trajs)).float()
    pred = forecast(model, x, task.context, batch_size)
    err = ((pred - x[:, task.context:]) ** 2).numpy()  # [n, H, d]
    extra = {}
    if with_one_step:
        one = ((one_step(model, x, task.context, batch_size) - x[:, task.context:]) ** 2).numpy()
        extra["one_step_x1e-2"] = float(one.mean() * 100)
    return {
        **extra,
        "mse": float(err.mean()),
        "mse_x1e-2": float(err.mean() * 100),
        "mse_per_step": err.mean(axis=(0, 2)).tolist(),
        "mse_per_sample": err.mean(axis=(1, 2)),
        "n": n,
        "seed": seed,
        "system": task.system,
        "context": task.context,
        "length": task.length,
    }


def euler_true_params(task: dy.DynamicsConfig, n: int = 512, seed=1, dt: Optional[float] = None) -> dict:
    """WARP-Phys's forecast with the true parameters: explicit Euler steps of m x'' + c x' + k x = 0
    from the last context state, each from the previous one (``forecast_mse_x1e-2``), and one step
    from each true state (``one_step_x1e-2``), on the ``n`` fresh trajectories ``forecast_eval``
    draws with ``seed``. ``dt``: the formula's step (the model's ``cfg.dt``; default the task's).
    """
    if task.system != "msd":
        raise ValueError(f"the Euler formula with true parameters is WARP-Phys's on 'msd', not {task.system!r}")
    trajs = dy.sample(task, n, np.random.default_rng(seed))
    x = dy.stack(trajs).astype(np.float64)  # [n, T, 2]: (position, velocity)
    m, c, k = (np.array([t.params[p] for t in trajs])[:, None] for p in ("m", "c", "k"))
    h = task.dt if dt is None else dt

    def step(s: np.ndarray) -> np.ndarray:  # s [n, ..., 2]
        pos, vel = s[..., 0], s[..., 1]
        return np.stack([pos + h * vel, vel - h * (c * vel + k * pos) / m], -1)

    free, s = [], x[:, task.context - 1]
    for _ in range(task.length - task.context):
        s = step(s[:, None])[:, 0]
        free.append(s)
    err = (np.stack(free, 1) - x[:, task.context:]) ** 2
    one = (step(x[:, task.context - 1:-1]) - x[:, task.context:]) ** 2
    return {"forecast_mse_x1e-2": float(err.mean() * 100), "one_step_x1e-2": float(one.mean() * 100), "n": n}


@torch.no_grad()
def digits_eval(model: Warp, task: Optional[dg.DigitsConfig] = None, split: str = "test",
                batch_size: int = 512) -> dict:
    """Classification accuracy and completion MSE on a whole split (``fit``, ``val``, ``test``, ``train``).

    Choices are made on ``val``; ``test`` is for the final report (``digits_test_report``).
    """
    task = task or model_task(model)
    data = digits_split(task, split)
    x = torch.from_numpy(dg.sequences(data.pixels))
    out: dict = {"n": len(data), "split": split, "context": task.context}
    if model.cfg.n_classes:
        logits = torch.cat([model(x[i:i + batch_size], mode="parallel").logits[:, -1]
                            for i in range(0, len(x), batch_size)])
        correct = logits.argmax(-1).numpy() == data.labels
        out["accuracy"] = float(correct.mean())
        out["n_correct"] = int(correct.sum())
    if model.cfg.regress:
        pred = forecast(model, x, task.context, batch_size)
        out["completion_mse"] = float(((pred - x[:, task.context:]) ** 2).mean())
    return out


def wilson_interval(k: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """The Wilson score interval of a proportion k / n (95% for the default z).

    >>> [round(v, 3) for v in wilson_interval(411, 450)]    # [0.884, 0.936]
    """
    if n <= 0 or not 0 <= k <= n:
        raise ValueError(f"need 0 <= k <= n and n >= 1; got k={k}, n={n}")
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return float(max(0.0, centre - half)), float(min(1.0, centre + half))


# settings the baselines choose between on the validation split
BASELINE_GRIDS = {"logistic regression": ("C", (0.01, 0.1, 1.0, 10.0)),
                  "k-NN": ("n_neighbors", (1, 3, 5, 7))}


def _baseline(name: str, value):
    from sklearn.linear_model import LogisticRegression
    from sklearn.neighbors import KNeighborsClassifier

    if name == "logistic regression":
        return LogisticRegression(C=value, max_iter=5000)
    return KNeighborsClassifier(n_neighbors=value)


def digits_baselines(task: dg.DigitsConfig, test: bool = True) -> list[dict]:
    """Logistic regression and k-NN on raw pixels (scaled to [0, 1]), fit on the fit split.

    Each picks its setting (``BASELINE_GRIDS``) by validation accuracy, then (``test=True``)
    is scored once on the test split. One dict per baseline: model, setting, val and test
    accuracy with the 95% Wilson interval.
    """
    fit, val = digits_split(task, "fit"), digits_split(task, "val")
    scale = float(dg.MAX_VALUE)
    rows = []
    for name, (param, grid) in BASELINE_GRIDS.items():
        scored = []
        for value in grid:
            clf = _baseline(name, value).fit(fit.pixels / scale, fit.labels)
            scored.append((float(clf.score(val.pixels / scale, val.labels)), value, clf))
        best = max(scored, key=lambda t: t[0])  # the first of equals: the smallest C, the fewest neighbours
        row = {"model": name, "setting": f"{param}={best[1]}", "val_accuracy": best[0]}
        if test:
            data = digits_split(task, "test")
            k = int((best[2].predict(data.pixels / scale) == data.labels).sum())
            row.update(accuracy=k / len(data), n_correct=k, n=len(data), ci95=list(wilson_interval(k, len(data))))
        rows.append(row)
    return rows


def digits_test_report(model: Warp, task: Optional[dg.DigitsConfig] = None) -> dict:
    """The final digits measurement: read the test split once, next to simple baselines.

    Returns the model's validation and test accuracy, the test accuracy's 95% Wilson
    interval, completion MSE on the test split, and ``baselines`` (``digits_baselines``)
    fit on the same training images.
    """
    task = task or model_task(model)
    val = digits_eval(model, task, "val")
    test = digits_eval(model, task, "test")
    out = {"split": "test", "n": test["n"], "val_accuracy": val.get("accuracy"), "val_n": val["n"],
           "fit_n": len(digits_split(task, "fit"))}
    if "accuracy" in test:
        out.update(accuracy=test["accuracy"], n_correct=test["n_correct"],
                   ci95=list(wilson_interval(test["n_correct"], test["n"])))
    if "completion_mse" in test:
        out["completion_mse"] = test["completion_mse"]
    out["baselines"] = digits_baselines(task)
    return out


def digits_report_table(report: dict, name: str = "WARP") -> pd.DataFrame:
    """One row per classifier of a ``digits_test_report``: val accuracy, test accuracy, 95% interval."""
    rows = [{"model": name, "setting": "", "val_accuracy": report.get("val_accuracy"),
             "test_accuracy": report.get("accuracy"), "ci95_low": report["ci95"][0], "ci95_high": report["ci95"][1],
             "n": report["n"]}]
    for b in report["baselines"]:
        rows.append({"model": b["model"], "setting": b["setting"], "val_accuracy": b["val_accuracy"],
                     "test_accuracy": b["accuracy"], "ci95_low": b["ci95"][0], "ci95_high": b["ci95"][1],
                     "n": b["n"]})
    return pd.DataFrame(rows)


def system_seed(seed: int, system: str) -> list[int]:
    """The problem seed of ``system`` in an evaluation with ``seed``: every model of a system sees the same data."""
    return [seed, list(dy.SYSTEMS).index(system)]


def results_table(models: dict, n: int = 512, seed=1, digits_on: str = "val",
                  trajectories: Optional[list] = None) -> pd.DataFrame:
    """Tidy rows (task, kind, model, metric, value) for every model on fresh data.

    Digits models are measured on the split ``digits_on`` (the validation split by default: a
    table that compares models is a choice; the test split is ``digits_test_report``'s).
    ``trajectories``: a list that receives, per forecaster, rows (task, kind, model,
    trajectory, mse_x1e-2) of each trajectory's own error (for ``margins``).
    """
    rows = []
    for name, model in models.items():
        task = model_task(model)
        kind = model_kind(model)
        if isinstance(task, dy.DynamicsConfig):
            ev = forecast_eval(model, task, n, system_seed(seed, task.system), with_one_step=True)
            rows += [{"task": task.system, "kind": kind, "model": name, "metric": metric, "value": ev[metric], "n": n}
                     for metric in ("mse_x1e-2", "one_step_x1e-2")]
            if trajectories is not None:
                trajectories += [{"task": task.system, "kind": kind, "model": name, "trajectory": i,
                                  "mse_x1e-2": float(e) * 100} for i, e in enumerate(ev["mse_per_sample"])]
        else:
            ev = digits_eval(model, task, digits_on)
            for metric in ("accuracy", "completion_mse"):
                if metric in ev:
                    rows.append({"task": task_name(task), "kind": kind, "model": name, "metric": metric,
                                 "value": ev[metric], "n": ev["n"], "split": digits_on})
    return pd.DataFrame(rows)


def margins(trajectories: pd.DataFrame) -> pd.DataFrame:
    """How many times lower one forecaster's error is than another's, trajectory by trajectory.

    trajectories: rows (task, kind, model, trajectory, mse_x1e-2), every model of a system on
    the same trajectories (``results_table(..., trajectories=...)``). One row per system and
    ordered pair (model, other): ``mean_ratio`` = other's mean MSE / model's (the table's
    margin), and over trajectories of other's MSE / model's: the median, the 10th and 90th
    percentiles, and ``share_better``, the share of trajectories where the model's error is lower.
    """
    rows = []
    for task, g in trajectories.groupby("task", sort=False):
        wide = g.pivot_table(index="trajectory", columns="model", values="mse_x1e-2")
        kinds = dict(zip(g["model"], g["kind"]))
        for a in wide.columns:
            for b in wide.columns:
                if a == b:
                    continue
                ratio = (wide[b] / wide[a]).to_numpy()
                rows.append({"task": task, "model": a, "kind": kinds[a], "other": b, "other_kind": kinds[b],
                             "mean_ratio": float(wide[b].mean() / wide[a].mean()),
                             "median_ratio": float(np.median(ratio)), "p10_ratio": float(np.percentile(ratio, 10)),
                             "p90_ratio": float(np.percentile(ratio, 90)), "share_better": float((ratio > 1).mean()),
                             "n": len(ratio)})
    return pd.DataFrame(rows)


def dynamics_table(results: pd.DataFrame, metric: str = "mse_x1e-2") -> pd.DataFrame:
    """The paper's layout: rows = systems, columns = GRU / WARP / WARP-Phys (forecast MSE x 1e-2,
    or ``metric="one_step_x1e-2"``: teacher-forced one-step MSE)."""
    df = results[results.metric == metric]
    wide = df.pivot_table(index="task", columns="kind", values="value", aggfunc="min")
    cols = [c for c in ("GRU", "WARP", "WARP-Phys") if c in wide.columns]
    order = [s for s in dy.SYSTEMS if s in wide.index]
    return wide.loc[order, cols]


def theta_pca(thetas: np.ndarray, n_components: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """theta_t [T, D] -> (coordinates [T, k], explained variance ratio [k])."""
    from sklearn.decomposition import PCA

    thetas = np.asarray(thetas, dtype=np.float64)
    k = min(n_components, *thetas.shape)
    pca = PCA(n_components=k).fit(thetas)
    return pca.transform(thetas), pca.explained_variance_ratio_
