"""The output of a recurrent WARP run whose batch grew mid-loop (``Warp.forward(..., join=fn)``),
assembled on demand."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor


class JoinedOutput:
    """The output of a run whose batch grew, for every row of the final batch: a row that joined
    at step t (a copy of row i then) has, at steps < t, the record of row i.

    ``out.output_rows(a, b)`` is the model's output for final rows a..b-1 only, each field
    gathered when first read. Reading a field of ``out`` itself (``out.mean``, ``out.thetas``)
    assembles the whole output once. Patching reads one copy's rows at a time: most of the whole
    output would be copies of the rows' shared prefixes, and a metric reads few of its fields.
    """

    def __init__(self, steps: list[dict], joins: list[tuple[int, int, Tensor]], make: type):
        """``joins``: (t, rows before, rows copied), in the order they happened; ``make``: the
        model's output dataclass, built from {field: [rows, T, ...]}."""
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
        """The output of final batch rows a..b-1 (0 <= a < b <= len(self)): an instance of the
        model's output class whose fields are gathered (one ``index_select`` each) when first read."""
        if not 0 <= a < b <= len(self):
            raise ValueError(f"rows {a}..{b - 1} are out of range; allowed 0..{len(self) - 1}")
        return self._rows(self._index[a:b])

    def row_blocks(self, first: int, k: int, B: int) -> tuple[list[Tensor], Callable]:
        """k blocks of B final rows from ``first`` on, for ``workbench.runs.metric_per_copy``: ([their
        places in the flat record, [k, B, T]], a function of one block's places giving its output
        as ``output_rows`` does)."""
        if not (0 <= first and k >= 1 and B >= 1 and first + k * B <= len(self)):
            raise ValueError(f"{k} blocks of {B} rows from row {first} are out of range; "
                             f"allowed rows 0..{len(self) - 1}")
        return [self._index[first:first + k * B].unflatten(0, (k, B))], lambda xs: self._rows(xs[0])

    def _rows(self, index: Tensor):
        """The output of the rows whose places in the flat record are ``index`` [rows, T], each field
        gathered (one ``index_select``) when first read."""
        rows, T = index.shape
        flat_index = index.reshape(-1)

        def gather(key: str) -> Tensor:
            v = self._flat_field(key)
            return v.index_select(0, flat_index.to(v.device)).view(rows, T, *v.shape[1:])

        return _lazy_class(self._make).of(gather, set(self._steps[0]))

    def _flat_field(self, key: str) -> Tensor:
        """Every step's rows of one field, one after another: [sum of the steps' rows, ...]."""
        if key not in self._flat:
            self._flat[key] = torch.cat([s[key] for s in self._steps])
        return self._flat[key]

    def __getattr__(self, name: str):
        if name.startswith("_"):
            raise AttributeError(name)
        if self._whole is None:
            whole = self.output_rows(0, len(self))
            self._whole = self._make(**{f.name: getattr(whole, f.name) for f in dataclasses.fields(self._make)})
        return getattr(self._whole, name)


@functools.cache
def _lazy_class(cls: type) -> type:
    """A subclass of the output dataclass ``cls`` whose recorded fields are computed when first
    read (``Lazy.of(gather, recorded)``); the others keep their defaults. Assigning a field
    replaces it, as on ``cls``."""

    def field(f: dataclasses.Field) -> property:
        def read(self):
            values = self.__dict__.setdefault("_values", {})
            if f.name not in values:  # (an instance built by cls's own __init__ has every field)
                values[f.name] = self._gather(f.name) if f.name in self._recorded else f.default
            return values[f.name]

        def write(self, value):
            self.__dict__.setdefault("_values", {})[f.name] = value

        return property(read, write)

    def of(gather: Callable[[str], Tensor], recorded: set[str]):
        out = object.__new__(lazy)  # (no __init__: nothing is gathered yet)
        out.__dict__.update(_gather=gather, _recorded=recorded, _values={})
        return out

    lazy = type(cls.__name__, (cls,), {f.name: field(f) for f in dataclasses.fields(cls)})
    lazy.of = staticmethod(of)
    lazy.__doc__ = cls.__doc__
    return lazy
