"""Probe transfer: a linear probe fit on the state at step i, tested at step j."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Union

import numpy as np
import pandas as pd
from torch import Tensor

from workbench.dynamics.result import DynamicsResult


def _steps_array(acts) -> tuple[list, list[np.ndarray]]:
    if isinstance(acts, Mapping):
        steps = list(acts)
        arrays = [acts[s] for s in steps]
    else:
        arrays = list(acts)
        steps = list(range(len(arrays)))
    out = []
    for a in arrays:
        a = a.detach().float().cpu().numpy() if isinstance(a, Tensor) else np.asarray(a, dtype=float)
        out.append(a)
    if not out:
        raise ValueError("acts holds no step")
    shapes = {a.shape for a in out}
    if len(shapes) > 1:
        raise ValueError(f"acts have different shapes across steps: {sorted(shapes)}")
    return steps, out


def probe_transfer(
    acts,
    target,
    *,
    probe=None,
    control: Union[str, Any, None] = "shuffle",
    test_size: float = 0.3,
    seed: int = 0,
    standardize: bool = True,
    groups=None,
) -> DynamicsResult:
    """Fit a linear probe on the state at step i and test it at every step j: the whole matrix.

    Args:
        acts: the state at every step: a tensor / array [steps, batch, d] (or [steps, batch, pos, d]
            with a target [batch, pos]), a list of [batch, d], or a dict {step: [batch, d]}
            (e.g. ``rollout_states(...)`` or ``workbench.hooks.stack(cache, ...)``).
        target: [batch] (or [batch, pos]) labels: integers / bools / strings give classification
            (``LogisticRegression``, accuracy), floats regression (``Ridge``, R²).
        probe: ``"logistic"`` (the default for classes: ``LogisticRegression``), ``"ridge"`` (closed
            form and quick: ``RidgeClassifier`` for classes), or a scikit-learn estimator (cloned for
            every fit). Real-valued targets use ``Ridge`` unless an estimator is given.
        control: ``"shuffle"`` (the labels permuted across examples, one permutation for every
            step), an array of control labels of the target's shape (a control task), or None.
        test_size: share of *examples* held out: train and test never share an example, even
            when each example has several positions.
        standardize: z-score the activations (fit on the training examples of step i).
        groups: [batch] ids: rows with the same id count as one example of the split (e.g. several
            answer positions of one problem, flattened into rows); default: every row its own.

    Returns:
        ``DynamicsResult``: one row per (train_step, test_step): ``score`` (accuracy or R² on the
        held-out examples), ``control`` (the same probe recipe on the control labels),
        ``selectivity`` = score - control (R² clamped at 0 first), ``chance`` (the majority class
        share of the test labels; 0 for R²), ``status`` ("ok", or "constant target").
    """
    from sklearn.base import clone
    from sklearn.linear_model import LogisticRegression, Ridge, RidgeClassifier
    from sklearn.model_selection import GroupShuffleSplit
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    steps, arrays = _steps_array(acts)
    y = target.detach().cpu().numpy() if isinstance(target, Tensor) else np.asarray(target)
    shape = arrays[0].shape
    if shape[: y.ndim] != y.shape or len(shape) != y.ndim + 1:
        raise ValueError(f"each step's activations {list(shape)} must be the target's shape {list(y.shape)} plus one "
                         "feature axis ([batch, d] for a [batch] target, [batch, pos, d] for [batch, pos])")
    if groups is None:
        groups = np.repeat(np.arange(y.shape[0]), int(np.prod(y.shape[1:], dtype=int)))
    else:
        groups = np.asarray(groups.detach().cpu() if isinstance(groups, Tensor) else groups)
        if groups.shape != y.shape[:1]:
            raise ValueError(f"groups must be one id per row, shape [{y.shape[0]}]; got {list(groups.shape)}")
        groups = np.repeat(groups, int(np.prod(y.shape[1:], dtype=int)))
    B = len(np.unique(groups))
    X = [a.reshape(-1, a.shape[-1]) for a in arrays]
    y = y.reshape(-1)
    regression = y.dtype.kind == "f"
    rng = np.random.default_rng(seed)
    if control is None:
        yc = None
    elif isinstance(control, str):
        if control != "shuffle":
            raise ValueError(f"control={control!r}; allowed: 'shuffle', an array of control labels, or None")
        yc = y[rng.permutation(len(y))]
    else:
        yc = control.detach().cpu().numpy() if isinstance(control, Tensor) else np.asarray(control)
        if yc.size != y.size:
            raise ValueError(f"control labels must have the target's shape; got {yc.size} labels for {y.size}")
        yc = yc.reshape(-1)
    if not 0 < test_size < 1:
        raise ValueError(f"test_size={test_size} must be in (0, 1)")
    if B < 4:
        raise ValueError(f"probe_transfer needs at least 4 examples to split by example; got {B}")
    train, test = next(GroupShuffleSplit(n_splits=1, test_size=test_size, random_state=seed).split(X[0], y, groups))
    metric = "r2" if regression else "accuracy"

    if isinstance(probe, str) and probe not in ("logistic", "ridge"):
        raise ValueError(f"probe={probe!r}; allowed: 'logistic', 'ridge' or a scikit-learn estimator")

    def make():
        if probe is not None and not isinstance(probe, str):
            base = clone(probe)
        elif regression:
            base = Ridge(alpha=1.0)
        else:
            base = RidgeClassifier(alpha=1.0) if probe == "ridge" else LogisticRegression(max_iter=2000)
        return make_pipeline(StandardScaler(), base) if standardize else base

    def fit(labels):
        if len(np.unique(labels[train])) < 2:
            return None
        fitted = []
        for Xi in X:
            m = make()
            m.fit(Xi[train], labels[train])
            fitted.append(m)
        return fitted

    def scores(fitted, labels):
        """[i, j]: the probe of step i on the held-out rows of step j (one predict per probe)."""
        out = np.full((len(X), len(X)), np.nan)
        if fitted is None:
            return out
        Xt, yt = np.concatenate([Xj[test] for Xj in X]), labels[test]
        for i, m in enumerate(fitted):
            pred = m.predict(Xt).reshape(len(X), len(test))
            if regression:
                ss_tot = float(((yt - yt.mean()) ** 2).sum())
                out[i] = 1 - ((pred - yt) ** 2).sum(1) / ss_tot if ss_tot > 0 else np.nan
            else:
                out[i] = (pred == yt).mean(1)
        return out

    main = scores(fit(y), y)
    ctrl = scores(fit(yc), yc) if yc is not None else np.full_like(main, np.nan)
    if regression:
        chance = 0.0
    else:
        _, counts = np.unique(y[test], return_counts=True)
        chance = float(counts.max() / counts.sum())
    constant = len(np.unique(y[train])) < 2
    rows = []
    for i, si in enumerate(steps):
        for j, sj in enumerate(steps):
            s, c = main[i, j], ctrl[i, j]
            sel = (max(s, 0.0) - max(c, 0.0)) if regression else s - c
            rows.append({"train_step": si, "test_step": sj, "score": s, metric: s, "control": c,
                         "selectivity": sel if np.isfinite(c) else np.nan, "chance": chance,
                         "n_train": len(train), "n_test": len(test),
                         "status": "constant target" if constant else "ok"})
    meta = {"metric": metric, "steps": steps, "control": control if isinstance(control, str) or control is None
            else "labels", "train_examples": int(len(np.unique(groups[train]))),
            "test_examples": int(len(np.unique(groups[test])))}
    return DynamicsResult("probe_transfer", pd.DataFrame(rows), "score", meta)
