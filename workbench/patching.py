"""Exact activation patching over every loop step, layer, position and head.

``patch(model, clean, corrupted, metric, sites=...)`` runs the corrupted input, replaces
the activation at one site with its value from the clean run, and reports the metric,
site by site, normalised so that 0 = the corrupted run and 1 = the clean run::

    >>> res = patch(model, clean, corrupted, metric,
    ...             sites=Sites("steps.*.blocks.*.hook_resid_pre", positions="each"),
    ...             forward_kwargs={"steps": 9})
    >>> res.df[["step", "layer", "pos", "score"]]
    >>> res.figure()                       # step x position heatmap per layer

* ``clean`` / ``corrupted``: the model's first positional input (or a tuple of positional
  inputs), batch first, with equal shapes. ``forward_kwargs`` go to every forward call;
  give recurrent models a fixed number of steps.
* ``metric(output) -> [batch]``: one number per problem, e.g. the logit difference of
  the right and the wrong answer at a node. It always receives an output for exactly the
  problems of ``clean`` (rows in the same order), so per-problem labels work as is.
  Scores use the batch mean: ``score = (m - m_corrupted) / (m_clean - m_corrupted)``.
* ``ablation``: ``None`` (the default: patch clean into corrupted, "denoising");
  ``"zero"`` / ``"mean"`` (run the clean input and replace the site by zeros / by its mean
  over the corrupted batch, a reference distribution); ``"resample"`` (run the clean input
  and replace the site by the corrupted run's value, "noising"). Scores keep their
  meaning: 1 = as clean, 0 = as corrupted.
* ``effect``: what a site does, the same direction for every ablation: ``score`` when
  patching clean into corrupted (the share of the clean - corrupted gap restored), ``1 -
  score`` for the ablations of the clean run (the share of the gap removed). ``res.top(k)``
  ranks on ``|effect|``, so a zero ablation lists the sites that matter, not the unaffected
  ones (whose score is ~1).
* ``status``: ``"ok"``, or ``"no-op"`` where the written activation equals the one already
  there bit for bit (the patch cannot change anything: its metric is the base metric).
* Patching ``steps.{t}.bottleneck.hook_codes`` of the reasoner sets a variable's value at
  step t (the codes are integers; the clean code is written in, or any code given in
  ``sources``).

How it is fast while staying exact:

1. **One batched forward for many sites.** The base input is replicated along the batch,
   copy j patches site j; sites are processed in chunks whose size keeps the activations
   of one loop step under ``memory_mb``.
2. **Shared prefix computed once.** A patch at loop step t cannot change steps < t (nor,
   at block l, the blocks before l). Models offering the *resume protocol* below restart
   the batched run at step t (block l) from the base run's recorded state instead of from
   the input.
3. **Settled copies stop early.** After the patched step, and after every later step, each
   copy's loop state (the *carry*) is compared with the base run's; once it is bit-identical
   (typical behind a discrete bottleneck: the argmax did not change, or an error was
   repaired), every later step is identical too, so its output is assembled from its own
   record so far and the base run's record after, without running those steps.
4. **No-op patches are not run.** A site whose source activation equals the base
   activation bit for bit cannot change anything: its metric is the base metric.

Models without the protocol fall back to full re-runs, still batched.

Resume protocol (implemented by ``models.reasoner.Reasoner``)::

    model.resume_loop = "steps"                # the loop whose index t prefixes hook names
    model.resume_names(t) -> list[str]         # hooks that resume_state(cache, t) reads; all
                                               # of them fire at loop steps < t
    model.resume_state(cache, t) -> LoopState  # the state entering step t of a recorded run
    model(*inputs, start=state, **kwargs)      # continue from it; the output equals the output
                                               # of the full run that produced the cache
    model.resume_inner = "blocks"              # optional: a nested loop a step can resume inside;
                                               # then resume_names(t, i) / resume_state(cache, t, i)
                                               # start step t at inner index i (skipping 0..i-1)

A ``LoopState`` holds ``t``, the ``carry`` (what step t reads: the only thing the
future depends on besides the inputs) and the ``record`` (outputs of steps < t needed to
assemble the run's output). Every tensor in it is batch first. ``start.t`` may equal the
number of steps: then nothing runs and the output is assembled from the record.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, fields, is_dataclass, replace
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor
from tqdm.auto import tqdm

from workbench.hooks import exclusive
from workbench.results import OK, Result, effect
from workbench.sites import Site, SiteSelection, as_sites, loop_indices, names_filter, resolve

__all__ = ["patch", "LoopState", "resumable", "ABLATIONS"]

ABLATIONS = (None, "zero", "mean", "resample")
Metric = Callable[[Any], Tensor]


@dataclass
class LoopState:
    """The state of a recurrent run entering loop step ``t`` (see the resume protocol)."""

    t: int
    carry: dict[str, Tensor]
    record: dict[str, Any] = field(default_factory=dict)
    inner: int = 0  # resume inside step t at this index of the inner loop (see resume_inner)


def resumable(model) -> bool:
    """Does the model implement the resume protocol?"""
    return all(hasattr(model, a) for a in ("resume_loop", "resume_names", "resume_state"))


class _Stop(Exception):
    """Raised from a hook to end a forward pass once the hooks we need have fired."""


# ----------------------------------------------------------------- public API
def patch(
    model,
    clean,
    corrupted,
    metric: Metric,
    sites: SiteSelection,
    *,
    ablation: str | None = None,
    sources: Mapping[str, Tensor] | None = None,
    forward_kwargs: Mapping[str, Any] | None = None,
    reuse_prefix: bool = True,
    memory_mb: float = 512,
    progress: bool = False,
) -> Result:
    """Exact activation patching, one site at a time, many sites per forward.

    Args:
        model: a ``HookedRecurrentModule`` (any TransformerLens ``HookedRootModule`` works).
        clean, corrupted: inputs [batch, ...] (or tuples of them) of equal shapes.
        metric: ``fn(output) -> [batch]``; higher = more like clean.
        sites: hook names, glob patterns, a names_filter, ``Sites(...)`` or ``Site`` list.
        ablation: None, "zero", "mean" or "resample" (see the module docstring).
        sources: {hook name: activation [batch, ...]} to write instead of the clean one at
            that hook, e.g. codes with one value changed to set a variable to any value.
        forward_kwargs: keyword arguments for every forward call (e.g. ``{"steps": 9}``).
        reuse_prefix: use the resume protocol when the model has it (False: full re-runs).
        memory_mb: budget for one chunk's activations of one loop step.
        progress: show a progress bar.

    Returns:
        ``Result`` with one row per site: identifying columns, ``metric`` (batch mean of
        the patched metric), ``score`` (normalised: 0 = corrupted, 1 = clean), ``effect``
        (``score`` without ablation, ``1 - score`` with one) and ``status`` (``"ok"`` or
        ``"no-op"``). ``res.top(k)`` / ``res.summary()`` rank the sites on ``|effect|``.
    """
    t_start = time.perf_counter()
    if ablation not in ABLATIONS:
        raise ValueError(f"ablation={ablation!r}; allowed: {ABLATIONS}")
    fk = dict(forward_kwargs or {})
    clean_args, corr_args = _inputs(clean, corrupted)
    B = _batch_size(clean_args)
    sel = as_sites(sites)
    if hasattr(sel, "check_names"):
        sel.check_names(model)
    use_resume = reuse_prefix and resumable(model)
    resume_names = _all_resume_names(model) if use_resume else set()
    want = names_filter(sel)

    with torch.no_grad():
        keep = lambda n: want(n) or n in resume_names  # noqa: E731
        out_clean, clean_cache, shapes, step_bytes = _base_run(model, clean_args, fk, keep)
        out_corr, corr_cache, corr_shapes, _ = _base_run(model, corr_args, fk, keep)
    m_clean = _metric(metric, out_clean, B, "clean")
    m_corr = _metric(metric, out_corr, B, "corrupted")
    M_clean, M_corr = float(m_clean.mean()), float(m_corr.mean())
    denom = _denominator(M_clean, M_corr)

    site_list = resolve(sel, shapes, model)
    for s in site_list:
        if s.name not in corr_shapes:
            raise ValueError(f"hook {s.name!r} fired in the clean run but not in the corrupted one; "
                             "fix the number of steps with forward_kwargs")
    if ablation is None:
        base_args, base_cache, base_metric = corr_args, corr_cache, m_corr
    else:
        base_args, base_cache, base_metric = clean_args, clean_cache, m_clean
    sources = _Sources(ablation, clean_cache, corr_cache, base_cache, sources)

    values = torch.empty(len(site_list), B)
    noop = [False] * len(site_list)
    todo: dict[Any, list[int]] = {}
    for i, s in enumerate(site_list):
        src, base = sources[s.name], base_cache[s.name]
        if src.shape != base.shape:
            raise ValueError(f"{s.name}: clean and corrupted activations have different shapes "
                             f"{list(src.shape)} vs {list(base.shape)}")
        idx = s.index(base.shape)
        if torch.equal(src[idx].to(base.dtype), base[idx]):  # a no-op patch changes nothing
            values[i] = base_metric
            noop[i] = True
            continue
        key = _resume_point(model, s.name) if use_resume else None
        todo.setdefault(key, []).append(i)

    copies = max(1, int(memory_mb * 2**20 // max(1, step_bytes)))
    n_rows = sum(len(v) for v in todo.values()) * B
    stats = {"forwards": 0, "copies_run": 0, "copies_settled": 0}
    run = _Runner(model, base_args, base_cache, fk, metric, B, sources, resume_names, stats)
    chunks = [(key, idx[i: i + copies]) for key, idx in sorted(todo.items(), key=lambda kv: (kv[0] is None, kv[0] or ()))
              for i in range(0, len(idx), copies)]
    with torch.no_grad():  # the patched runs, like the base runs, build no autograd graph
        for key, chunk in tqdm(chunks, disable=not progress, desc="patch", leave=False):
            chunk_sites = [site_list[i] for i in chunk]
            if key is None:
                values[chunk] = run.full(chunk_sites)
            else:
                values[chunk] = run.resumed(*key, chunk_sites)

    rows = []
    for s, v, skip in zip(site_list, values, noop):
        m = float(v.mean())
        score = (m - M_corr) / denom
        rows.append({**s.row(), "metric": m, "score": score, "effect": effect(score, ablation),
                     "status": "no-op" if skip else OK})
    meta = {
        "metric_clean": M_clean, "metric_corrupted": M_corr, "ablation": ablation, "batch": B,
        "sites": len(site_list), "sites_noop": len(site_list) - sum(len(v) for v in todo.values()),
        "copies_per_forward": copies, "rows": n_rows, "resume": use_resume, **stats,
        "seconds": time.perf_counter() - t_start,
    }
    return Result("patch", _frame(rows), "score", meta)


# ------------------------------------------------------------------ runner
class _Sources:
    """The activation written into each site: clean, zeros, a mean, or the corrupted value."""

    def __init__(self, ablation, clean_cache, corr_cache, base_cache, given=None):
        self.ablation, self.clean, self.corr, self.base = ablation, clean_cache, corr_cache, base_cache
        self._memo: dict[str, Tensor] = dict(given or {})

    def __getitem__(self, name: str) -> Tensor:
        if name not in self._memo:
            base = self.base[name]
            if self.ablation is None:
                src = self.clean[name]
            elif self.ablation == "resample":
                src = self.corr[name]
            elif self.ablation == "zero":
                src = torch.zeros_like(base)
            else:
                if not base.is_floating_point():
                    raise ValueError(f"mean ablation of {name!r} is undefined: its activation is {base.dtype}")
                src = self.corr[name].mean(0, keepdim=True).expand_as(base)
            self._memo[name] = src
        return self._memo[name]


class _Runner:
    """Runs chunks of patched copies of the base input and returns their metrics [copies, batch]."""

    def __init__(self, model, base_args, base_cache, fk, metric, B, sources, resume_names, stats):
        self.model, self.args, self.cache, self.fk = model, base_args, base_cache, fk
        self.metric, self.B, self.sources, self.stats = metric, B, sources, stats
        if resume_names:
            loop = model.resume_loop
            self.T = 1 + max(loop_indices(n)[loop] for n in resume_names if n in base_cache)
            self.step_of = lambda n: loop_indices(n).get(loop)  # noqa: E731
            self._refs: dict[int, LoopState] = {}

    def hooks(self, sites: Sequence[Site]) -> list[tuple[str, Callable]]:
        by_name: dict[str, list[tuple[int, Site]]] = {}
        for j, s in enumerate(sites):
            by_name.setdefault(s.name, []).append((j, s))
        return [(name, _patch_hook(entries, self.sources[name], len(sites), self.B))
                for name, entries in by_name.items()]

    def full(self, sites: Sequence[Site]) -> Tensor:
        """Full re-runs of k patched copies in one batch."""
        k = len(sites)
        with _hooked(self.model, self.hooks(sites)):
            out = self.model(*_repeat(self.args, k), **self.fk)
        self.stats["forwards"] += 1
        self.stats["copies_run"] += k
        return _metric_per_copy(self.metric, out, k, self.B)

    def resumed(self, t: int, inner: int, sites: Sequence[Site]) -> Tensor:
        """Patched copies that start at step t (block ``inner``) from the base run's state.

        The copies run one step at a time; after each step every copy whose carry equals the
        base run's is *settled*: its later steps are the base run's, so its output is
        assembled from its own record up to here and the base run's record after.
        """
        model, k, B = self.model, len(sites), self.B
        values = torch.empty(k, B)
        alive = torch.arange(k)  # copies still running
        args = _repeat(self.args, k)
        kwargs = dict(self.fk)
        if t > 0 or inner > 0:
            state = model.resume_state(self.cache, t, inner) if inner else model.resume_state(self.cache, t)
            kwargs["start"] = _repeat(state, k)
        hooks = self.hooks(sites)
        own: dict[str, Tensor] = {}  # what the alive copies recorded at steps >= t
        u = t
        while True:
            produced = [] if u >= self.T else [n for n in model.resume_names(u + 1) if self.step_of(n) == u]
            out, step_cache = _run_until(model, args, kwargs, hooks if u == t else [], produced)
            self.stats["forwards"] += 1
            if out is not None:  # the run ended (the last step, or a fixed point)
                values[alive] = _metric_per_copy(self.metric, out, len(alive), B)
                self.stats["copies_run"] += len(alive)
                return values
            own.update(step_cache)
            n = len(alive)
            state = model.resume_state(self._mix(own, u + 1, n), u + 1)
            settled = _settled(state.carry, self._reference(u + 1).carry, n, B)
            if settled.any():
                rows, m = _rows(settled, B), int(settled.sum())
                final = self._mix({name: v[rows] for name, v in own.items()}, self.T, m)
                out = model(*_take(args, rows), **{**self.fk, "start": model.resume_state(final, self.T)})
                values[alive[settled]] = _metric_per_copy(self.metric, out, m, B)
                self.stats["copies_settled"] += m
            if settled.all():
                return values
            rows = _rows(~settled, B)
            alive, args = alive[~settled], _take(args, rows)
            own = {name: v[rows] for name, v in own.items()}
            kwargs = {**self.fk, "start": _take(state, rows)}
            u += 1

    def _mix(self, own: dict, t: int, n: int) -> dict:
        """What ``resume_state(., t)`` reads: the copies' own entries, else the base run's (repeated)."""
        return {name: own[name] if name in own else _repeat(self.cache[name], n) for name in self.model.resume_names(t)}

    def _reference(self, t: int) -> LoopState:
        if t not in self._refs:
            self._refs[t] = self.model.resume_state(self.cache, t)
        return self._refs[t]


def _patch_hook(entries: list[tuple[int, Site]], src: Tensor, k: int, B: int) -> Callable:
    """A hook writing ``src`` into copy j at site j, vectorised over sites sharing index axes."""
    groups: dict[tuple[int, ...], tuple[list[int], list[tuple[int, ...]]]] = {}
    for j, s in entries:
        axes = s.axes(src.shape)
        vals = tuple(v for v in (s.pos, s.head) if v is not None)
        js, idx = groups.setdefault(axes, ([], []))
        js.append(j)
        idx.append(vals)
    prepared = []
    for axes, (js, idx) in groups.items():
        dest = list(range(len(axes)))
        index = tuple(torch.tensor(col) for col in zip(*idx)) if axes else ()
        moved = src.movedim(list(axes), dest) if axes else src
        values = moved[index] if axes else src.unsqueeze(0).expand(len(js), *src.shape)
        prepared.append((axes, torch.tensor(js), index, values.contiguous()))

    def hook(act: Tensor, hook) -> Tensor:
        if act.shape[0] != k * B:
            raise RuntimeError(f"{hook.name}: expected batch {k * B} (copies x batch), got {act.shape[0]}")
        act = act.clone(memory_format=torch.contiguous_format)
        view = act.view(k, B, *act.shape[1:])
        for axes, js, index, values in prepared:
            target = view.movedim([a + 1 for a in axes], [d + 1 for d in range(len(axes))]) if axes else view
            target[(js, *index)] = values.to(act.dtype)
        return act

    return hook


# --------------------------------------------------------------- helpers
def _inputs(clean, corrupted) -> tuple[tuple, tuple]:
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


def _batch_size(args: tuple) -> int:
    B = args[0].shape[0]
    for a in args:
        if torch.is_tensor(a) and a.ndim and a.shape[0] != B:
            raise ValueError(f"every tensor input needs the same batch size; got {a.shape[0]} and {B}")
    return B


def _all_resume_names(model) -> set[str]:
    """Every hook the resume protocol may read, for every step (and inner index)."""
    sizes: dict[str, int] = {}
    for name in model.hook_dict:
        for loop, i in loop_indices(name).items():
            sizes[loop] = max(sizes.get(loop, 0), i + 1)
    size = sizes.get(model.resume_loop, 0)
    names = {n for t in range(size + 1) for n in model.resume_names(t)}
    inner = getattr(model, "resume_inner", None)
    for i in range(1, sizes.get(inner, 0) if inner else 0):
        names |= {n for t in range(size) for n in model.resume_names(t, i)}
    return names


def _resume_point(model, name: str) -> tuple[int, int] | None:
    """(step, inner index) a site's copies can start from; None for hooks outside the loop."""
    idx = loop_indices(name)
    t = idx.get(model.resume_loop)
    if t is None:
        return None
    inner = getattr(model, "resume_inner", None)
    return t, (idx.get(inner, 0) if inner else 0)


def _base_run(model, args: tuple, fk: dict, keep: Callable[[str], bool]):
    """One forward: (output, cache of the hooks ``keep`` selects, every fired hook's shape,
    bytes per batch row of the largest loop step)."""
    cache: dict[str, Tensor] = {}
    shapes: dict[str, tuple] = {}
    nbytes: dict[Any, int] = {}

    def record(act: Tensor, hook) -> None:
        if not torch.is_tensor(act):
            return
        shapes[hook.name] = tuple(act.shape)
        idx = loop_indices(hook.name)
        step = next(iter(idx.values()), None)
        nbytes[step] = nbytes.get(step, 0) + act.numel() * act.element_size()
        if keep(hook.name):
            cache[hook.name] = act

    with torch.no_grad():
        out = model.run_with_hooks(*args, fwd_hooks=[(lambda n: True, record)], **fk)
    B = args[0].shape[0]
    return out, cache, shapes, max(nbytes.values(), default=0) // max(1, B)


def _metric(metric: Metric, out, B: int, what: str) -> Tensor:
    return _check_metric(metric(out), B, what).detach().float().cpu()


def _check_metric(m, B: int, what: str) -> Tensor:
    """The metric's value as a [B] tensor, or a clear error."""
    if isinstance(m, np.ndarray):
        m = torch.from_numpy(m)
    if not torch.is_tensor(m) or tuple(m.shape) != (B,):
        got = list(m.shape) if hasattr(m, "shape") else type(m).__name__
        raise ValueError(f"metric must return a tensor of shape [batch] = [{B}] (one number per problem); "
                         f"on the {what} run it returned {got}")
    return m


def _denominator(M_clean: float, M_corr: float) -> float:
    d = M_clean - M_corr
    if not np.isfinite(d) or abs(d) < 1e-9 * max(1.0, abs(M_clean), abs(M_corr)):
        raise ValueError(f"the metric is the same on clean ({M_clean:.6g}) and corrupted ({M_corr:.6g}) inputs, "
                         "so normalised scores are undefined; choose inputs or a metric that tell them apart")
    return d


def _metric_per_copy(metric: Metric, out, k: int, B: int) -> Tensor:
    values = torch.empty(k, B)
    for j in range(k):
        values[j] = _metric(metric, _slice(out, j * B, (j + 1) * B, k * B), B, "patched")
    return values


def _tree(fn: Callable[[Tensor], Tensor], obj):
    if torch.is_tensor(obj):
        return fn(obj)
    if isinstance(obj, LoopState):
        return LoopState(obj.t, _tree(fn, obj.carry), _tree(fn, obj.record), obj.inner)
    if isinstance(obj, dict):
        return {k: _tree(fn, v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_tree(fn, v) for v in obj)
    if is_dataclass(obj) and not isinstance(obj, type):
        return replace(obj, **{f.name: _tree(fn, getattr(obj, f.name)) for f in fields(obj) if f.init})
    return obj


def _repeat(obj, k: int):
    """Every batch-first tensor repeated k times along the batch (copy-major)."""
    return _tree(lambda x: x.repeat(k, *[1] * (x.ndim - 1)) if x.ndim else x, obj)


def _take(obj, rows: Tensor):
    return _tree(lambda x: x[rows] if x.ndim else x, obj)


def _slice(obj, a: int, b: int, n: int):
    return _tree(lambda x: x[a:b] if x.ndim and x.shape[0] == n else x, obj)


def _rows(copies: Tensor, B: int) -> Tensor:
    """Batch rows of the selected copies: [copies * B] indices."""
    idx = copies.nonzero().squeeze(1)
    return (idx[:, None] * B + torch.arange(B)[None, :]).reshape(-1)


def _settled(carry: dict, reference: dict, k: int, B: int) -> Tensor:
    """[k] bool: copies whose carry equals the reference carry in every row, bit for bit."""
    same = torch.ones(k, dtype=torch.bool)
    for key, ref in reference.items():
        c = carry[key].reshape(k, B, -1)
        same &= (c == ref.reshape(1, B, -1)).all(-1).all(-1)
    return same


def _run_until(model, args: tuple, kwargs: dict, hooks: list, names: list[str]):
    """Run with ``hooks`` and stop once every hook in ``names`` has fired.

    Returns (None, {name: activation}) when stopped, or (output, partial cache) when the
    forward finished first.
    """
    cache: dict[str, Tensor] = {}
    remaining = set(names)

    def save(act: Tensor, hook) -> None:
        cache[hook.name] = act
        remaining.discard(hook.name)
        if not remaining:
            raise _Stop

    try:
        with _hooked(model, hooks + [(n, save) for n in names]):
            out = model(*args, **kwargs)
    except _Stop:
        return None, cache
    return out, cache


@contextmanager
def _hooked(model, hooks: list[tuple[str, Callable]]):
    """Attach forward hooks by exact name and remove exactly those afterwards.

    The same as ``model.hooks(fwd_hooks=...)`` for string names, but leaving the context
    costs O(hooks attached) instead of a pass over every hook point of the model, which
    matters when a patching run enters it hundreds of times.
    """
    handles = []
    with exclusive(model):  # other threads' forwards wait while these hooks are attached
        try:
            for name, fn in hooks:
                if hasattr(model, "check_hook_name"):
                    model.check_hook_name(name)
                point = model.mod_dict[name]
                handles.append((point, point.add_hook(fn, dir="fwd")))
            yield model
        finally:
            for point, handle in handles:
                handle.hook.remove()
                point.fwd_hooks.remove(handle)


def _frame(rows: list[dict]) -> pd.DataFrame:
    df = pd.DataFrame(rows)
    for col in ("pos", "head"):
        if col in df and df[col].isna().all():
            df = df.drop(columns=col)
        elif col in df:
            df[col] = df[col].astype("Int64")
    return df
