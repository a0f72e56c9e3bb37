"""What exact patching (``workbench.patching``) and attribution patching (``workbench.attribution``)
share: checking the arguments, the unpatched base runs, the hooks a run never reaches, the metric
and its normalisation, the activation an ablation writes, and the result table.

Both analyses take ``(model, clean, corrupted, metric, sites, ablation=..., forward_kwargs=...)``
and normalise a metric m the same way::

    score = (m - m_corrupted) / (m_clean - m_corrupted)     # batch means; 0 = corrupted, 1 = clean

>>> run = setup(model, clean, corrupted, sites, ablation=None, forward_kwargs={"steps": 4})
>>> clean_run = base_run(model, run.clean, run.forward_kwargs, run.want)  # output, cache, shapes, step_bytes
>>> corr_run = base_run(model, run.corrupted, run.forward_kwargs, run.want)
>>> m_clean = metric_values(metric, clean_run.output, run.batch, "clean")  # [batch]
>>> m_corr = metric_values(metric, corr_run.output, run.batch, "corrupted")
>>> baselines = Baselines(float(m_clean.mean()), float(m_corr.mean()))   # refuses equal metrics
>>> baselines.score(m)                                                    # 0 = as corrupted, 1 = as clean
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Optional, Union

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from workbench.hooks import HookName, exclusive, map_tensors
from workbench.sites import Site, Sites, SiteSelection, as_sites, names_filter

__all__ = [
    "ABLATIONS", "Metric", "Setup", "setup", "inputs", "batch_size", "BaseRun", "base_run", "metric_values",
    "metric_per_copy", "slice_rows", "output_rows", "check_metric", "Baselines", "ablation_source", "frame",
]

ABLATIONS = (None, "zero", "mean", "resample")
Metric = Callable[[Any], Tensor]


# ------------------------------------------------------------------ arguments
@dataclass
class Setup:
    """The checked arguments of one analysis call.

    ``clean`` / ``corrupted``: the positional inputs of each run (tuples, batch first);
    ``base``: the run a patch is written into (corrupted without ablation, clean with one),
    ``other``: the run its source comes from.
    """

    clean: tuple
    corrupted: tuple
    batch: int
    sites: Union[Sites, list[Site]]
    want: Callable[[str], bool]  # a names_filter of every hook the sites may read
    forward_kwargs: dict
    ablation: Optional[str]
    started: float = field(default_factory=time.perf_counter)

    @property
    def base(self) -> tuple:
        return self.corrupted if self.ablation is None else self.clean

    @property
    def other(self) -> tuple:
        return self.clean if self.ablation is None else self.corrupted

    def seconds(self) -> float:
        """Wall time since the call started."""
        return time.perf_counter() - self.started


def setup(model, clean, corrupted, sites: SiteSelection, ablation: Optional[str],
          forward_kwargs: Optional[Mapping[str, Any]]) -> Setup:
    """Check the arguments shared by ``patch`` and ``attribute`` (clear errors before any forward)."""
    started = time.perf_counter()
    if ablation not in ABLATIONS:
        raise ValueError(f"ablation={ablation!r}; allowed: {ABLATIONS}")
    clean_args, corr_args = inputs(clean, corrupted)
    sel = as_sites(sites)
    if hasattr(sel, "check_names"):
        sel.check_names(model)
    return Setup(clean_args, corr_args, batch_size(clean_args), sel, names_filter(sel), dict(forward_kwargs or {}),
                 ablation, started)


def inputs(clean, corrupted) -> tuple[tuple, tuple]:
    """The positional inputs of the clean and corrupted runs as tuples of equal shapes and dtypes."""
    c = tuple(clean) if isinstance(clean, (tuple, list)) else (clean,)
    r = tuple(corrupted) if isinstance(corrupted, (tuple, list)) else (corrupted,)
    if len(c) != len(r):
        raise ValueError(f"clean has {len(c)} inputs but corrupted has {len(r)}")
    for i, (a, b) in enumerate(zip(c, r)):
        if torch.is_tensor(a) != torch.is_tensor(b):
            raise ValueError(f"input {i}: clean is {type(a).__name__}, corrupted is {type(b).__name__}")
        if torch.is_tensor(a) and (a.shape != b.shape or a.dtype != b.dtype):
            raise ValueError(f"clean and corrupted inputs must have the same shape and dtype; input {i}: "
                             f"clean {list(a.shape)} {a.dtype} vs corrupted {list(b.shape)} {b.dtype}")
    if not c or not torch.is_tensor(c[0]) or c[0].ndim == 0:
        raise ValueError("the first input must be a tensor with a batch axis")
    return c, r


def batch_size(args: tuple) -> int:
    """The batch size shared by every tensor input, or a clear error."""
    B = args[0].shape[0]
    for a in args:
        if torch.is_tensor(a) and a.ndim and a.shape[0] != B:
            raise ValueError(f"every tensor input needs the same batch size; got {a.shape[0]} and {B}")
    return B


# ------------------------------------------------------------------ base runs
class BaseRun(NamedTuple):
    output: Any
    cache: dict[str, Tensor]  # the hooks ``keep`` selects
    shapes: dict[str, tuple]  # every fired hook's shape
    step_bytes: int  # bytes per batch row of the largest loop step


def base_run(model, args: tuple, fk: dict, keep: Callable[[str], bool], measure: bool = True) -> BaseRun:
    """One forward without gradients, recording what the analyses need (see ``BaseRun``).

    A loop step is one iteration of a hook name's outermost loop (``HookName.loops``); hooks
    outside every loop count as one step together. ``measure=False`` records only the hooks
    ``keep`` selects (``shapes`` then holds those, ``step_bytes`` is 0): a run whose sizes are
    already known attaches nothing else.

    The recording hooks are plain PyTorch forward hooks on the hook points, attached and removed
    here under the model's lock, so the run costs one call per recorded hook and nothing per hook
    point left alone.
    """
    cache: dict[str, Tensor] = {}
    shapes: dict[str, tuple] = {}
    nbytes: dict[Any, int] = {}

    def recorder(name: str, kept: bool, step) -> Callable:
        def record(module, inputs, act) -> None:
            if not torch.is_tensor(act):
                return
            shapes[name] = tuple(act.shape)
            if measure:
                nbytes[step] = nbytes.get(step, 0) + act.numel() * act.element_size()
            if kept:
                cache[name] = act
        return record

    handles = []
    with exclusive(model), torch.no_grad():
        try:
            for name, point in model.hook_dict.items():
                kept = bool(keep(name))
                if kept or measure:
                    step = HookName.parse(name).loops[:1] if measure else None
                    handles.append(point.register_forward_hook(recorder(name, kept, step)))
            out = model(*args, **fk)
        finally:
            for handle in handles:
                handle.remove()
    B = args[0].shape[0]
    return BaseRun(out, cache, shapes, max(nbytes.values(), default=0) // max(1, B))


# --------------------------------------------------------------------- metric
def metric_values(metric: Metric, out, B: int, what: str) -> Tensor:
    """``metric(out)`` checked, detached, as float32 on the CPU: [B]."""
    return check_metric(metric(out), B, what).detach().float().cpu()


def slice_rows(obj, a: int, b: int, n: int):
    """Rows a..b-1 of every batch-first tensor (n rows) in ``obj``."""
    return map_tensors(lambda x: x[a:b] if x.ndim and x.shape[0] == n else x, obj)


def output_rows(out, a: int, b: int, n: int):
    """Rows a..b-1 of a model's output of n rows: its own ``out.output_rows(a, b)`` where it has one
    (an output assembled on demand, as a grown batch's), else ``slice_rows``."""
    own = getattr(out, "output_rows", None)
    return own(a, b) if callable(own) else slice_rows(out, a, b, n)


def metric_per_copy(metric: Metric, out, k: int, B: int, first: int = 0, n: Optional[int] = None) -> Tensor:
    """[k, B]: the metric of each of k copies of the batch in ``out`` (n rows, default first + k * B;
    copy j at rows first + j * B ..), as ``metric_values`` gives each.

    One vectorised call (``torch.func.vmap`` over the copies) where the metric allows it: its
    operators run once on every copy at once, where one call per copy pays their fixed cost k
    times (most of the time of a small model's many copies). A metric vmap cannot batch (one
    that calls ``.item()``, branches on values or goes through NumPy) is called once per copy,
    and so is one whose vectorised value has the wrong shape, to get its own error message. An
    output may lay out its copies itself: ``out.row_blocks(first, k, B)`` returns (tensors with a
    leading copy dimension, a function rebuilding one copy's output from them).
    """
    n = first + k * B if n is None else n
    if k == 0:
        return torch.empty(0, B)
    blocks = getattr(out, "row_blocks", None)
    leaves, rebuild = blocks(first, k, B) if callable(blocks) else _row_blocks(out, first, k, B, n)
    values = None
    if leaves:
        try:
            values = torch.func.vmap(lambda *xs: metric(rebuild(xs)))(*leaves)
        except Exception:  # noqa: BLE001 -- anything vmap refuses; the calls per copy below raise real errors
            values = None
    if torch.is_tensor(values) and tuple(values.shape) == (k, B):
        return values.detach().float().cpu()
    return torch.stack([metric_values(metric, output_rows(out, a, a + B, n), B, "patched")
                        for a in range(first, first + k * B, B)])


def _row_blocks(out, first: int, k: int, B: int, n: int) -> tuple[list[Tensor], Callable]:
    """``metric_per_copy``'s layout of a plain output: every batch-first tensor's copy rows as [k, B, ...]."""
    batch_first = lambda x: x.ndim and x.shape[0] == n  # noqa: E731 (as slice_rows decides)
    leaves: list[Tensor] = []

    def collect(x: Tensor) -> Tensor:
        if batch_first(x):
            leaves.append(x[first:first + k * B].unflatten(0, (k, B)))
        return x

    map_tensors(collect, out)

    def rebuild(xs):
        it = iter(xs)
        return map_tensors(lambda x: next(it) if batch_first(x) else x, out)

    return leaves, rebuild


def check_metric(m, B: int, what: str) -> Tensor:
    """The metric's value as a [B] tensor, or a clear error."""
    if isinstance(m, np.ndarray):
        m = torch.from_numpy(m)
    if not torch.is_tensor(m) or tuple(m.shape) != (B,):
        got = list(m.shape) if hasattr(m, "shape") else type(m).__name__
        raise ValueError(f"metric must return a tensor of shape [batch] = [{B}] (one number per problem); "
                         f"on the {what} run it returned {got}")
    return m


@dataclass(frozen=True)
class Baselines:
    """The batch-mean metric on the clean and the corrupted run, and the score they define."""

    clean: float
    corrupted: float

    def __post_init__(self) -> None:
        d = self.clean - self.corrupted
        if not np.isfinite(d) or abs(d) < 1e-9 * max(1.0, abs(self.clean), abs(self.corrupted)):
            raise ValueError(f"the metric is the same on clean ({self.clean:.6g}) and corrupted "
                             f"({self.corrupted:.6g}) inputs, so normalised scores are undefined; choose inputs "
                             "or a metric that tell them apart")

    def score(self, m: float) -> float:
        """The normalised score of a metric value: 0 = as corrupted, 1 = as clean."""
        return (m - self.corrupted) / (self.clean - self.corrupted)

    def base(self, ablation: Optional[str]) -> float:
        """The metric of the run a patch is written into."""
        return self.corrupted if ablation is None else self.clean

    def meta(self, ablation: Optional[str], batch: int) -> dict:
        return {"metric_clean": self.clean, "metric_corrupted": self.corrupted, "ablation": ablation, "batch": batch}


# ----------------------------------------------------------- sources and tables
def unreached(model, output, names: Iterable[str]) -> set[str]:
    """The hooks among ``names`` that a run of ``output``'s rows alone never fires, for a model whose
    hooks fire only while some row needs them (``model.hook_rows``: ACT's ponder steps); a patch
    there cannot change anything."""
    reach = getattr(model, "hook_rows", None)
    if reach is None:
        return set()
    return {name for name in set(names) if not bool(reach(output, name).any())}


def ablation_source(ablation: Optional[str], name: str, clean: Mapping[str, Tensor], corrupted: Mapping[str, Tensor],
                    base: Tensor) -> Tensor:
    """The activation a patch writes at hook ``name`` into ``base``: the clean one (no ablation),
    the corrupted one ("resample"), zeros ("zero"), or the mean over the corrupted batch ("mean")."""
    if ablation is None:
        return clean[name]
    if ablation == "resample":
        return corrupted[name]
    if ablation == "zero":
        return torch.zeros_like(base)
    if not base.is_floating_point():
        raise ValueError(f"mean ablation of {name!r} is undefined: its activation is {base.dtype}")
    return corrupted[name].mean(0, keepdim=True).expand_as(base)


def frame(rows: list[dict]) -> pd.DataFrame:
    """The result table: ``pos`` / ``head`` dropped when no row has one, else nullable ints."""
    # the empty columns leave before the frame is built: dropping them after costs more than the rest
    empty = [c for c in ("pos", "head") if rows and c in rows[0] and all(r.get(c) is None for r in rows)]
    if empty:
        rows = [{k: v for k, v in r.items() if k not in empty} for r in rows]
    df = pd.DataFrame(rows)
    for col in ("pos", "head"):
        if col in df:
            df[col] = df[col].astype("Int64")
    return df
