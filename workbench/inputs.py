"""Checks of model inputs and config fields: errors that name the argument and say what is allowed.

Every hooked model checks what it is given before it computes, so bad input stops at the door
with a message instead of crashing deep inside a loop (or, worse, running and returning NaN)::

    >>> x = check_tensor(x, "inputs", ("batch", "T", ("16", 16)), dtype=torch.float32)
    ValueError: inputs must be a float tensor [batch, T, 16]; got (2, 5) float32 (2 dimensions, expected 3)

Input rules shared by the models:

* **Shape.** A fixed number of dimensions; named dimensions (``"batch"``) take any size >= 1
  (an empty batch or sequence is refused), fixed ones (``("16", 16)``) exactly that size.
* **dtype.** ``kind="float"``: any floating dtype, cast to the model's parameter dtype
  (``dtype``; float32 for the shipped checkpoints). The cast is a no-op when the dtypes
  agree and loses nothing the model could use otherwise: a float64 input to a float32 model
  is computed in float32, as the model would anyway. ``kind="int64"`` (codes, indices) and
  ``kind="bool"`` (masks) are taken as they are, never cast.
* **Finite.** NaN and inf are refused (one ``torch.isfinite(x).all()`` per call; the position of
  the first bad value is looked up only when there is one).

A wrong type or dtype raises ``InputTypeError``, which is a ``TypeError`` and a ``ValueError``
(code that turns bad input into a message catches ``ValueError``); everything else a
``ValueError``.

Config fields (``int_field``, ``float_field``, ... called from a config's ``__post_init__``):
an integer where an integer belongs (not a float, string or bool), in a range with a sane
cap (``MAX_WIDTH`` for sizes, ``MAX_STEPS`` for loop lengths); finite reals with their
bounds; and ``check_budget`` for what fields multiply into (parameters, hook points), so
a config that would exhaust memory or take minutes to build is refused at once.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Any, Optional, Union

import torch
from torch import Tensor

MAX_WIDTH = 100_000  # layer widths, vocabularies, sequence lengths
MAX_STEPS = 10_000  # loop lengths: recurrence steps, time steps, ponder steps
MAX_ELEMENTS = 100_000_000  # parameters + buffers a config may build (400 MB in float32)
MAX_HOOKS = 100_000  # hook points a config may build (each is a module: ~0.1 ms to build)

Dim = Union[str, tuple[str, int]]


class InputTypeError(TypeError, ValueError):
    """An argument or config field of the wrong type or dtype (a ValueError too)."""


# ------------------------------------------------------------------ inputs
def describe(x: Any) -> str:
    """``'(2, 5) float32'`` for a tensor, the type name otherwise."""
    if isinstance(x, Tensor):
        return f"{tuple(x.shape)} {str(x.dtype).replace('torch.', '')}"
    return type(x).__name__


def _dims_text(dims: Sequence[Dim]) -> str:
    return "[" + ", ".join(d if isinstance(d, str) else d[0] for d in dims) + "]"


def check_tensor(x: Any, name: str, dims: Sequence[Dim], kind: str = "float", *,
                 dtype: Optional[torch.dtype] = None, finite: bool = True, note: str = "") -> Tensor:
    """Check ``x`` and return it (cast to ``dtype`` when ``kind="float"``).

    Args:
        dims: one entry per dimension: a name (any size >= 1) or ``(label, size)`` (exactly
            ``size``; the label is what the message shows).
        kind: ``"float"`` (any floating dtype), ``"int64"`` or ``"bool"``.
        dtype: for ``kind="float"``, the dtype to compute in (default: keep x's).
        finite: refuse NaN / inf (floating kinds only).
        note: text added after the dimensions in messages (e.g. what the last axis holds).
    """
    article = "an" if kind[0] in "aeiou" else "a"
    expect = f"{name} must be {article} {kind} tensor {_dims_text(dims)}{note}"
    if not isinstance(x, Tensor):
        raise InputTypeError(f"{expect}; got {describe(x)}")
    ok_dtype = (x.is_floating_point() if kind == "float" else
                x.dtype == torch.int64 if kind == "int64" else x.dtype == torch.bool)
    if not ok_dtype:
        cast = {"int64": ".long()", "bool": ".bool()"}.get(kind, ".float()")
        raise InputTypeError(f"{expect}; got {describe(x)} (convert with {cast})")
    if x.ndim != len(dims):
        raise ValueError(f"{expect}; got {describe(x)} ({x.ndim} dimensions, expected {len(dims)})")
    for axis, (d, size) in enumerate(zip(dims, x.shape)):
        if isinstance(d, str):
            if size < 1:
                raise ValueError(f"{name} is empty: shape {tuple(x.shape)}; needs at least one {d} (axis {axis})")
        elif size != d[1]:
            raise ValueError(f"{expect}; got {describe(x)} (axis {axis} must have size {d[1]})")
    before = x.dtype
    if kind == "float" and dtype is not None and x.dtype != dtype:
        x = x.to(dtype)
    if finite and kind == "float" and not bool(torch.isfinite(x).all()):
        bad = ~torch.isfinite(x)
        first = bad.nonzero()[0].tolist()
        where = ", ".join(f"{d} {i}" for d, i in zip(dims, first) if isinstance(d, str)) or f"index {tuple(first)}"
        cast = f" (after casting {before} to {x.dtype})".replace("torch.", "") if x.dtype != before else ""
        raise ValueError(f"{name} has {int(bad.sum())} non-finite values (NaN or inf){cast}, first at {where}; "
                         "allowed: finite values")
    return x


def check_int(value: Any, name: str, lo: int, hi: Optional[int] = None, hint: str = "") -> int:
    """An integer argument (not a bool, float or string) in lo..hi; returns it as an int."""
    rule = f"{lo}..{hi}" if hi is not None else f">= {lo}"
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise InputTypeError(f"{name} must be an integer {'in ' if hi is not None else ''}{rule}; "
                             f"got {type(value).__name__} {value!r}")
    if value < lo or (hi is not None and value > hi):
        raise ValueError(f"{name}={value} is out of range; allowed {rule}{hint}")
    return int(value)


# ------------------------------------------------------------ config fields
def _where(cfg: Any, name: str) -> str:
    return f"{type(cfg).__name__}.{name}"


def int_field(cfg: Any, name: str, lo: int = 1, hi: int = MAX_WIDTH, optional: bool = False) -> None:
    """An integer field in lo..hi (``optional``: ``None`` allowed too)."""
    value = getattr(cfg, name)
    if optional and value is None:
        return
    rule = f"an integer in {lo}..{hi}" + (" or None" if optional else "")
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise InputTypeError(f"{_where(cfg, name)}={value!r} is of type {type(value).__name__}; allowed: {rule}")
    if not lo <= value <= hi:
        raise ValueError(f"{_where(cfg, name)}={value!r} is out of range; allowed: {rule}")


def float_field(cfg: Any, name: str, lo: float = -math.inf, hi: float = math.inf, *,
                lo_open: bool = False, hi_open: bool = False) -> None:
    """A finite real field (an int is fine) between lo and hi (open ends with ``*_open``)."""
    value = getattr(cfg, name)
    bounds = ([f"{'>' if lo_open else '>='} {lo}"] if lo > -math.inf else []) + \
             ([f"{'<' if hi_open else '<='} {hi}"] if hi < math.inf else [])
    rule = " ".join(["a finite number", " and ".join(bounds)]).strip()
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise InputTypeError(f"{_where(cfg, name)}={value!r} is of type {type(value).__name__}; allowed: {rule}")
    ok = math.isfinite(value) and (value > lo if lo_open else value >= lo) and (value < hi if hi_open else value <= hi)
    if not ok:
        raise ValueError(f"{_where(cfg, name)}={value!r} is out of range; allowed: {rule}")


def bool_field(cfg: Any, name: str) -> None:
    value = getattr(cfg, name)
    if not isinstance(value, bool):
        raise InputTypeError(f"{_where(cfg, name)}={value!r} is of type {type(value).__name__}; allowed: true or false")


def choice_field(cfg: Any, name: str, allowed: Sequence[str]) -> None:
    """A string field among ``allowed`` (message: ``cell='tanh'; allowed: (...)``)."""
    value = getattr(cfg, name)
    if not isinstance(value, str) or value not in allowed:
        raise ValueError(f"{name}={value!r}; allowed: {tuple(allowed)}")


def type_field(cfg: Any, name: str, kind: type, what: str) -> None:
    """A field of a given Python type (``dict`` for task configs, ``str`` for specs)."""
    value = getattr(cfg, name)
    if not isinstance(value, kind):
        raise InputTypeError(f"{_where(cfg, name)}={value!r} is of type {type(value).__name__}; allowed: {what}")


def check_budget(cfg: Any, what: str, value: int, cap: int, lower: str) -> None:
    """Refuse a config whose fields multiply into more than ``cap`` (parameters, hook points)."""
    if value > cap:
        raise ValueError(f"{type(cfg).__name__}: {what} = {value:,} exceeds the cap of {cap:,}; lower {lower}")
