"""Linear probes on cached activations, with a control task and selectivity.

Two steps, so the expensive one (running the model) happens once:

1. ``collect(model, batches, sites)`` runs the model batch by batch and keeps, at every
   selected hook, only the rows a probe needs (e.g. each variable's defining position):
   memory grows with rows x features, never with the full activations, so tens of
   thousands of problems fit.
2. ``fit(activations, targets, sites=..., probe=..., control=...)`` fits one scikit-learn
   probe per site on a held-out split: logistic regression for discrete targets, ridge
   for continuous ones. The *control task* (Hewitt & Liang, 2019) gives every input type
   (e.g. every variable name) a random label drawn from the target's own distribution; a
   probe that scores well on it is memorising, not reading a feature. *Selectivity* =
   probe score - control score, each an accuracy or an R^2 clamped at 0 (an R^2 below 0 is a
   probe worse than predicting the mean: it reads nothing, the same as 0), so selectivity
   lies in [-1, 1].

A site whose target is constant on the rows it is scored on (every held-out row in one class,
chance 1.0; or a continuous target without variance) measures nothing: its ``status`` is
``"constant target"``, and ``res.top()`` / ``res.best()`` / ``res.summary()`` never rank it
(``res.counts()`` says how many there are). ``status`` is ``"too few rows"`` where a split is
too small to fit or score.

    >>> acts = collect(model, batches, Sites("steps.*.blocks.*.hook_resid_post"))
    >>> res = fit(acts, "value", types="variable", groups="problem")
    >>> res.df[["step", "layer", "accuracy", "control", "selectivity"]]
    >>> res.figure()
"""

from __future__ import annotations

import copy
import math
import os
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Union

import numpy as np
import pandas as pd
import torch
from joblib import Parallel, delayed
from sklearn.base import clone
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.model_selection import GroupShuffleSplit, ShuffleSplit
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits
from tqdm.auto import tqdm

from workbench.results import OK, Result
from workbench.sites import Site, SiteSelection, as_sites, names_filter, natural_key, resolve, site_axes

__all__ = ["ProbeBatch", "Activations", "RowKeeper", "collect", "fit", "control_labels", "PROBES"]

PROBES = ("auto", "logistic", "ridge")


@dataclass
class ProbeBatch:
    """One forward's worth of inputs and the rows to keep from it.

    ``batch_index`` [r] and ``pos_index`` [r] pick the rows (``pos_index=None`` for hooks
    without a position axis, e.g. an RNN state [batch, d]); ``meta`` holds r values per
    column (targets, problem index, depth, ...), which become ``Activations.rows``.
    """

    args: tuple
    kwargs: dict
    batch_index: np.ndarray
    pos_index: np.ndarray | None
    meta: Mapping[str, np.ndarray] = field(default_factory=dict)


@dataclass
class Activations:
    """Features per site (``data[site]`` is [n, d]), one metadata row per sample, and notes
    on the collection (``meta``, e.g. how many loop steps the forwards ran)."""

    data: dict[str, np.ndarray]
    rows: pd.DataFrame
    sites: list[Site] = field(default_factory=list)
    meta: dict = field(default_factory=dict)

    @property
    def n(self) -> int:
        return len(self.rows)

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in self.data.values())

    def __repr__(self) -> str:
        return f"Activations({len(self.data)} sites, {self.n} rows, {self.nbytes / 2**20:.1f} MiB)"


# ---------------------------------------------------------------- collect
def collect(model, batches: Iterable[ProbeBatch], sites: SiteSelection, *, dtype=np.float32,
            progress: bool = False, total: int | None = None, device: str | torch.device | None = None) -> Activations:
    """Run ``model`` over ``batches`` and keep the selected rows at every site.

    Sites are resolved on the first batch (positions in a ``Sites`` selection are ignored:
    the batches pick positions; ``heads`` narrow attention hooks to one head). ``device``:
    where the inputs go (the model's device; kept rows always come back to the CPU).
    """
    keeper = RowKeeper(model, sites, dtype=dtype, device=device)
    for batch in tqdm(batches, disable=not progress, desc="collect", total=total, leave=False):
        keeper.add(batch, keeper.forward(batch)[1])
    return keeper.activations()


class RowKeeper:
    """What ``collect`` does, one batch at a time, for collectors that look at each output.

    ``forward(batch)`` runs the model with hooks that gather the batch's rows at every
    selected hook and returns (output, {hook name: rows [r, ...]}); ``add(batch, rows, keep)``
    keeps them (``keep`` [r] bool drops rows); ``activations()`` assembles everything kept.
    """

    def __init__(self, model, sites: SiteSelection, *, dtype=np.float32, device: str | torch.device | None = None):
        self.model, self.dtype, self.device = model, dtype, device
        self.sel = as_sites(sites)
        self.keep = names_filter(self.sel)
        self.sites: list[Site] | None = None
        self.chunks: dict[str, list[np.ndarray]] = {}
        self.metas: list[pd.DataFrame] = []

    def forward(self, batch: ProbeBatch) -> tuple[Any, dict[str, torch.Tensor]]:
        got: dict[str, torch.Tensor] = {}
        b_idx, p_idx = _indices(batch)

        def gather(act: torch.Tensor, hook) -> None:
            if torch.is_tensor(act):
                got[hook.name] = _rows(act, hook.name, b_idx.to(act.device),
                                       None if p_idx is None else p_idx.to(act.device)).cpu()

        dev = self.device
        args = tuple(a.to(dev) if dev is not None and torch.is_tensor(a) else a for a in batch.args)
        with torch.no_grad():
            out = self.model.run_with_hooks(*args, fwd_hooks=[(self.keep, gather)], **batch.kwargs)
        return out, got

    def add(self, batch: ProbeBatch, got: Mapping[str, torch.Tensor], keep: np.ndarray | None = None) -> None:
        b_idx, p_idx = _indices(batch)
        if self.sites is None:  # resolve once, on the first batch; the batches choose the positions
            if isinstance(self.sel, list):
                self.sites = [Site(s.name, None, s.head) for s in self.sel]
            else:
                names_only = copy.copy(self.sel)
                names_only.positions = None
                self.sites = resolve(names_only, _fake_shapes(got, p_idx), self.model)
        rows = slice(None) if keep is None else torch.from_numpy(np.flatnonzero(keep))
        for s in self.sites:
            if s.name not in got:
                raise ValueError(f"hook {s.name!r} did not fire on every batch; fix the number of loop steps")
            a = got[s.name]
            if s.head is not None:
                a = a.select(_head_axis_after_rows(s.name, a.ndim, p_idx is not None), s.head)
            a = a[rows]
            # a copy the kept rows own: a view would pin its batch's tensor, and with it heap pages
            # the next forwards cannot reuse (peak memory grew with every batch)
            kept = a.reshape(len(a), math.prod(a.shape[1:])).float().numpy().astype(self.dtype, copy=True)
            self.chunks.setdefault(s.label, []).append(kept)
        meta = pd.DataFrame({k: np.asarray(v) for k, v in batch.meta.items()}, index=range(len(b_idx)))
        self.metas.append(meta if keep is None else meta[np.asarray(keep, bool)])

    def activations(self) -> Activations:
        if self.sites is None:
            raise ValueError("no batches to collect from")
        data = {}
        for label in list(self.chunks):  # concatenate site by site, freeing each list as we go
            data[label] = np.concatenate(self.chunks.pop(label))
        return Activations(data, pd.concat(self.metas, ignore_index=True), self.sites)


def _indices(batch: ProbeBatch) -> tuple[torch.Tensor, torch.Tensor | None]:
    b_idx = torch.as_tensor(np.asarray(batch.batch_index), dtype=torch.long)
    p_idx = None if batch.pos_index is None else torch.as_tensor(np.asarray(batch.pos_index), dtype=torch.long)
    return b_idx, p_idx


def _rows(act: torch.Tensor, name: str, b_idx: torch.Tensor, p_idx: torch.Tensor | None) -> torch.Tensor:
    """act[batch_index, pos_index, ...] with the position axis wherever the hook keeps it."""
    if p_idx is None:
        return act[b_idx].detach()
    pos_axis, _ = site_axes(name, act.ndim)
    if pos_axis is None:
        raise ValueError(f"hook {name!r} has shape {list(act.shape)} without a position axis; "
                         "use batches with pos_index=None for it")
    return act.movedim(pos_axis, 1)[b_idx, p_idx].detach()


def _head_axis_after_rows(name: str, ndim_rows: int, had_pos: bool) -> int:
    """Where the head axis sits in a gathered [r, ...] tensor."""
    full_ndim = ndim_rows + (1 if had_pos else 0)
    pos_axis, head_axis = site_axes(name, full_ndim)
    if head_axis is None:
        raise ValueError(f"hook {name!r} has no head axis")
    others = [a for a in range(1, full_ndim) if a != pos_axis] if had_pos else list(range(1, full_ndim))
    return 1 + others.index(head_axis)


def _fake_shapes(got: dict, p_idx) -> dict:
    """Shapes as the full hook would have them (a position axis of length 1 if rows had one)."""
    out = {}
    for name, a in got.items():
        if p_idx is None:
            out[name] = tuple(a.shape)
        else:
            full_ndim = a.ndim + 1
            pos_axis, _ = site_axes(name, full_ndim)
            shape = list(a.shape)
            shape.insert(pos_axis, 1)
            out[name] = tuple(shape)
    return out


# -------------------------------------------------------------------- fit
Targets = Union[str, np.ndarray, Mapping[str, np.ndarray], Callable[[Site], np.ndarray]]


def control_labels(targets: np.ndarray, types: np.ndarray | None, seed: int = 0) -> np.ndarray:
    """Hewitt & Liang's control task: every type gets one random label from the target distribution.

    ``types=None`` relabels every sample independently (a random permutation of targets).
    """
    rng = np.random.default_rng(seed)
    y = np.asarray(targets)
    if types is None:
        return rng.permutation(y)
    uniq, inv = np.unique(np.asarray(types), return_inverse=True)
    return y[rng.integers(0, len(y), size=len(uniq))][inv]


def fit(
    activations: Activations | Mapping[str, np.ndarray],
    targets: Targets,
    *,
    sites: SiteSelection | None = None,
    probe: Any = "auto",
    control: bool = True,
    types: str | np.ndarray | None = None,
    groups: str | np.ndarray | None = None,
    mask: str | np.ndarray | Callable[[Site], np.ndarray] | None = None,
    test_size: float = 0.25,
    seed: int = 0,
    target_name: str | None = None,
    C: float = 1.0,
    alpha: float = 1.0,
    max_iter: int = 200,
    threads: int = 1,
    jobs: int | None = None,
    progress: bool = False,
) -> Result:
    """Fit one linear probe per site and score it on held-out rows.

    Args:
        activations: ``Activations`` from ``collect`` or a dict site -> [n, d] array.
        targets: [n] array; a column name of ``activations.rows``; a dict site -> [n]; or
            ``fn(site) -> [n]`` for targets that depend on the site (e.g. on its step).
        sites: which sites to probe (names, globs or a filter; default: all).
        probe: "logistic" (discrete targets), "ridge" (continuous), "auto" (logistic for
            integer / boolean targets, ridge for floats), or any scikit-learn estimator.
        control: also fit the control task and report ``control`` and ``selectivity``.
        types: [n] input types for the control task (or a column name); None relabels
            each sample independently.
        groups: [n] groups kept on one side of the split (e.g. the problem index).
        mask: rows to use ([n] bool, column name or ``fn(site) -> [n] bool``).
        test_size, seed: the held-out split (the same rows for every site).
        C, alpha, max_iter: regularisation / iterations of the default probes.
        threads: BLAS / OpenMP threads of each fit (more threads on a busy machine are slower).
        jobs: sites fitted at once, in threads (default: one per CPU core, at most one per site);
            the scores are the same for any number.

    Returns:
        ``Result`` (kind "probe"), one row per site: ``accuracy`` (or ``r2``) on the held-out
        rows, ``train_accuracy`` (``train_r2``), ``chance`` (majority class share of the
        held-out rows), ``control``, ``selectivity`` (score - control, R^2 clamped at 0:
        in [-1, 1]), ``status`` ("ok", "constant target", "too few rows"), ``n_train``,
        ``n_test``. ``res.best("accuracy")`` is the best site that measures something;
        ``res.summary()`` prints it with the sites left out and why.
    """
    t0 = time.perf_counter()
    data, rows, known = _unpack(activations)
    n = len(next(iter(data.values())))
    chosen = _choose_sites(data, known, sites)
    types_arr = None if types is None else _column(rows, types, n, "types")
    groups_arr = None if groups is None else _column(rows, groups, n, "groups")
    splitter = (GroupShuffleSplit if groups_arr is not None else ShuffleSplit)(1, test_size=test_size, random_state=seed)
    train_idx, test_idx = next(splitter.split(np.zeros(n), groups=groups_arr))
    is_train = np.zeros(n, dtype=bool)
    is_train[train_idx] = True
    name = target_name or (targets if isinstance(targets, str) else "target")

    def one(site: Site) -> dict:
        X = data[site.label]
        y = np.asarray(_site_value(targets, site, rows, n, "targets"))
        keep = np.ones(n, dtype=bool) if mask is None else np.asarray(_site_value(mask, site, rows, n, "mask"), bool)
        kind, est = _estimator(probe, y, C, alpha, max_iter)
        tr, te = keep & is_train, keep & ~is_train
        row = {**site.row(), "target": name, "probe": kind, "n_train": int(tr.sum()), "n_test": int(te.sum())}
        row.pop("pos", None)
        score, train_score, chance = _fit_score(est, kind, X, y, tr, te)
        key = "accuracy" if kind == "logistic" else "r2"
        row.update({key: score, f"train_{key}": train_score, "chance": chance})
        if control:  # the same seed gives the same relabelling of the same targets at every site
            c_score, _, _ = _fit_score(clone(est), kind, X, control_labels(y, types_arr, seed), tr, te)
            row.update({"control": c_score, "selectivity": selectivity(score, c_score, kind)})
        row["status"] = _status(kind, y, tr, te)
        return row

    jobs = _jobs(jobs, len(chosen))
    # Sites are independent fits, each a small problem that one BLAS thread runs best: fitting
    # several at once in threads (numpy and the solvers release the GIL) uses the other cores.
    with threadpool_limits(threads):
        fits = Parallel(n_jobs=jobs, backend="threading", return_as="generator")(delayed(one)(s) for s in chosen)
        out = list(tqdm(fits, total=len(chosen), disable=not progress, desc="probes", leave=False))
    df = pd.DataFrame(out)
    if "head" in df and df["head"].isna().all():
        df = df.drop(columns="head")
    value = "selectivity" if control else ("accuracy" if "accuracy" in df else "r2")
    meta = {"n": n, "test_size": test_size, "seed": seed, "control": control,
            "control_types": None if types is None else (types if isinstance(types, str) else "array"),
            "seconds": time.perf_counter() - t0}
    return Result("probe", df, value, meta)


def _jobs(jobs: int | None, n_sites: int) -> int:
    if jobs is None:
        return max(1, min(os.cpu_count() or 1, n_sites))
    if isinstance(jobs, bool) or not isinstance(jobs, (int, np.integer)) or jobs < 1:
        raise ValueError(f"jobs={jobs!r}; allowed: a whole number >= 1, or None (one per CPU core)")
    return int(jobs)


def _unpack(activations) -> tuple[dict, pd.DataFrame, list[Site]]:
    if isinstance(activations, Activations):
        return activations.data, activations.rows, activations.sites or [Site(k) for k in activations.data]
    if isinstance(activations, Mapping) and activations:
        data = {k: np.asarray(v) for k, v in activations.items()}
        n = {len(v) for v in data.values()}
        if len(n) != 1:
            raise ValueError(f"every site needs the same number of rows; got {sorted(n)}")
        bad = [k for k, v in data.items() if v.ndim != 2]
        if bad:
            raise ValueError(f"activations must be [n, d] arrays; {bad[0]!r} has shape {list(data[bad[0]].shape)}")
        return data, pd.DataFrame(index=range(n.pop())), [Site(k) for k in data]
    raise ValueError("activations must be an Activations (from probes.collect) or a dict site -> [n, d] array")


def _choose_sites(data: dict, known: list[Site], sites) -> list[Site]:
    by_label = {s.label: s for s in known}
    if sites is None:
        return [by_label.get(k, Site(k)) for k in sorted(data, key=natural_key)]
    keep = names_filter(sites) if not isinstance(sites, Site) else {sites.name}.__contains__
    chosen = [by_label.get(k, Site(k)) for k in sorted(data, key=natural_key)
              if keep(by_label.get(k, Site(k)).name)]
    if not chosen:
        raise ValueError(f"sites={sites!r} selects none of the collected sites; collected: "
                         f"{sorted(data, key=natural_key)[:8]}{' ...' if len(data) > 8 else ''}")
    return chosen


def _column(rows: pd.DataFrame, x, n: int, what: str) -> np.ndarray:
    if isinstance(x, str):
        if x not in rows:
            raise ValueError(f"{what}={x!r} is not a column of the collected rows; columns: {list(rows.columns)}")
        return rows[x].to_numpy()
    a = np.asarray(x)
    if a.shape[:1] != (n,):
        raise ValueError(f"{what} must have one entry per row ({n}); got shape {list(a.shape)}")
    return a


def _site_value(x, site: Site, rows: pd.DataFrame, n: int, what: str) -> np.ndarray:
    if callable(x) and not isinstance(x, (np.ndarray, str)):
        x = x(site)
    elif isinstance(x, Mapping):
        if site.label not in x and site.name not in x:
            raise ValueError(f"{what} has no entry for site {site.label!r}")
        x = x.get(site.label, x.get(site.name))
    a = _column(rows, x, n, what)
    if a.ndim != 1:
        raise ValueError(f"{what} must be one value per row ([{n}]); got shape {list(a.shape)}")
    return a


def _estimator(probe, y: np.ndarray, C: float, alpha: float, max_iter: int):
    if not isinstance(probe, str):
        kind = "logistic" if hasattr(probe, "predict_proba") or getattr(probe, "_estimator_type", "") == "classifier" \
            else "ridge"
        return kind, clone(probe)
    if probe not in PROBES:
        raise ValueError(f"probe={probe!r}; allowed: {PROBES} or a scikit-learn estimator")
    kind = probe if probe != "auto" else ("logistic" if y.dtype.kind in "iub" else "ridge")
    if kind == "logistic":
        return kind, make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=max_iter))
    return kind, make_pipeline(StandardScaler(), Ridge(alpha=alpha))


def selectivity(score: float, control: float, kind: str) -> float:
    """Probe score - control score, in [-1, 1]: accuracies as they are, R^2 clamped at 0 first
    (a negative R^2 reads nothing; subtracting it would reward a control that fits worse than
    the mean, and selectivity could exceed 1)."""
    if kind != "logistic":
        score, control = max(score, 0.0), max(control, 0.0)
    return float(score - control)


def _status(kind: str, y: np.ndarray, tr: np.ndarray, te: np.ndarray) -> str:
    """Either "ok", or why a site's score measures nothing: "too few rows", "constant target"."""
    if tr.sum() < 2 or te.sum() < 1:
        return "too few rows"
    if kind == "logistic":
        if len(np.unique(y[te])) < 2 or len(np.unique(y[tr | te])) < 2:  # chance 1.0: any constant scores 1
            return "constant target"
    elif not (np.ptp(y[te].astype(float)) > 0 and np.ptp(y[tr].astype(float)) > 0):
        return "constant target"
    return OK


def _fit_score(est, kind: str, X: np.ndarray, y: np.ndarray, tr: np.ndarray, te: np.ndarray):
    """(held-out score, train score, chance); NaN when a split has too few rows or classes."""
    if tr.sum() < 2 or te.sum() < 1:
        return float("nan"), float("nan"), float("nan")
    if kind == "logistic":
        labels, counts = np.unique(y[te], return_counts=True)
        chance = float(counts.max() / counts.sum())
        if len(np.unique(y[tr])) < 2:  # one class: the probe is the constant predictor
            const = np.unique(y[tr])[0]
            return float((y[te] == const).mean()), 1.0, chance
    else:
        chance = 0.0
    est.fit(X[tr], y[tr])
    return float(est.score(X[te], y[te])), float(est.score(X[tr], y[tr])), chance
