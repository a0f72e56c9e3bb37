"""The runner of exact patching (``workbench.patching.patch``): chunks of patched copies of the
base input run in one batch, resumed at their site's loop step from the base run's recorded
state, retired once their loop state equals the base run's, and the batch refilled with the next
step's sites; plus the hooks that write each copy's patch and the helpers they share."""

from __future__ import annotations

import weakref
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from workbench.hooks import HookName, LoopState, exclusive, loop_sizes, map_tensors, repeat_batch
from workbench.runs import ablation_source, metric_per_copy
from workbench.sites import Site


class _Stop(Exception):
    """Raised from a hook to end a forward pass once the hooks we need have fired."""


class Sources:
    """The activation written into each site: clean, zeros, a mean, or the corrupted value."""

    def __init__(self, ablation, clean_cache, corr_cache, base_cache, given=None):
        self.ablation, self.clean, self.corr, self.base = ablation, clean_cache, corr_cache, base_cache
        self._memo: dict[str, Tensor] = dict(given or {})

    def __getitem__(self, name: str) -> Tensor:
        if name not in self._memo:
            self._memo[name] = ablation_source(self.ablation, name, self.clean, self.corr, self.base[name])
        return self._memo[name]


class Runner:
    """Runs chunks of patched copies of the base input and returns their metrics [copies, batch]."""

    def __init__(self, model, base_args, base_cache, fk, metric, B, sources, resume_names, stats):
        self.model, self.args, self.cache, self.fk = model, base_args, base_cache, fk
        self.metric, self.B, self.sources, self.stats = metric, B, sources, stats
        if resume_names:
            loop = model.resume_loop
            self.T = loop_sizes((n for n in resume_names if n in base_cache), loops=(loop,)).get(loop, 0)
            self.settles = getattr(model, "resume_settles", True)
            self.step_of = lambda n: HookName.parse(n, (loop,)).loop(loop)  # noqa: E731
            self._refs: dict[int, LoopState] = {}
        self._repeated: dict[int, tuple] = {}
        self._later: dict[int, list[str]] = {}

    def hooks(self, sites: Sequence[Site]) -> list[tuple[str, Callable]]:
        """Patch hooks for ``len(sites)`` copies, copy j patched at ``sites[j]``."""
        return self.hooks_for(list(enumerate(sites)), len(sites))

    def hooks_for(self, patched: Sequence[tuple[int, Site]], k: int) -> list[tuple[str, Callable]]:
        """Patch hooks for a batch of k copies: copy j patched at site s for each (j, s); the others untouched."""
        by_name: dict[str, list[tuple[int, Site]]] = {}
        for j, s in patched:
            by_name.setdefault(s.name, []).append((j, s))
        return [(name, patch_hook(entries, self.sources[name], k, self.B))
                for name, entries in by_name.items()]

    def full(self, sites: Sequence[Site]) -> Tensor:
        """Full re-runs of k patched copies in one batch."""
        k = len(sites)
        with hooked(self.model, self.hooks(sites)):
            out = self.model(*repeat_batch(self.args, k), **self.fk)
        self.stats["forwards"] += 1
        self.stats["copies_run"] += k
        return metric_per_copy(self.metric, out, k, self.B)

    def resumed(self, t: int, inner: int, sites: Sequence[Site]) -> tuple[Tensor, list[int]]:
        """Patched copies that start at step t (block ``inner``) from the base run's state.

        The copies run one step at a time; after each step every copy whose carry equals the
        base run's is *settled*: its later steps are the base run's, so its output is
        assembled from its own record up to here and the base run's record after.
        Returns (metrics [copies, batch], the last loop step each copy ran).
        """
        model, k, B = self.model, len(sites), self.B
        values = torch.empty(k, B)
        ends = [max(t, self.T - 1)] * k
        alive = torch.arange(k)  # copies still running
        args = self._args(k)
        kwargs = dict(self.fk)
        if t > 0 or inner > 0:
            state = model.resume_state(self.cache, t, inner) if inner else model.resume_state(self.cache, t)
            kwargs["start"] = repeat_batch(state, k)
        hooks = self.hooks(sites)
        if not self.settles:  # a continuous carry never returns to the base run's: run to the end at once
            with hooked(model, hooks):
                out = model(*args, **kwargs)
            self.stats["forwards"] += 1
            self.stats["copies_run"] += k
            return metric_per_copy(self.metric, out, k, B), ends
        own: dict[str, Tensor] = {}  # what the alive copies recorded at steps >= t
        u = t
        while True:
            produced = [] if u >= self.T else [n for n in model.resume_names(u + 1) if self.step_of(n) == u]
            out, step_cache = _run_until(model, args, kwargs, hooks if u == t else [], produced)
            self.stats["forwards"] += 1
            if out is not None:  # the run ended (the last step, or a fixed point)
                values[alive] = metric_per_copy(self.metric, out, len(alive), B)
                self.stats["copies_run"] += len(alive)
                return values, ends
            own.update(step_cache)
            n = len(alive)
            state = model.resume_state(self._mix(own, u + 1, n), u + 1)
            settled = _settled(state.carry, self._reference(u + 1).carry, n, B)
            if settled.any():
                rows, m = _rows(settled, B), int(settled.sum())
                values[alive[settled]] = self._finish({name: v[rows] for name, v in own.items()}, m)
                for j in alive[settled].tolist():
                    ends[j] = u
                self.stats["copies_settled"] += m
            if settled.all():
                return values, ends
            rows = _rows(~settled, B)
            alive, args = alive[~settled], _take(args, rows)
            own = {name: v[rows] for name, v in own.items()}
            kwargs = {**self.fk, "start": _take(state, rows)}
            u += 1

    def sweep(self, todo: dict[tuple[int, int], list[int]], sites: Sequence[Site], copies: int,
              progress: bool = False) -> dict[int, tuple[Tensor, int]]:
        """Every looped site in one pass over the loop steps, the batch refilled as copies settle.

        At step u one batch holds the copies still running from earlier steps and the copies
        whose site lies in step u at block 0 (sites inside step u, at block i > 0, start there:
        one more forward per such block); at most ``copies`` copies per forward. After the
        step, settled copies leave and their outputs are assembled from their own records and
        the base run's. So the batch does not shrink to a few stragglers per resume point, and
        each loop step is entered once for all sites, not once per resume point.

        ``todo``: {(step, inner): site indices}. Returns {site index: (metrics [batch], the last
        loop step its copy ran)}.
        """
        model, B = self.model, self.B
        done: dict[int, tuple[Tensor, int]] = {}
        alive: list[int] = []  # site index of each running copy, in row order
        own: dict[str, Tensor] = {}  # resume entries of steps < u of the running copies [copies * B, ...]
        steps = range(min(t for t, _ in todo), self.T)
        for u in tqdm(steps, disable=not progress, desc="patch", leave=False):
            groups = []  # per start block: (site indices, index of the first new copy, state entering step u, record)
            new = todo.get((u, 0), [])
            if alive or new:
                entering = {name: torch.cat([own[name], repeat_batch(self.cache[name], len(new))])
                            if alive else repeat_batch(self.cache[name], len(new))
                            for name in self._kept(u)}  # new copies: the base run's record
                state = model.resume_state(entering, u) if u else None
                groups.append((alive + new, len(alive), state, entering))
            for (t, inner), idx in sorted(todo.items()):
                if t == u and inner:
                    groups.append((idx, 0, repeat_batch(model.resume_state(self.cache, u, inner), len(idx)), None))
            alive, parts = [], []
            for ids, first_new, state, entering in groups:
                for a in range(0, len(ids), copies):  # forwards of at most ``copies`` copies
                    chunk = ids[a: a + copies]
                    rows = torch.arange(a * B, (a + len(chunk)) * B)
                    start = None if state is None else (_take(state, rows) if len(ids) > copies else state)
                    patched = [(j, sites[i]) for j, i in enumerate(chunk) if a + j >= first_new]
                    out, step_cache = self._step(u, chunk, patched, start)
                    if out is not None:  # the run ended early (a fixed point): these copies are done
                        finished = metric_per_copy(self.metric, out, len(chunk), B)
                        for j, i in enumerate(chunk):
                            done[i] = (finished[j], u)
                        self.stats["copies_run"] += len(chunk)
                        continue
                    before = {name: (v[rows] if len(ids) > copies else v) for name, v in entering.items()} \
                        if entering is not None else {name: repeat_batch(self.cache[name], len(chunk))
                                                      for name in self._kept(u)}
                    parts.append({**before, **step_cache})
                    alive += chunk
            if not alive:
                own = {}
                continue
            own = {name: torch.cat([p[name] for p in parts]) if len(parts) > 1 else parts[0][name]
                   for name in self._kept(u + 1)}
            n = len(alive)
            state = model.resume_state(own, u + 1)
            settled = _settled(state.carry, self._reference(u + 1).carry, n, B)
            self.stats["copies_settled"] += int(settled.sum())
            if u + 1 == self.T:  # the last step: every copy is done
                self.stats["copies_run"] += int((~settled).sum())
                settled = torch.ones(n, dtype=torch.bool)
            if settled.any():
                rows, m = _rows(settled, B), int(settled.sum())
                finished = self._finish(own if m == n else {name: v[rows] for name, v in own.items()}, m)
                for j, i in enumerate(torch.tensor(alive)[settled].tolist()):
                    done[i] = (finished[j], u)
                if not settled.all():
                    rows = _rows(~settled, B)
                    own = {name: v[rows] for name, v in own.items()}
                    alive = torch.tensor(alive)[~settled].tolist()
                else:
                    alive, own = [], {}
        return done

    def _step(self, u: int, ids: list[int], patched: list[tuple[int, Site]], start):
        """Loop step u of ``len(ids)`` copies from ``start`` (None: from the input), with copy j
        patched at site s for (j, s) in ``patched``; stops once the step's resume entries fired.
        Returns (output or None, {name: activation} of the step)."""
        kwargs = dict(self.fk)
        if start is not None:
            kwargs["start"] = start
        hooks = self.hooks_for(patched, len(ids))
        self.stats["forwards"] += 1
        return _run_until(self.model, self._args(len(ids)), kwargs, hooks, self._produced(u))

    def _produced(self, u: int) -> list[str]:
        """The resume entries that loop step u writes (none past the last step)."""
        if u >= self.T:
            return []
        return [n for n in self._later_names(u + 1) if self.step_of(n) == u]

    def _kept(self, u: int) -> list[str]:
        """The entries of steps < u a running copy carries: all that resuming at a later step or
        assembling its output at the end reads."""
        return [n for n in self._later_names(u) if self.step_of(n) < u]

    def _later_names(self, u: int) -> list[str]:
        """Every name ``resume_names(v)`` reads for v = u..T (in a stable order)."""
        if u not in self._later:
            names = dict.fromkeys(n for v in range(u, self.T + 1) for n in self.model.resume_names(v))
            self._later[u] = list(names)
        return self._later[u]

    def _finish(self, own: dict, m: int) -> Tensor:
        """Metrics [m, batch] of m copies whose own records are ``own`` and whose later steps are
        the base run's: the output is assembled by resuming at the end (nothing runs)."""
        final = self._mix(own, self.T, m)
        out = self.model(*self._args(m), **{**self.fk, "start": self.model.resume_state(final, self.T)})
        return metric_per_copy(self.metric, out, m, self.B)

    def _args(self, k: int) -> tuple:
        """The base inputs repeated for k copies (kept: the sweep asks for the same sizes again)."""
        if k not in self._repeated:
            if len(self._repeated) > 64:
                self._repeated.clear()
            self._repeated[k] = repeat_batch(self.args, k)
        return self._repeated[k]

    def _mix(self, own: dict, t: int, n: int) -> dict:
        """What ``resume_state(., t)`` reads: the copies' own entries, else the base run's (repeated)."""
        return {name: own[name] if name in own else repeat_batch(self.cache[name], n)
                for name in self.model.resume_names(t)}

    def _reference(self, t: int) -> LoopState:
        if t not in self._refs:
            self._refs[t] = self.model.resume_state(self.cache, t)
        return self._refs[t]


def patch_hook(entries: list[tuple[int, Site]], src: Tensor, k: int, B: int) -> Callable:
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
def bands(todo: dict, copies: int, T: int, waste: float = 1.0) -> list[tuple[Any, list[int]]]:
    """Chunks of sites with different resume points, each started at its earliest point.

    For models whose patched copies run to the end in one forward (``resume_settles = False``):
    a copy whose site lies later than the chunk's start recomputes the base run up to its site,
    which is exact (the prefix is the base run's) and costs ``t_site - t_start`` loop steps; a
    new chunk starts once that recomputation would exceed ``waste`` of the chunk's own work
    (``T - t`` steps per copy), so sites spread over a long run are not all started at step 0,
    and sites close together share one large forward.
    """
    chunks = [(None, idx[i: i + copies]) for idx in [todo.get(None, [])] for i in range(0, len(idx), copies)]
    order = [(key, i) for key in sorted(k for k in todo if k is not None) for i in todo[key]]
    band: list[int] = []
    start, work, extra = None, 0, 0
    for key, i in order:
        need, over = max(1, T - key[0]), 0 if start is None else key[0] - start[0]
        if band and (len(band) >= copies or extra + over > waste * (work + need)):
            chunks.append((start, band))
            band, start, work, extra = [], None, 0, 0
        if start is None:
            start, over = key, 0
        band.append(i)
        work, extra = work + need, extra + over
    if band:
        chunks.append((start, band))
    return chunks


_RESUME_NAMES: "weakref.WeakKeyDictionary[Any, frozenset[str]]" = weakref.WeakKeyDictionary()


def all_resume_names(model) -> frozenset[str]:
    """Every hook the resume protocol may read, for every step (and inner index); computed once
    per model (it depends only on the hook points the model was built with)."""
    try:
        return _RESUME_NAMES[model]
    except (KeyError, TypeError):
        pass
    names = frozenset(_resume_names_of(model))
    try:
        _RESUME_NAMES[model] = names
    except TypeError:
        pass
    return names


def _resume_names_of(model) -> set[str]:
    sizes = loop_sizes(model.hook_dict, loops=None)  # the resume loop and the inner one
    size = sizes.get(model.resume_loop, 0)
    names = {n for t in range(size + 1) for n in model.resume_names(t)}
    inner = getattr(model, "resume_inner", None)
    for i in range(1, sizes.get(inner, 0) if inner else 0):
        names |= {n for t in range(size) for n in model.resume_names(t, i)}
    return names


def resume_point(model, name: str) -> tuple[int, int] | None:
    """(step, inner index) a site's copies can start from; None for hooks outside the loop."""
    idx = HookName.parse(name).indices
    t = idx.get(model.resume_loop)
    if t is None:
        return None
    inner = getattr(model, "resume_inner", None)
    return t, (idx.get(inner, 0) if inner else 0)


def _take(obj, rows: Tensor):
    return map_tensors(lambda x: x[rows] if x.ndim else x, obj)


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
        with hooked(model, hooks + [(n, save) for n in names]):
            out = model(*args, **kwargs)
    except _Stop:
        return None, cache
    return out, cache


@contextmanager
def hooked(model, hooks: list[tuple[str, Callable]]):
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

