"""Exact patching in one forward, for models whose batch can grow mid-loop (``model.joins``).

The clean and the corrupted input run side by side. At the start of each loop step t (each
inner step, for a model that joins there: ACT's ponder steps), one copy of the corrupted rows
joins the batch per site of that step, and the site's hook writes the clean rows' activation
into its copy. The model gives each copy the corrupted run's record so far, so a patched run
costs only its own steps from there on, and the base runs and every copy share one pass: each
block fires once per step for all of them. Two passes (the base runs, then the copies resumed
from their record) pay the fixed cost of every block firing twice, which dominates small
batches (WARP's time steps, ACT's ponder steps).

Where a model's hooks fire only while some row needs them (ACT ponders until every row
halted), the grown batch can fire hooks the clean run alone would not. Such a model tells
``join`` which rows take each step (``running=``), so no copy joins where the clean rows do
not, and says which rows reach a hook (``model.hook_rows(output, name)``): only the hooks the
clean rows reach are sites, as in a run of the clean input alone.

Used by ``workbench.patching.patch`` when the model offers it, nothing is ablated, every site
is a whole activation inside the loop (no position or head: those need the activation's shape
before the run), and the batch stays within ``memory_mb``; otherwise ``patch`` runs chunks.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Optional

import torch
from torch import Tensor

from workbench.hooks import HookName
from workbench.patch_runner import hooked
from workbench.runs import Metric, Setup, metric_per_copy, metric_values, output_rows, unreached
from workbench.sites import Site, Sites, natural_key, resolve


class _TooLarge(Exception):
    """The growing batch would pass the memory budget: patch falls back to chunks."""


@dataclass
class Joined:
    """What the single pass measured: the sites that fired, their metrics, the base metrics."""

    sites: list[Site]
    values: Tensor  # [sites, batch]: the metric of each site's patched copy
    noop: list[bool]  # the clean activation equals the corrupted one bit for bit, or the corrupted run never fires it
    clean: Tensor  # [batch]: the metric of the clean run
    corrupted: Tensor  # [batch]
    steps: int  # loop steps the run took


def join_plan(model, run: Setup, given: Optional[Mapping[str, Tensor]]) -> Optional[dict[tuple, list[str]]]:
    """The hooks each step's copies are patched at, keyed by the arguments the model calls
    ``join`` with there ((t,), or (t, i) for a model with ``resume_inner``), when ``patch`` can
    run this call in one joined forward (see the module docstring); else None."""
    joins = getattr(model, "joins", None)
    if run.ablation is not None or joins is None or not joins(run.forward_kwargs):
        return None
    if any(torch.is_tensor(v) for v in run.forward_kwargs.values()):  # batch-first keywords would not grow
        return None
    sel = run.sites
    if isinstance(sel, Sites):
        if sel.positions is not None or sel.heads is not None:
            return None
        names = [n for n in model.hook_dict if sel.matches(n)]
    elif any(s.pos is not None or s.head is not None for s in sel):
        return None
    else:
        names = list(dict.fromkeys(s.name for s in sel))
    inner = getattr(model, "resume_inner", None)
    at_step: dict[tuple, list[str]] = {}
    for name in sorted(names, key=natural_key):
        parsed = HookName.parse(name)
        at = (parsed.loop(model.resume_loop),) + ((parsed.loop(inner),) if inner else ())
        if None in at:  # outside the loop (or between inner steps): nothing to join at
            return None
        at_step.setdefault(at, []).append(name)
    if not at_step or any(n not in names for n in (given or {})):
        return None
    return at_step


def run_joined(model, run: Setup, metric: Metric, at_step: dict[tuple, list[str]],
               given: Optional[Mapping[str, Tensor]], memory_mb: float, stats: dict) -> Optional[Joined]:
    """The single pass over ``join_plan``'s sites; None when it would outgrow ``memory_mb`` or its
    sites need the usual resolution's error message (a pattern that fired nowhere): then ``patch``
    runs chunks."""
    B = run.batch
    copies: list[str] = []  # the site of each copy, in the order they joined
    first_row: dict[str, int] = {}  # each site's copy: its first batch row
    corrupted_rows = torch.arange(B, 2 * B)
    row_bytes = [0.0]  # activations of the first step per batch row (measured as it runs)
    reached = [-1]  # the last loop step that started

    def join(t: int, *inner: int, running: Optional[Tensor] = None) -> Optional[Tensor]:
        reached[0] = t
        names = at_step.get((t, *inner))
        if not names or (running is not None and not bool(running[:B].any())):
            return None  # no sites here (the clean rows do not take this step: a run of them never fires it)
        rows = (2 + len(copies)) * B
        if row_bytes[0] and (rows + len(names) * B) * row_bytes[0] > memory_mb * 2**20:
            raise _TooLarge
        for name in names:
            first_row[name] = (2 + len(copies)) * B
            copies.append(name)
        return corrupted_rows if len(names) == 1 else corrupted_rows.repeat(len(names))

    seen: dict[str, tuple[tuple, bool]] = {}  # each site that fired: (its shape, source == corrupted bit for bit)

    def write(act: Tensor, hook) -> Tensor:
        src = act[:B] if not given or hook.name not in given else given[hook.name].to(act.dtype)
        corrupted = act[B:2 * B]
        if src.shape != corrupted.shape:
            raise ValueError(f"{hook.name}: clean and corrupted activations have different shapes "
                             f"{list(src.shape)} vs {list(corrupted.shape)}")
        seen[hook.name] = (tuple(src.shape), torch.equal(src, corrupted))
        r = first_row.get(hook.name)
        if r is None:  # no copy joined: the clean rows do not take this step
            return act
        act[r:r + B] = src  # in place: the joins protocol hands hooks tensors nothing else reads
        return act

    def measure(act: Tensor, hook) -> None:
        if torch.is_tensor(act) and act.ndim:
            row_bytes[0] += act.numel() * act.element_size() / act.shape[0]

    args = tuple(torch.cat([c, r]) if torch.is_tensor(c) else c for c, r in zip(run.clean, run.corrupted))
    step0 = f"{model.resume_loop}.0."  # a cheap filter before parsing every hook name
    first = [n for n in model.hook_dict if step0 in n and _first_step(HookName.parse(n), model)]
    hooks = [(n, write) for names in at_step.values() for n in names] + [(n, measure) for n in first]
    try:
        with hooked(model, hooks):
            out = model(*args, join=join, **run.forward_kwargs)
    except _TooLarge:
        return None
    stats["forwards"] += 1
    n = (2 + len(copies)) * B

    clean_out = output_rows(out, 0, B, n)
    beyond = unreached(model, clean_out, seen)  # fired only for the corrupted rows or the copies
    fired = {name: v for name, v in seen.items() if name not in beyond}
    try:
        sites = resolve(run.sites, {name: shape for name, (shape, _) in fired.items()}, model)
    except ValueError:
        return None
    corrupted_out = output_rows(out, B, 2 * B, n)
    clean = metric_values(metric, clean_out, B, "clean")
    corrupted = metric_values(metric, corrupted_out, B, "corrupted")
    per_copy = metric_per_copy(metric, out, len(copies), B, first=2 * B, n=n)  # [copies, B], in the order they joined
    values = per_copy[[(first_row[s.name] - 2 * B) // B for s in sites]]
    stats["copies_run"] += len(copies)
    never = unreached(model, corrupted_out, (s.name for s in sites))  # the corrupted run alone never gets there
    noop = [s.name in never or seen[s.name][1] for s in sites]
    return Joined(sites, values, noop, clean, corrupted, reached[0] + 1)


def _first_step(name: HookName, model) -> bool:
    """Whether a hook fires in the first step copies join at: loop step 0 (and, for a model that
    joins at inner steps, inner step 0 or outside the inner loop)."""
    inner = getattr(model, "resume_inner", None)
    return name.loop(model.resume_loop) == 0 and (not inner or name.loop(inner) in (0, None))
