"""Loop-indexed hook points on top of TransformerLens.

TransformerLens keeps only the last call of a HookPoint that fires inside a loop
(``run_with_cache`` overwrites ``cache[hook.name]``). Models in this workbench give every
loop iteration its own HookPoints instead: a ``nn.ModuleList`` of small hook containers,
one per step, so a single flat name space serves ``run_with_cache``, ``run_with_hooks``,
``model.hooks(...)``, ``names_filter`` and ``ActivationCache`` unchanged::

    steps.{t}.blocks.{l}.hook_resid_post        # recurrent transformer, step t, layer l
    time.{t}.hook_theta                         # sequence position t processed one at a time
    time.{t}.ponder.{n}.hook_halt               # ACT: ponder step n at time t

The one grammar of these names (``HookName``, ``template``, ``loop_sizes``, ``split_loop``:
sites, patching and attribution read names only through it) is in ``workbench.hook_names`` and
reached from here too; this module holds the base class of the hooked models and the resume
protocol (``LoopState``, ``Resumable``) that lets an analysis restart a recorded run at step t.

Weights are shared across steps; only the HookPoints are per step. A model passes the
hook container of step ``t`` into its (shared) modules, which call ``hooks.hook_x(x)``.

Example::

    >>> from transformer_lens import ActivationCache
    >>> out, cache = model.run_with_cache(tokens)
    >>> resid = stack(cache, "blocks.1.hook_resid_post", loop="steps")   # [steps, batch, pos, d]
    >>> ActivationCache(cache, model)["steps.0.hook_input"].shape
    >>> step_cache(cache, 2, model=model)["resid_post", 1]     # TL shorthand on one loop step

A model shared between threads (the explorer caches one per process) is safe to use from
all of them: ``hooks(...)``, ``run_with_hooks`` and ``run_with_cache`` hold the model's
re-entrant lock for as long as their hooks are attached, and every call of the model takes
it, so a plain forward in another thread waits until those hooks are gone, while the thread
that attached them calls the model freely inside its context. Hooks attached with
``add_hook`` outside such a context stay on the model for every thread until removed: hold
``model.exclusive()`` around them.
"""

from __future__ import annotations

import difflib
import numbers
import threading
from collections.abc import Callable, Iterable, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, fields, is_dataclass, replace
from typing import Any, Optional, Protocol, Union, runtime_checkable

import torch
from torch import nn
from transformer_lens import HookedRootModule
from transformer_lens.hook_points import HookPoint

from workbench.hook_names import LOOPS, HookName, UnknownHookError, loop_sizes, split_loop, template
from workbench.inputs import InputTypeError

__all__ = [
    "LOOPS",
    "HookName",
    "HookPoint",
    "HookedRecurrentModule",
    "LoopState",
    "Resumable",
    "UnknownHookError",
    "exclusive",
    "loop_sizes",
    "map_tensors",
    "repeat_batch",
    "resumable",
    "split_loop",
    "stack",
    "step_cache",
    "template",
]

NameOrFilter = Union[str, Callable[[str], bool]]


# ------------------------------------------------------------------ the resume protocol
@dataclass
class LoopState:
    """The state of a recurrent run entering loop step ``t`` (see ``Resumable``).

    ``carry``: what step t reads, the only thing the future depends on besides the inputs;
    ``record``: the outputs of steps < t needed to assemble the run's output; ``inner``:
    resume inside step t at this index of the model's inner loop (``resume_inner``). Every
    tensor in it is batch first. ``t`` may equal the number of steps: then nothing runs and
    the output is assembled from the record.
    """

    t: int
    carry: dict[str, torch.Tensor]
    record: dict[str, Any] = field(default_factory=dict)
    inner: int = 0

    def repeat(self, k: int) -> "LoopState":
        """Every tensor repeated k times along the batch, copy-major (a batch of k copies)."""
        return repeat_batch(self, k)


@runtime_checkable
class Resumable(Protocol):
    """What a model offers so that a recorded run can be restarted at loop step t.

    Patching reuses the shared prefix of a recurrent run with it (``workbench.patching``);
    ``models.reasoner.Reasoner``, ``models.act.ACT`` and ``models.warp.Warp`` (recurrent mode)
    implement it::

        model.resume_loop = "steps"                # the loop whose index t prefixes hook names
        model.resume_names(t) -> list[str]         # hooks that resume_state(cache, t) reads; all
                                                   # of them fire at loop steps < t
        model.resume_state(cache, t) -> LoopState  # the state entering step t of a recorded run
        model(*inputs, start=state, **kwargs)      # continue from it; the output equals the output
                                                   # of the full run that produced the cache
        model.resume_inner = "blocks"              # optional: an inner loop a step can resume in;
                                                   # then resume_names(t, i) / resume_state(cache, t, i)
                                                   # start step t at inner index i (skipping 0..i-1)
        model.resume_settles = False               # optional (default True): the carry is continuous, so
                                                   # a patched run never rejoins the recorded one and
                                                   # patching runs it to the end in one forward
        model.joins(forward_kwargs) -> bool        # optional: model(*inputs, join=fn, **forward_kwargs)
                                                   # calls fn(t) at the start of each loop step t (a model
                                                   # with resume_inner: fn(t, i) at each inner step i; one
                                                   # with hook_rows adds running=[rows] bool, the rows that
                                                   # take the step) and appends copies of the rows it
                                                   # returns ([k] index or None), which run on from
                                                   # there; a copy's output before is its row's.
                                                   # Patching then runs the base runs and
                                                   # every copy in one forward (Warp's time steps, ACT's
                                                   # ponder steps). Its output may offer output_rows(a, b)
                                                   # (rows a..b-1 alone), and its hooks may write rows in place
        model.hook_rows(output, name) -> [batch] bool  # optional, for hooks that fire only while some row
                                                   # needs them (ACT): the rows whose run reaches the hook;
                                                   # a run of any set of rows fires it iff one of them does

    ``isinstance(model, Resumable)`` (or ``resumable(model)``) says whether a model has it.
    """

    resume_loop: str

    def resume_names(self, t: int, inner: int = 0) -> list[str]: ...

    def resume_state(self, cache: Mapping[str, torch.Tensor], t: int, inner: int = 0) -> LoopState: ...

    def __call__(self, *inputs: Any, start: Optional[LoopState] = None, **kwargs: Any) -> Any: ...


def resumable(model: Any) -> bool:
    """Does the model implement the resume protocol (``Resumable``)?"""
    return isinstance(model, Resumable)


def joining_rows(join: Callable, batch: int, *at: int, **context: Any) -> Optional[torch.Tensor]:
    """``join(*at, **context)`` checked (``at``: the loop step, and the inner step for a model that
    joins there; ``context``: what else the model tells it, ACT's ``running`` rows): None, or a
    [k] integer index of rows of the batch (k >= 1)."""
    rows = join(*at, **context)
    if rows is None:
        return None
    call = f"join({', '.join(map(str, at))})"
    if not torch.is_tensor(rows) or rows.dim() != 1 or rows.dtype not in (torch.int64, torch.int32):
        kind, shape = getattr(rows, "dtype", type(rows).__name__), list(getattr(rows, "shape", []))
        raise InputTypeError(f"{call} must return None or a 1-d integer tensor of rows; got {kind} of shape {shape}")
    listed = rows.tolist()
    if listed and not (0 <= min(listed) and max(listed) < batch):
        raise ValueError(f"{call} returned rows {listed}; allowed 0..{batch - 1} (the batch at that step)")
    return rows.long() if listed else None


def map_tensors(fn: Callable[[torch.Tensor], torch.Tensor], obj: Any) -> Any:
    """``obj`` with every tensor in it replaced by ``fn(tensor)``: through dicts, lists, tuples
    and dataclasses (a ``LoopState``, a model's output); anything else is kept as is."""
    if torch.is_tensor(obj):
        return fn(obj)
    if isinstance(obj, dict):
        return {k: map_tensors(fn, v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(map_tensors(fn, v) for v in obj)
    if is_dataclass(obj) and not isinstance(obj, type):
        return replace(obj, **{f.name: map_tensors(fn, getattr(obj, f.name)) for f in fields(obj) if f.init})
    return obj


def repeat_batch(obj: Any, k: int) -> Any:
    """Every batch-first tensor in ``obj`` repeated k times along the batch (copy-major)."""
    return map_tensors(lambda x: x.repeat(k, *[1] * (x.ndim - 1)) if x.ndim else x, obj)


class HookedRecurrentModule(HookedRootModule):
    """A ``HookedRootModule`` whose hook names carry loop indices.

    Subclasses build their HookPoints (one container per loop step) and call
    ``self.setup()`` at the end of ``__init__``. On top of TransformerLens this adds:

    * ``loop_sizes``: ``{"steps": 40}``, read off the hook names (``loop_prefixes`` are the
      names that count as loops, ``LOOPS`` by default);
    * name checking: an unknown hook name raises ``UnknownHookError`` listing the
      closest valid names (TransformerLens would raise a bare ``KeyError`` or, for a
      ``names_filter`` list, silently cache nothing);
    * ``check_steps(n)``: a clear error when asked to run more steps than were built;
    * thread safety: ``exclusive()`` is the model's re-entrant lock; ``hooks(...)`` (and so
      ``run_with_hooks`` / ``run_with_cache``) holds it while its hooks are attached and
      every call of the model takes it, so hooks attached in one thread never alter a
      forward running in another.
    """

    loop_prefixes: tuple[str, ...] = LOOPS

    # ------------------------------------------------------------ threads
    @property
    def hook_lock(self) -> threading.RLock:
        """The re-entrant lock that guards this model's hooks (created on first use)."""
        lock = self.__dict__.get("_hook_lock")
        if lock is None:  # dict.setdefault is atomic: two threads get the same lock
            lock = self.__dict__.setdefault("_hook_lock", threading.RLock())
        return lock

    @contextmanager
    def exclusive(self):
        """Hold the model for this thread: other threads' forwards and hook contexts wait.

        Re-entrant: the holder may call the model, ``run_with_hooks`` or ``hooks`` inside.
        """
        with self.hook_lock:
            yield self

    def __call__(self, *args: Any, **kwargs: Any):
        with self.hook_lock:
            return super().__call__(*args, **kwargs)

    def __getstate__(self) -> dict:  # copy.deepcopy / pickle: a lock cannot be copied, a new one is made
        state = self.__dict__.copy()
        state.pop("_hook_lock", None)
        return state

    def setup(self) -> None:
        super().setup()
        self.loop_sizes: dict[str, int] = loop_sizes(self.hook_dict, self.loop_prefixes)
        self._templates = sorted({template(n) for n in self.hook_dict})

    # ----------------------------------------------------------------- names
    def hook_templates(self) -> list[str]:
        """Every hook name with its indices replaced by placeholders (a short menu)."""
        return list(self._templates)

    def check_hook_name(self, name: str) -> None:
        """Raise ``UnknownHookError`` naming the closest valid hook names."""
        if name in self.hook_dict:
            return
        for loop, idx in HookName.parse(name, self.loop_prefixes).loops:
            size = self.loop_sizes.get(loop)
            if size is not None and idx >= size:
                raise UnknownHookError(
                    f"unknown hook {name!r}: loop '{loop}' has indices 0..{size - 1} "
                    f"(this model was built with {size} of them)"
                )
        close = difflib.get_close_matches(template(name), self._templates, n=5, cutoff=0.5)
        hint = ", ".join(close) if close else ", ".join(self._templates[:8]) + ", ..."
        raise UnknownHookError(f"unknown hook {name!r}; closest valid names: {hint}")

    def _check_names(self, names: Iterable[NameOrFilter]) -> None:
        for name in names:
            if isinstance(name, str):
                self.check_hook_name(name)

    def check_steps(self, n: int, loop: str = "steps", param: str = "steps") -> None:
        """Raise ``ValueError`` unless 1 <= n <= the loop iterations built (``InputTypeError``,
        also a ``ValueError``, for a non-integer): a run takes at least one step."""
        size = self.loop_sizes.get(loop, 0)
        if isinstance(n, bool) or not isinstance(n, numbers.Integral):
            raise InputTypeError(f"{param} must be an integer in 1..{size}; got {type(n).__name__} {n!r}")
        if n < 1 or n > size:
            raise ValueError(
                f"{param}={n} is out of range: this model has hook points for "
                f"{size} '{loop}' iterations (0..{size - 1}); allowed {param}: an integer in (0, {size}], "
                f"i.e. 1..{size}. Build the model with a larger max_steps to run longer."
            )

    # ------------------------------------------- TransformerLens entry points
    @contextmanager
    def hooks(self, fwd_hooks=(), bwd_hooks=(), reset_hooks_end=True, clear_contexts=False):
        """TransformerLens's ``hooks`` context, holding the model's lock while the hooks are on.

        The same hooks, levels and removal as TransformerLens's, but leaving the context visits only
        the hook points this context attached to (TransformerLens walks every hook point of the
        model, thousands on a looped model): the cost is proportional to the hooks attached.
        """
        fwd_hooks, bwd_hooks = list(fwd_hooks), list(bwd_hooks)
        self._check_names(name for name, _ in [*fwd_hooks, *bwd_hooks])
        with self.hook_lock:
            touched: dict[int, HookPoint] = {}
            try:
                self.context_level += 1
                for direction, pairs in (("fwd", fwd_hooks), ("bwd", bwd_hooks)):
                    for name, hook in pairs:
                        points = [self.mod_dict[name]] if isinstance(name, str) else \
                            [hp for n, hp in self.hook_dict.items() if name(n)]
                        for hp in points:
                            hp.add_hook(hook, dir=direction, level=self.context_level)
                            touched[id(hp)] = hp
                yield self
            finally:
                if reset_hooks_end:
                    if clear_contexts:
                        self.clear_contexts()
                    for hp in touched.values():
                        hp.remove_hooks("both", including_permanent=False, level=self.context_level)
                    self.is_caching = False
                self.context_level -= 1

    def add_hook(self, name: NameOrFilter, hook, dir="fwd", is_permanent=False, level=None, prepend=False):
        self._check_names([name])
        return super().add_hook(name, hook, dir=dir, is_permanent=is_permanent, level=level, prepend=prepend)

    def get_caching_hooks(self, names_filter=None, *args: Any, **kwargs: Any):
        if isinstance(names_filter, str):
            self._check_names([names_filter])
        elif isinstance(names_filter, (list, tuple)):
            self._check_names(names_filter)
            names_filter = list(names_filter)
        return super().get_caching_hooks(names_filter, *args, **kwargs)


def stack(
    cache: Mapping[str, torch.Tensor],
    name: str,
    loop: str = "steps",
    return_steps: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, list[int]]:
    """Stack ``{loop}.{t}.{name}`` over the loop index: returns ``[n_steps, *shape]``.

    ``loop`` is the literal prefix before the index: ``"steps"``, ``"time"``, or a nested
    prefix such as ``"time.3.ponder"``. Only steps present in the cache are stacked
    (steps that did not run are absent, never padded). By default the steps must be
    0..T-1 without gaps; with ``return_steps=True`` any set is allowed and the step
    indices are returned as well.

    >>> resid = stack(cache, "blocks.0.hook_resid_post", loop="steps")  # [T, batch, pos, d]
    """
    keys = cache.keys()
    split = {key: s for key in keys if (s := split_loop(key, loop))}
    found = sorted((t, key) for key, (t, rest) in split.items() if rest == name)
    if not found:
        under = sorted({rest for _, rest in split.values()})
        if not under:
            loops = sorted({template(k).split(".{")[0] for k in keys})
            raise KeyError(f"no cached names under loop '{loop}'; loops in this cache: {loops}")
        close = difflib.get_close_matches(name, under, n=5, cutoff=0.3) or under[:8]
        raise KeyError(f"'{name}' is not cached under loop '{loop}'; closest cached names: {close}")
    steps = [t for t, _ in found]
    if not return_steps and steps != list(range(len(steps))):
        raise ValueError(
            f"'{loop}.{{t}}.{name}' is cached for steps {steps}, not 0..{len(steps) - 1}; "
            "pass return_steps=True to stack a subset"
        )
    tensors = [cache[key] for _, key in found]
    shapes = {tuple(t.shape) for t in tensors}
    if len(shapes) > 1:
        raise ValueError(f"'{name}' has different shapes across steps {sorted(shapes)}; cannot stack")
    out = torch.stack(tensors)
    return (out, steps) if return_steps else out


@contextmanager
def exclusive(model):
    """``model.exclusive()`` for models that have it; a no-op context for any other module."""
    lock = getattr(type(model), "hook_lock", None)
    if lock is None:
        yield model
        return
    with model.hook_lock:
        yield model


class _StepConfig:
    """The ``cfg`` an ``ActivationCache`` of one loop step reads: the model's, with ``n_layers``
    (and ``n_heads``) filled in from the cached names when the model's config lacks them."""

    def __init__(self, cfg: Any, n_layers: int, n_heads: int | None):
        self._cfg, self.n_layers, self.n_heads = cfg, n_layers, n_heads
        for attr in ("n_layers", "n_heads"):
            if cfg is not None and getattr(cfg, attr, None) is not None:
                setattr(self, attr, getattr(cfg, attr))

    def __getattr__(self, name: str):
        cfg = self.__dict__.get("_cfg")
        if cfg is None or name.startswith("__"):
            raise AttributeError(name)
        return getattr(cfg, name)


class _StepModel:
    """What ``ActivationCache`` calls ``model``: the real model with a per-step ``cfg``."""

    def __init__(self, model: Any, cfg: _StepConfig):
        self._model, self.cfg = model, cfg

    def __getattr__(self, name: str):
        model = self.__dict__.get("_model")
        if model is None or name.startswith("__"):
            raise AttributeError(f"this step cache was made without a model; {name!r} needs one")
        return getattr(model, name)


def step_cache(cache: Mapping[str, torch.Tensor], t: int, loop: str = "steps", model: Any = None):
    """One loop step of a cache as a TransformerLens ``ActivationCache`` with the prefix dropped.

    ``{loop}.{t}.blocks.1.hook_resid_post`` becomes ``blocks.1.hook_resid_post``, so the
    shorthand of TransformerLens works on that step: ``sc["resid_post", 1]``,
    ``sc.stack_activation("resid_post")`` (``[layers, ...]``) and
    ``sc.accumulated_resid(apply_ln=False)`` (``[layers + 1, ...]``: each block's input,
    then the last block's output). ``loop`` is the literal prefix before the index
    (``"steps"``, ``"time"``, ``"time.0.ponder"``). ``model`` defaults to the cache's own
    (an ``ActivationCache`` carries it); the number of layers is read from ``model.cfg``
    or, failing that, from the cached ``blocks.{l}`` names. Steps that did not run raise a
    ``KeyError`` listing the steps that did.

    >>> _, cache = model.run_with_cache(tokens, steps=4)
    >>> sc = step_cache(cache, 2, model=model)
    >>> torch.equal(sc["resid_post", 1], cache["steps.2.blocks.1.hook_resid_post"])
    True
    """
    from transformer_lens import ActivationCache

    if model is None and isinstance(cache, ActivationCache):
        model = cache.model
    data = cache.cache_dict if isinstance(cache, ActivationCache) else cache
    split = {k: s for k in data if (s := split_loop(k, loop))}
    sub = {rest: data[k] for k, (step, rest) in split.items() if step == int(t)}
    if not sub:
        steps = sorted({step for step, _ in split.values()})
        raise KeyError(f"nothing cached under '{loop}.{int(t)}.'; cached steps of loop '{loop}': {steps}")
    layers = [i for k in sub if (i := HookName.parse(k, ("blocks",)).loop("blocks")) is not None]
    heads = None
    for k, v in sub.items():
        if k.endswith("attn.hook_pattern") and v.ndim == 4:
            heads = int(v.shape[1])
            break
    cfg = _StepConfig(getattr(model, "cfg", None), (max(layers) + 1) if layers else 0, heads)
    return ActivationCache(sub, _StepModel(model, cfg))


def hook_list(n: int, make: Callable[[], nn.Module]) -> nn.ModuleList:
    """One hook container per loop iteration: ``steps = hook_list(max_steps, StepHooks)``."""
    return nn.ModuleList(make() for _ in range(n))
