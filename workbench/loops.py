"""Per-call hook names for any PyTorch model's repeated submodule: ``loop_indexed``.

A model we did not write usually applies one submodule (a recurrent core, a cell, a block
stack) again and again. TransformerLens would keep only the last call of each HookPoint in
it. ``loop_indexed`` wraps the model, without editing its code, in a hooked model where
every call of the named submodule gets its own names::

    steps.{t}.hook_in            the core's first tensor argument at call t (the state entering step t)
    steps.{t}.hook_out           its output (the first tensor of a tuple): the state after step t
    steps.{t}.<name in core>     each HookPoint inside the core, e.g. steps.{t}.blocks.0.attn.hook_pattern
    steps.{t}.inner.{k}.…        a loop nested inside the core (its module is a submodule of the core)

HookPoints of the model outside every loop keep their own names. Calls are counted from 0
within one top-level forward (step t = the t-th call), and nested counters restart at each
call of the enclosing loop. Hook points are built up front for ``max_steps`` calls; a forward
that calls the core more often raises a ``ValueError`` naming ``max_steps``.

Example::

    >>> class Looped(nn.Module):                       # any model: prelude, core, coda
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.embed, self.core, self.head = nn.Linear(4, 8), nn.GRUCell(8, 8), nn.Linear(8, 2)
    ...     def forward(self, x, steps=5):
    ...         e, h = self.embed(x), torch.zeros(x.shape[0], 8)
    ...         for _ in range(steps):
    ...             h = self.core(e, h)
    ...         return self.head(h)
    >>> model = loop_indexed(Looped(), loops={"steps": "core"}, max_steps=16)
    >>> out, cache = model.run_with_cache(torch.randn(3, 4), steps=5)
    >>> stack(cache, "hook_out", loop="steps").shape    # the state after every step
    torch.Size([5, 3, 8])

How it works: during a forward of the wrapper, the core's ``forward`` is shadowed by a
function that counts the call, swaps the core's own HookPoints for the ones of step t (in
their parents' ``_modules``), runs ``hook_in``, the original forward and ``hook_out``, and
swaps them back. Outside the wrapper's forward the model is exactly as it was: calling it
directly runs its own code with its own HookPoints. Parameters are the model's (shared, not
copied). The wrapper is a ``HookedRecurrentModule``: ``run_with_cache``, ``run_with_hooks``,
``hooks(...)``, ``names_filter``, ``workbench.hooks.stack``, ``workbench.patching.patch`` and
``workbench.dynamics`` work on it, and unknown hook names raise ``UnknownHookError``.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Mapping
from typing import Any, Union

import torch
from torch import nn

from workbench.hooks import HookedRecurrentModule, HookPoint

__all__ = ["LoopIndexed", "loop_indexed"]

_LOCKS: "weakref.WeakKeyDictionary[nn.Module, threading.RLock]" = weakref.WeakKeyDictionary()
_LOCKS_GUARD = threading.Lock()


def _shared_lock(model: nn.Module) -> threading.RLock:
    """One re-entrant lock per wrapped model, shared by every wrapper of it: the core's
    ``forward`` is shadowed while a wrapper runs, so two wrappers must not run it at once."""
    with _LOCKS_GUARD:
        lock = _LOCKS.get(model)
        if lock is None:
            lock = _LOCKS[model] = threading.RLock()
        return lock


class _Node(nn.Module):
    """A container of hook points (no forward): one loop step, or a folder of a mirrored name."""


class _Loop:
    """What the wrapper knows about one loop: its module, the HookPoints it swaps, its counter."""

    def __init__(self, name: str, module: nn.Module, path: str, max_steps: int):
        self.name, self.module, self.path, self.max = name, module, path, max_steps
        self.parent: _Loop | None = None
        self.children: list[_Loop] = []
        self.names: list[str] = []  # HookPoints inside the core (not inside a nested loop), by name
        self.slots: list[list[tuple[nn.Module, str]]] = []  # where each of them sits (parent, attribute)
        self.count = 0  # calls so far within the enclosing call (or the forward)
        self.current: _Node | None = None  # the step container of the call running now

    @property
    def qualified(self) -> str:
        return self.name if self.parent is None else f"{self.parent.qualified}.{{t}}.{self.name}"


def _walk(module: nn.Module, prefix: str, stop: set[int], out: list, active: set[int]) -> None:
    """Every HookPoint under ``module`` by every path: (path, parent, attribute, hook point);
    modules whose id is in ``stop`` (nested loops) are not entered."""
    active.add(id(module))
    for attr, child in module._modules.items():
        if child is None:
            continue
        path = f"{prefix}.{attr}" if prefix else attr
        if isinstance(child, HookPoint):
            out.append((path, module, attr, child))
        elif id(child) not in stop and id(child) not in active:
            _walk(child, path, stop, out, active)
    active.discard(id(module))


def _group(found: list) -> list[tuple[str, HookPoint, list[tuple[nn.Module, str]]]]:
    """One entry per distinct HookPoint: (its name, it, every (parent, attribute) holding it).

    The name is its path, preferring paths without private segments (``_original_component``
    of a TransformerLens bridge), then the shortest."""
    by_id: dict[int, list] = {}
    for path, owner, attr, hp in found:
        by_id.setdefault(id(hp), []).append((path, owner, attr, hp))
    out = []
    for entries in by_id.values():
        def key(e):
            segs = e[0].split(".")
            return (any(s.startswith("_") for s in segs), len(segs), e[0])
        best = min(entries, key=key)
        slots, seen = [], set()
        for _, owner, attr, _ in entries:
            if (id(owner), attr) not in seen:
                seen.add((id(owner), attr))
                slots.append((owner, attr))
        out.append((best[0], best[3], slots))
    return sorted(out, key=lambda e: e[0])


def _place(root: nn.Module, path: str, module: nn.Module, what: str) -> None:
    """Register ``module`` under the dotted ``path`` below ``root``, creating folders."""
    parts = path.split(".")
    node = root
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        existing = node._modules.get(part)
        if last:
            clash = existing is not None or (part in node.__dict__) or hasattr(type(node), part)
        else:
            clash = existing is None and ((part in node.__dict__) or hasattr(type(node), part))
            clash = clash or (existing is not None and not isinstance(existing, _Node))
        if clash:
            raise ValueError(f"cannot name {what} {path!r}: '{'.'.join(parts[:i + 1])}' is already taken "
                             "(by a loop name, hook_in / hook_out, or an attribute of the wrapper); "
                             "rename the loop")
        if last:
            node.add_module(part, module)
        else:
            if existing is None:
                existing = _Node()
                node.add_module(part, existing)
            node = existing


class LoopIndexed(HookedRecurrentModule):
    """A hooked view of ``model`` whose loop submodules have per-call hook names.

    Build it with ``loop_indexed(model, loops={...}, max_steps=...)``. ``self.model`` is the
    original model (its parameters are this module's parameters); ``loops`` maps each loop
    name to its module; ``max_steps`` maps each loop name to the calls built.
    """

    def __init__(self, model: nn.Module, loops: Mapping[str, Union[nn.Module, str]],
                 max_steps: Union[int, Mapping[str, int]] = 32):
        super().__init__()
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module; got {type(model).__name__}")
        specs = self._loops_of(model, loops, max_steps)
        self._specs: list[_Loop] = specs
        self._top: dict[str, list[_Node]] = {}
        # where every HookPoint of the model sits, by every path, loops excluded
        loop_ids = {id(s.module) for s in specs}
        claimed: dict[int, str] = {}
        for spec in specs:
            found: list = []
            _walk(spec.module, "", loop_ids - {id(spec.module)}, found, set())
            for name, hp, slots in _group(found):
                if id(hp) in claimed:
                    raise ValueError(f"HookPoint {name!r} is inside two loops ({claimed[id(hp)]!r} and "
                                     f"{spec.name!r}); nest one loop in the other or give them separate modules")
                claimed[id(hp)] = spec.name
                if name in ("hook_in", "hook_out") or name.split(".")[0] in {c.name for c in spec.children}:
                    raise ValueError(f"the {spec.name!r} module has a HookPoint named {name!r}, which the loop "
                                     "names need (hook_in, hook_out, or a nested loop's name); rename the loop")
                spec.names.append(name)
                spec.slots.append(slots)
        # per-step hook points, nested loops inside their enclosing step
        for spec in specs:
            if spec.parent is None:
                steps = nn.ModuleList(self._build_step(spec) for _ in range(spec.max))
                _place(self, spec.name, steps, f"loop {spec.name!r}")
                self._top[spec.name] = list(steps)
        # the model's other HookPoints keep their names
        found = []
        _walk(model, "", loop_ids, found, set())
        self._outside = []
        for name, hp, _ in _group(found):
            if id(hp) in claimed:
                continue
            _place(self, name, hp, "the model's HookPoint")
            self._outside.append(name)
        self.setup()  # names every hook point below this module; the model is not attached yet
        self.loop_sizes = {**getattr(self, "loop_sizes", {}), **{s.name: s.max for s in specs}}
        self.model = model  # attached after setup: its own HookPoints keep their names and hooks
        if hasattr(model, "cfg"):
            self.cfg = model.cfg

    # ------------------------------------------------------------------ building
    @staticmethod
    def _loops_of(model: nn.Module, loops, max_steps) -> list[_Loop]:
        if not isinstance(loops, Mapping) or not loops:
            raise ValueError("loops must be a non-empty dict {loop name: submodule of the model}, "
                             "e.g. loops={'steps': model.core}")
        paths: dict[int, str] = {}
        for path, mod in model.named_modules(remove_duplicate=False):
            paths.setdefault(id(mod), path)
        specs = []
        for name, module in loops.items():
            if not isinstance(name, str) or not name.isidentifier() or name.startswith("hook_") \
                    or name in ("model", "cfg") or hasattr(LoopIndexed, name):
                raise ValueError(f"loop name {name!r} must be an identifier that is not 'model', 'cfg', an "
                                 "attribute of the wrapper or a hook name (e.g. 'steps', 'time', 'inner')")
            if isinstance(module, str):
                try:
                    module = model.get_submodule(module)
                except AttributeError:
                    raise ValueError(f"loops[{name!r}] = {module!r} is not a submodule of the model") from None
            if not isinstance(module, nn.Module):
                raise TypeError(f"loops[{name!r}] must be a submodule of the model (or its dotted path); "
                                f"got {type(module).__name__}")
            if id(module) not in paths or module is model:
                raise ValueError(f"loops[{name!r}] ({type(module).__name__}) is not a submodule of the model; "
                                 "pass the module the model calls once per step, e.g. model.core")
            if isinstance(module, (nn.ModuleList, nn.ModuleDict)):
                raise ValueError(f"loops[{name!r}] is a {type(module).__name__}, which is never called itself; "
                                 "pass the module whose call is one step (wrap the list in a module whose "
                                 "forward applies it)")
            if isinstance(max_steps, Mapping):
                if name not in max_steps:
                    raise ValueError(f"max_steps names no size for loop {name!r}; give max_steps={{{name!r}: n, ...}} "
                                     "for every loop, or one integer")
                n = max_steps[name]
            else:
                n = max_steps
            if isinstance(n, bool) or not isinstance(n, int) or n < 1:
                raise ValueError(f"max_steps for loop {name!r} must be an integer >= 1; got {n!r}")
            specs.append(_Loop(name, module, paths[id(module)], n))
        if len({id(s.module) for s in specs}) < len(specs):
            raise ValueError("two loops name the same module; each loop needs its own module")
        # nesting: a loop whose module lies inside another loop's module runs inside its calls
        for spec in specs:
            inside = [o for o in specs if o is not spec and any(m is spec.module for m in o.module.modules())]
            if inside:
                spec.parent = min(inside, key=lambda o: sum(1 for _ in o.module.modules()))
                spec.parent.children.append(spec)
        return specs

    def _build_step(self, spec: _Loop) -> _Node:
        step = _Node()
        step.hook_in, step.hook_out = HookPoint(), HookPoint()
        clones = []
        for name in spec.names:
            hp = HookPoint()
            _place(step, name, hp, f"a HookPoint of loop {spec.name!r}")
            clones.append(hp)
        step._clones = tuple(clones)
        step._loops = {}
        for child in spec.children:
            steps = nn.ModuleList(self._build_step(child) for _ in range(child.max))
            _place(step, child.name, steps, f"nested loop {child.name!r}")
            step._loops[child.name] = list(steps)
        return step

    # ------------------------------------------------------------------ running
    @property
    def hook_lock(self) -> threading.RLock:
        return _shared_lock(self._modules["model"])

    @property
    def loops(self) -> dict[str, nn.Module]:
        return {s.name: s.module for s in self._specs}

    @property
    def max_steps(self) -> dict[str, int]:
        return {s.name: s.max for s in self._specs}

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """Run the wrapped model; every call of a loop module fires the hook points of its step."""
        with self.hook_lock:
            shadowed = []
            try:
                for spec in self._specs:
                    spec.count, spec.current = 0, None
                    module = spec.module
                    before = module.__dict__.get("forward", _MISSING)
                    module.__dict__["forward"] = _StepCall(self, spec, module.forward)
                    shadowed.append((module, before))
                return self._modules["model"](*args, **kwargs)
            finally:
                for module, before in reversed(shadowed):
                    if before is _MISSING:
                        module.__dict__.pop("forward", None)
                    else:
                        module.__dict__["forward"] = before
                for spec in self._specs:
                    spec.current = None

    def __repr__(self) -> str:
        loops = ", ".join(f"{s.qualified}: {s.path or type(s.module).__name__} x {s.max}" for s in self._specs)
        return (f"LoopIndexed({type(self._modules['model']).__name__}, loops={{{loops}}}, "
                f"hook points={len(self.hook_dict)})")


_MISSING = object()
_torch_module = torch.nn.modules.module


def _fire(hp: HookPoint, x):
    """``hp(x)``, skipping the module call when nothing watches the hook point (it is the identity)."""
    if (hp._forward_hooks or hp._forward_pre_hooks or hp._backward_hooks or hp._backward_pre_hooks
            or _torch_module._global_forward_hooks or _torch_module._global_forward_pre_hooks
            or _torch_module._global_backward_hooks or _torch_module._global_backward_pre_hooks):
        return hp(x)
    return x


class _StepCall:
    """The shadowing ``forward`` of a loop module during a wrapper's forward: one call = one step."""

    __slots__ = ("root", "spec", "forward")

    def __init__(self, root: LoopIndexed, spec: _Loop, forward):
        self.root, self.spec, self.forward = root, spec, forward

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        spec = self.spec
        parent = spec.parent
        if parent is None:
            steps = self.root._top[spec.name]
        elif parent.current is None:
            raise ValueError(f"loop {spec.name!r} ran outside a call of its enclosing loop {parent.name!r}; "
                             "loop_indexed names a nested loop's steps per step of the enclosing loop")
        else:
            steps = parent.current._loops[spec.name]
        t = spec.count
        if t >= spec.max:
            where = f" per call of loop {parent.name!r}" if parent is not None else " in one forward"
            sizes = {s.name: s.max for s in self.root._specs}
            sizes[spec.name] = 2 * spec.max
            hint = str(2 * spec.max) if len(sizes) == 1 else repr(sizes)
            raise ValueError(
                f"loop {spec.name!r} ({spec.path or type(spec.module).__name__}) was called {t + 1} times{where}, "
                f"but loop_indexed built hook points for max_steps={spec.max} calls (indices 0..{spec.max - 1}); "
                f"wrap the model with a larger max_steps, e.g. loop_indexed(model, loops=..., max_steps={hint})"
            )
        spec.count = t + 1
        step = steps[t]
        saved = []
        for slots, clone in zip(spec.slots, step._clones):
            for owner, attr in slots:
                saved.append((owner, attr, owner._modules[attr]))
                owner._modules[attr] = clone
        previous, spec.current = spec.current, step
        for child in spec.children:
            child.count = 0
        try:
            if args and isinstance(args[0], torch.Tensor):
                args = (_fire(step.hook_in, args[0]), *args[1:])
            elif not args:
                for key, value in kwargs.items():
                    if isinstance(value, torch.Tensor):
                        kwargs = {**kwargs, key: _fire(step.hook_in, value)}
                        break
            out = self.forward(*args, **kwargs)
            if isinstance(out, torch.Tensor):
                return _fire(step.hook_out, out)
            if isinstance(out, (tuple, list)) and out and isinstance(out[0], torch.Tensor):
                first = _fire(step.hook_out, out[0])
                if hasattr(out, "_fields"):  # a namedtuple
                    return out._replace(**{out._fields[0]: first})
                return type(out)([first, *out[1:]])
            return out
        finally:
            for owner, attr, original in reversed(saved):
                owner._modules[attr] = original
            spec.current = previous


def loop_indexed(model: nn.Module, loops: Mapping[str, Union[nn.Module, str]],
                 max_steps: Union[int, Mapping[str, int]] = 32) -> LoopIndexed:
    """Wrap ``model`` so that every call of each loop submodule has its own hook names.

    Args:
        model: any ``torch.nn.Module`` (not edited: its code, parameters and HookPoints stay as
            they are, and calling it directly runs it unhooked).
        loops: ``{loop name: submodule}`` (the module, or its dotted path in the model); each call
            of the submodule in one forward of the wrapper is one step ``{name}.{t}``. A loop whose
            module lies inside another loop's module is nested: ``steps.{t}.inner.{k}.``.
        max_steps: calls built per loop (an integer for every loop, or ``{name: n}``); a forward
            that calls a loop module more often raises a ``ValueError`` naming ``max_steps``.

    Returns:
        a ``LoopIndexed`` (a TransformerLens ``HookedRootModule``) whose ``forward`` takes the
        model's arguments and returns its output.

    >>> hooked = loop_indexed(model, loops={"steps": model.core}, max_steps=16)
    >>> out, cache = hooked.run_with_cache(tokens, steps=8)
    >>> stack(cache, "hook_out", loop="steps")            # [8, batch, ...]: the state after every step
    """
    return LoopIndexed(model, loops, max_steps)
