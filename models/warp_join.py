"""The output of a recurrent WARP run whose batch grew mid-loop (``Warp.forward(..., join=fn)``),
assembled on demand."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import Tensor


class JoinedOutput:
    """The output of a run whose batch grew, for every row of the final batch: a row that joined
    at step t (a copy of row i then) has, at steps < t, the record of row i.

    ``out.output_rows(a, b)`` is the model's output for final rows a..b-1 only. Reading a field
    (``out.mean``, ``out.thetas``) assembles the whole output once. Patching reads one copy's
    rows at a time: most of the whole output would be copies of the rows' shared prefixes, and a
    copy's rows are small enough for the allocator to reuse their memory from copy to copy.
    """

    def __init__(self, steps: list[dict], joins: list[tuple[int, int, Tensor]], make: Callable[..., Any]):
        """``joins``: (t, rows before, rows copied), in the order they happened; ``make(**fields)``
        builds the model's output from {field: [rows, T, ...]}."""
        self._steps, self._make, self._flat, self._whole = steps, make, {}, None
        sizes = [len(next(iter(s.values()))) for s in steps]
        T = len(steps)
        offsets = np.cumsum([0] + sizes[:-1])  # where each step's rows start in the flat record
        # rows only ever join at the end, so a row keeps its place from the step it joined on;
        # before that it reads the record of the row it copied (numpy: many small steps)
        index = np.empty((sizes[-1], T), dtype=np.int64)
        index[: sizes[0]] = np.arange(sizes[0])[:, None] + offsets
        for t, before, rows in joins:
            k = len(rows)
            index[before:before + k, :t] = index[rows.cpu().numpy(), :t]
            index[before:before + k, t:] = np.arange(before, before + k)[:, None] + offsets[t:]
        self._index = torch.from_numpy(index)  # [final, T]: each (row, step)'s row in the flat record

    def __len__(self) -> int:
        return self._index.shape[0]

    def output_rows(self, a: int, b: int):
        """The output of final batch rows a..b-1 (0 <= a < b <= len(self)): one gather per field."""
        if not 0 <= a < b <= len(self):
            raise ValueError(f"rows {a}..{b - 1} are out of range; allowed 0..{len(self) - 1}")
        flat_index = self._index[a:b].reshape(-1)
        T = self._index.shape[1]
        return self._make(**{k: (v := self._flat_field(k)).index_select(0, flat_index.to(v.device))
                             .view(b - a, T, *v.shape[1:]) for k in self._steps[0]})

    def _flat_field(self, key: str) -> Tensor:
        """Every step's rows of one field, one after another: [sum of the steps' rows, ...]."""
        if key not in self._flat:
            self._flat[key] = torch.cat([s[key] for s in self._steps])
        return self._flat[key]

    def __getattr__(self, name: str):
        if name.startswith("_"):
            raise AttributeError(name)
        if self._whole is None:
            self._whole = self.output_rows(0, len(self))
        return getattr(self._whole, name)
