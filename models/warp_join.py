"""Rows that join a recurrent WARP run mid-loop (``Warp.forward(..., join=fn)``): the check of
what ``join(t)`` returns, and the run's record stacked for every row of the grown batch."""

from __future__ import annotations

from collections.abc import Callable
from typing import Optional

import torch
from torch import Tensor

from workbench.inputs import InputTypeError


def joining_rows(join: Callable, t: int, batch: int) -> Optional[Tensor]:
    """``join(t)`` checked: None, or a [k] integer index of rows of the batch (k >= 1)."""
    rows = join(t)
    if rows is None:
        return None
    if not torch.is_tensor(rows) or rows.dim() != 1 or rows.dtype not in (torch.int64, torch.int32):
        raise InputTypeError(f"join({t}) must return None or a 1-d integer tensor of rows; got "
                             f"{getattr(rows, 'dtype', type(rows).__name__)} of shape {list(getattr(rows, 'shape', []))}")
    if len(rows) and not (0 <= int((lo_hi := torch.aminmax(rows))[0]) and int(lo_hi[1]) < batch):
        raise ValueError(f"join({t}) returned rows {rows.tolist()}; allowed 0..{batch - 1} (the batch at step {t})")
    return rows.long() if len(rows) else None


def stacked_steps(steps: list[dict], joins: list[tuple[int, int, Tensor]]) -> dict[str, Tensor]:
    """The steps' records stacked along time [rows, T, ...], for every row of the final batch: a
    row that joined at step t (a copy of row i then) has, at steps < t, the record of row i.
    ``joins``: (t, rows before, rows copied), in the order they happened."""
    if not joins:
        return {k: torch.stack([s[k] for s in steps], dim=1) for k in steps[0]}
    sizes = [len(s["thetas"]) for s in steps]
    final, T = sizes[-1], len(steps)
    offsets = torch.tensor([0] + sizes[:-1]).cumsum(0)  # where each step's rows start in the flat record
    index = torch.empty(final, T, dtype=torch.long)
    where = torch.arange(final)  # each final row's row in the batch as it was at step s
    pending = list(joins)
    for s in range(T - 1, -1, -1):
        while pending and pending[-1][0] > s:  # undo the joins after step s, latest first
            _, before, rows = pending.pop()
            where = torch.where(where >= before, rows[(where - before).clamp(0, len(rows) - 1)], where)
        index[:, s] = where + offsets[s]
    # one gather per output: every (row, step) reads its own or its source row's record
    flat = index.view(-1)
    return {k: (v := torch.cat([s[k] for s in steps])).index_select(0, flat).view(final, T, *v.shape[1:])
            for k in steps[0]}
