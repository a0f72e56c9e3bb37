"""Evaluating WARP and the GRU baseline on fresh data: the paper's tables.

* ``forecast_eval``: the forecasting protocol of ``workbench.tasks.dynamics``: the first
  ``context`` states of fresh trajectories are given, the rest is generated
  autoregressively; mean squared error over the generated states (the paper reports
  MSE x 10^-2).
* ``digits_eval``: sequence-classification accuracy (teacher-forced, last step) and
  completion MSE (context prefix, then pixel by pixel) on the fixed test split.
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
from .warp_data import task_name


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


def forecast_eval(model, task: Optional[dy.DynamicsConfig] = None, n: int = 512, seed=1,
                  batch_size: int = 256) -> dict:
    """Forecast MSE on ``n`` fresh trajectories (``seed``); also per step and per sample."""
    task = task or model_task(model)
    trajs = dy.sample(task, n, np.random.default_rng(seed))
    x = torch.from_numpy(dy.stack(trajs)).float()
    pred = forecast(model, x, task.context, batch_size)
    err = ((pred - x[:, task.context:]) ** 2).numpy()  # [n, H, d]
    return {
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


@torch.no_grad()
def digits_eval(model: Warp, task: Optional[dg.DigitsConfig] = None, split: str = "test",
                batch_size: int = 512) -> dict:
    """Classification accuracy and completion MSE on a whole split."""
    task = task or model_task(model)
    data = dg.load(task, split)
    x = torch.from_numpy(dg.sequences(data.pixels))
    out: dict = {"n": len(data), "split": split, "context": task.context}
    if model.cfg.n_classes:
        logits = torch.cat([model(x[i:i + batch_size], mode="parallel").logits[:, -1]
                            for i in range(0, len(x), batch_size)])
        out["accuracy"] = float((logits.argmax(-1).numpy() == data.labels).mean())
    if model.cfg.regress:
        pred = forecast(model, x, task.context, batch_size)
        out["completion_mse"] = float(((pred - x[:, task.context:]) ** 2).mean())
    return out


def results_table(models: dict, n: int = 512, seed=1) -> pd.DataFrame:
    """Tidy rows (task, kind, model, metric, value) for every model on fresh data."""
    rows = []
    for name, model in models.items():
        task = model_task(model)
        kind = model_kind(model)
        if isinstance(task, dy.DynamicsConfig):
            ev = forecast_eval(model, task, n, [seed, list(dy.SYSTEMS).index(task.system)])  # same data for every model of a system
            rows.append({"task": task.system, "kind": kind, "model": name, "metric": "mse_x1e-2",
                         "value": ev["mse_x1e-2"], "n": n})
        else:
            ev = digits_eval(model, task)
            for metric in ("accuracy", "completion_mse"):
                if metric in ev:
                    rows.append({"task": task_name(task), "kind": kind, "model": name, "metric": metric,
                                 "value": ev[metric], "n": ev["n"]})
    return pd.DataFrame(rows)


def dynamics_table(results: pd.DataFrame) -> pd.DataFrame:
    """The paper's layout: rows = systems, columns = GRU / WARP / WARP-Phys (MSE x 1e-2)."""
    df = results[results.metric == "mse_x1e-2"]
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
