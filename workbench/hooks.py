"""Loop-indexed hook points on top of TransformerLens.

TransformerLens keeps only the last call of a HookPoint that fires inside a loop
(``run_with_cache`` overwrites ``cache[hook.name]``). Models in this workbench give every
loop iteration its own HookPoints instead: a ``nn.ModuleList`` of small hook containers,
one per step, so a single flat name space serves ``run_with_cache``, ``run_with_hooks``,
``model.hooks(...)``, ``names_filter`` and ``ActivationCache`` unchanged::

    steps.{t}.blocks.{l}.hook_resid_post        # recurrent transformer, step t, layer l
    time.{t}.hook_theta                         # sequence position t processed one at a time
    time.{t}.ponder.{n}.hook_halt               # ACT: ponder step n at time t

Weights are shared across steps; only the HookPoints are per step. A model passes the
hook container of step ``t`` into its (shared) modules, which call ``hooks.hook_x(x)``.

Example::

    >>> from transformer_lens import ActivationCache
    >>> out, cache = model.run_with_cache(tokens)
    >>> resid = stack(cache, "blocks.1.hook_resid_post", loop="steps")   # [steps, batch, pos, d]
    >>> ActivationCache(cache, model)["steps.0.hook_input"].shape
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Iterable, Mapping
from contextlib import contextmanager
from typing import Any, Union

import torch
from torch import nn
from transformer_lens import HookedRootModule
from transformer_lens.hook_points import HookPoint

__all__ = [
    "HookPoint",
    "HookedRecurrentModule",
    "UnknownHookError",
    "stack",
    "template",
]

NameOrFilter = Union[str, Callable[[str], bool]]

_LOOP_INDEX = re.compile(r"(?<![^.])(steps|time|ponder)\.(\d+)(?=\.)")


class UnknownHookError(ValueError):
    """A hook name that the model does not have."""


def template(name: str) -> str:
    """The name with every loop index replaced by a placeholder.

    >>> template("steps.3.blocks.1.attn.hook_q")
    'steps.{steps}.blocks.{blocks}.attn.hook_q'
    """
    parts = name.split(".")
    out = []
    for i, part in enumerate(parts):
        if part.isdigit() and i > 0:
            out.append("{" + parts[i - 1] + "}")
        else:
            out.append(part)
    return ".".join(out)


class HookedRecurrentModule(HookedRootModule):
    """A ``HookedRootModule`` whose hook names carry loop indices.

    Subclasses build their HookPoints (one container per loop step) and call
    ``self.setup()`` at the end of ``__init__``. On top of TransformerLens this adds:

    * ``loop_sizes``: ``{"steps": 40}``, read off the hook names;
    * name checking: an unknown hook name raises ``UnknownHookError`` listing the
      closest valid names (TransformerLens would raise a bare ``KeyError`` or, for a
      ``names_filter`` list, silently cache nothing);
    * ``check_steps(n)``: a clear error when asked to run more steps than were built.
    """

    def setup(self) -> None:
        super().setup()
        self.loop_sizes: dict[str, int] = {}
        for name in self.hook_dict:
            for loop, idx in _LOOP_INDEX.findall(name):
                self.loop_sizes[loop] = max(self.loop_sizes.get(loop, 0), int(idx) + 1)
        self._templates = sorted({template(n) for n in self.hook_dict})

    # ----------------------------------------------------------------- names
    def hook_templates(self) -> list[str]:
        """Every hook name with its indices replaced by placeholders (a short menu)."""
        return list(self._templates)

    def check_hook_name(self, name: str) -> None:
        """Raise ``UnknownHookError`` naming the closest valid hook names."""
        if name in self.hook_dict:
            return
        for loop, idx in _LOOP_INDEX.findall(name):
            size = self.loop_sizes.get(loop)
            if size is not None and int(idx) >= size:
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
        """Raise ``ValueError`` if a run asks for more loop iterations than were built."""
        size = self.loop_sizes.get(loop, 0)
        if n < 0 or n > size:
            raise ValueError(
                f"{param}={n} is out of range: this model has hook points for "
                f"{size} '{loop}' iterations (0..{size - 1}); allowed {param} is 0..{size}. "
                f"Build the model with a larger max_steps to run longer."
            )

    # ------------------------------------------- TransformerLens entry points
    @contextmanager
    def hooks(self, fwd_hooks=(), bwd_hooks=(), reset_hooks_end=True, clear_contexts=False):
        self._check_names(name for name, _ in [*fwd_hooks, *bwd_hooks])
        with super().hooks(list(fwd_hooks), list(bwd_hooks), reset_hooks_end, clear_contexts) as m:
            yield m

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
    pattern = re.compile(rf"^{re.escape(loop)}\.(\d+)\.{re.escape(name)}$")
    found = sorted((int(m.group(1)), key) for key in keys if (m := pattern.match(key)))
    if not found:
        prefix = re.compile(rf"^{re.escape(loop)}\.\d+\.")
        under = sorted({prefix.sub("", k) for k in keys if prefix.match(k)})
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


def hook_list(n: int, make: Callable[[], nn.Module]) -> nn.ModuleList:
    """One hook container per loop iteration: ``steps = hook_list(max_steps, StepHooks)``."""
    return nn.ModuleList(make() for _ in range(n))
