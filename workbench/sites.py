"""Sites: the places inside a model that an analysis reads or writes.

A *site* is one hook point, optionally narrowed to one position and/or one attention
head. Every analysis (patching, attribution, probing) takes the same selection and
reports one row per site::

    Sites("steps.*.blocks.*.hook_resid_pre", positions="each")       # step x layer x position grid
    Sites("steps.*.blocks.1.attn.hook_z", heads="each", steps=[4])   # every head of layer 1 at step 4
    Sites(lambda name: name.endswith("hook_codes"), positions=[7])   # a TransformerLens names_filter
    Sites(["steps.3.hook_input", "steps.4.hook_input"])              # exact hook names

Names are matched exactly, as glob patterns (``*``, ``?``, ``[..]``), or by a callable
``names_filter`` (TransformerLens's convention). Keyword arguments keep only hooks whose
loop index is in a set: ``steps=range(3)``, ``blocks=[1]``, ``time=[0, 1]``. Names are read
with the grammar of ``workbench.hooks`` (``HookName``).

A selection is *resolved* against the hooks that fired in a run (``Sites.resolve``), since
only then are the number of steps and positions known. Axis conventions (TransformerLens's):

* ``attn.hook_pattern`` / ``attn.hook_attn_scores``: [batch, head, query, key]; the
  position of a site is the query position.
* ``attn.hook_q/k/v/z/result``: [batch, pos, head, d_head].
* anything else with 3 or more axes: [batch, pos, ...]; with 1 or 2 axes ([batch] or
  [batch, d], e.g. an RNN's state) there is no position axis.
"""

from __future__ import annotations

import difflib
import fnmatch
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Union

import torch

from workbench.hooks import HookName, template

__all__ = ["Site", "Sites", "SiteSelection", "as_sites", "loop_indices", "component", "site_axes", "LOOP_COLUMNS"]

# Column names for loop indices in result tables ("steps.3.blocks.1" -> step=3, layer=1).
LOOP_COLUMNS = {"steps": "step", "blocks": "layer", "layers": "layer", "time": "time", "ponder": "ponder"}

_HEAD_FIRST = ("hook_pattern", "hook_attn_scores")  # [batch, head, query, key]
_HEAD_THIRD = ("hook_q", "hook_k", "hook_v", "hook_z", "hook_result")  # [batch, pos, head, d_head]


def loop_indices(name: str) -> dict[str, int]:
    """Every ``<loop>.<index>`` pair in a hook name, outermost first (``HookName.indices``).

    >>> loop_indices("steps.3.blocks.1.attn.hook_z")
    {'steps': 3, 'blocks': 1}
    """
    return HookName.parse(name).indices


def component(name: str) -> str:
    """The hook name without its indices (``HookName.kind``): ``steps.3.blocks.1.attn.hook_z`` -> ``attn.hook_z``."""
    return HookName.parse(name).kind


def site_axes(name: str, ndim: int) -> tuple[int | None, int | None]:
    """(position axis, head axis) of the activation at hook ``name`` with ``ndim`` axes."""
    leaf = name.rsplit(".", 1)[-1]
    in_attn = ".attn." in f".{name}"
    if in_attn and leaf in _HEAD_FIRST and ndim == 4:
        return 2, 1
    if in_attn and leaf in _HEAD_THIRD and ndim == 4:
        return 1, 2
    return (1 if ndim >= 3 else None), None


@dataclass(frozen=True)
class Site:
    """One hook point, optionally narrowed to a position and/or a head.

    ``pos=None`` / ``head=None`` mean the whole axis: patching ``Site("steps.2.hook_input")``
    replaces the activation at every position at once.
    """

    name: str
    pos: int | None = None
    head: int | None = None

    @property
    def loops(self) -> dict[str, int]:
        return loop_indices(self.name)

    @property
    def component(self) -> str:
        return component(self.name)

    @property
    def label(self) -> str:
        extra = [f"pos={self.pos}"] if self.pos is not None else []
        extra += [f"head={self.head}"] if self.head is not None else []
        return self.name + (f"[{', '.join(extra)}]" if extra else "")

    def index(self, shape: Sequence[int]) -> tuple:
        """Index into an activation of ``shape`` (batch first) selecting this site."""
        pos_axis, head_axis = site_axes(self.name, len(shape))
        idx: list[Any] = [slice(None)] * len(shape)
        if self.pos is not None:
            idx[pos_axis] = self.pos
        if self.head is not None:
            idx[head_axis] = self.head
        return tuple(idx)

    def axes(self, shape: Sequence[int]) -> tuple[int, ...]:
        """The activation axes this site fixes to one index (used to vectorise patching)."""
        pos_axis, head_axis = site_axes(self.name, len(shape))
        return tuple(a for a, v in ((pos_axis, self.pos), (head_axis, self.head)) if v is not None)

    def row(self) -> dict:
        """The columns that identify this site in a result table."""
        out: dict[str, Any] = {"site": self.label, "hook": self.name, "component": self.component}
        for loop, i in self.loops.items():
            out[LOOP_COLUMNS.get(loop, loop)] = i
        out["pos"] = self.pos
        out["head"] = self.head
        return out


NamesFilter = Union[str, Sequence[str], Callable[[str], bool]]
AxisSelection = Union[None, str, int, Iterable[int]]


class Sites:
    """A selection of sites; see the module docstring.

    Args:
        names: exact hook name, glob pattern, list of them, or ``fn(name) -> bool``.
        positions: ``None`` (the whole activation), ``"each"`` (one site per position),
            an int or a list of ints.
        heads: ``None``, ``"each"`` or ints (attention hooks only).
        **loops: keep only these loop indices, e.g. ``steps=range(4)``, ``blocks=[0]``.
    """

    def __init__(self, names: NamesFilter, *, positions: AxisSelection = None, heads: AxisSelection = None,
                 **loops: Iterable[int]):
        if isinstance(names, str):
            names = [names]
        if callable(names):
            self._filter, self._patterns = names, None
        else:
            names = list(names)
            if not names or not all(isinstance(n, str) for n in names):
                raise TypeError("names must be a hook name, a glob pattern, a list of them, or a callable filter")
            self._filter, self._patterns = None, names
            # one regular expression for all of them: matching every hook of a model stays cheap
            self._regex = re.compile("|".join(fnmatch.translate(p) if _is_glob(p) else re.escape(p) + r"\Z"
                                              for p in names))
        self.positions = _check_axis(positions, "positions")
        self.heads = _check_axis(heads, "heads")
        self.loops = {k: set(int(i) for i in v) for k, v in loops.items()}

    def __repr__(self) -> str:
        what = self._patterns if self._patterns is not None else getattr(self._filter, "__name__", "filter")
        return f"Sites({what!r}, positions={self.positions!r}, heads={self.heads!r}, loops={self.loops})"

    # -------------------------------------------------------------- matching
    def matches(self, name: str) -> bool:
        """A TransformerLens ``names_filter``: does this hook belong to the selection?"""
        if self.loops:
            idx = loop_indices(name)
            if any(idx.get(loop) not in keep for loop, keep in self.loops.items()):
                return False
        if self._filter is not None:
            return bool(self._filter(name))
        return self._regex.match(name) is not None

    def check_names(self, model) -> None:
        """Raise ``UnknownHookError`` (closest valid names) for exact names the model lacks."""
        if self._patterns is None or not hasattr(model, "check_hook_name"):
            return
        for p in self._patterns:
            if not _is_glob(p):
                model.check_hook_name(p)

    # ------------------------------------------------------------- resolving
    def resolve(self, shapes: Mapping[str, Sequence[int]], model=None) -> list["Site"]:
        """The sites of this selection among the hooks that fired (``shapes``: name -> shape).

        Raises ``ValueError`` when a named hook did not fire, a pattern matches nothing, or
        a position / head is out of range.
        """
        if model is not None:
            self.check_names(model)
        fired = sorted((n for n in shapes if self.matches(n)), key=natural_key)
        if self._patterns is not None:
            for p in self._patterns:
                if not any(n == p or (_is_glob(p) and fnmatch.fnmatchcase(n, p)) for n in fired):
                    raise ValueError(_nothing_fired(p, shapes, self.loops))
        if not fired:
            raise ValueError(f"{self!r} selects no hook that fired in this run; fired hooks look like: "
                             f"{_examples(shapes)}")
        out: list[Site] = []
        for name in fired:
            shape = tuple(shapes[name])
            pos_axis, head_axis = site_axes(name, len(shape))
            positions = self._expand(self.positions, pos_axis, shape, name, "positions", "position")
            heads = self._expand(self.heads, head_axis, shape, name, "heads", "head")
            out += [Site(name, p, h) for p in positions for h in heads]
        return out

    @staticmethod
    def _expand(sel, axis, shape, name, param, what) -> list:
        if sel is None:
            return [None]
        if axis is None:
            raise ValueError(f"{param}={sel!r}, but hook {name!r} has shape {list(shape)} with no {what} axis "
                             f"(allowed: {param}=None)")
        n = shape[axis]
        if sel == "each":
            return list(range(n))
        bad = [i for i in sel if not 0 <= i < n]
        if bad:
            raise ValueError(f"{what} {bad} out of range for hook {name!r} of shape {list(shape)} "
                             f"(allowed 0..{n - 1})")
        return list(sel)


SiteSelection = Union[Sites, Sequence[Site], NamesFilter]


def as_sites(sites: SiteSelection) -> Sites | list[Site]:
    """Normalise the ``sites=`` argument of an analysis: a ``Sites``, a list of ``Site``, or names."""
    if isinstance(sites, Sites):
        return sites
    if isinstance(sites, Site):
        return [sites]
    if isinstance(sites, (list, tuple)) and sites and all(isinstance(s, Site) for s in sites):
        return list(sites)
    if sites is None or (isinstance(sites, (list, tuple)) and not sites):
        raise ValueError("sites is empty; pass hook names, a glob such as 'steps.*.blocks.*.hook_resid_pre', "
                         "a names_filter, or Sites(...)")
    return Sites(sites)


def resolve(sites: SiteSelection, shapes: Mapping[str, Sequence[int]], model=None) -> list[Site]:
    """Resolve any ``sites=`` argument against fired hooks; explicit ``Site`` lists are checked too."""
    sel = as_sites(sites)
    if isinstance(sel, Sites):
        return sel.resolve(shapes, model)
    for s in sel:
        if s.name not in shapes:
            if model is not None and hasattr(model, "check_hook_name"):
                model.check_hook_name(s.name)
            raise ValueError(_nothing_fired(s.name, shapes, {}))
        shape = shapes[s.name]
        pos_axis, head_axis = site_axes(s.name, len(shape))
        for v, axis, what in ((s.pos, pos_axis, "position"), (s.head, head_axis, "head")):
            if v is not None and (axis is None or not 0 <= v < shape[axis]):
                allowed = f"0..{shape[axis] - 1}" if axis is not None else "None (no such axis)"
                raise ValueError(f"{s.label}: {what} {v} is invalid for shape {list(shape)}; allowed {allowed}")
    return list(sel)


def names_filter(sites: SiteSelection) -> Callable[[str], bool]:
    """The TransformerLens ``names_filter`` caching every hook a selection may need."""
    sel = as_sites(sites)
    if isinstance(sel, Sites):
        return sel.matches
    wanted = {s.name for s in sel}
    return wanted.__contains__


def natural_key(name: str) -> list:
    """Sort key that orders ``steps.10`` after ``steps.9``."""
    return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", name)]


def _check_axis(sel: AxisSelection, param: str):
    if sel is None or sel == "each":
        return sel
    if isinstance(sel, str):
        raise ValueError(f"{param}={sel!r}; allowed: None, 'each', an int or a list of ints")
    if isinstance(sel, (int, torch.Tensor)) and not isinstance(sel, bool):
        return [int(sel)]
    try:
        return [int(i) for i in sel]
    except TypeError:
        raise ValueError(f"{param}={sel!r}; allowed: None, 'each', an int or a list of ints") from None


def _is_glob(pattern: str) -> bool:
    return any(c in pattern for c in "*?[")


def _examples(shapes: Mapping[str, Any]) -> str:
    temps = sorted({template(n) for n in shapes})
    return ", ".join(temps[:10]) + (", ..." if len(temps) > 10 else "")


def _nothing_fired(pattern: str, shapes: Mapping[str, Any], loops: dict) -> str:
    fired = sorted(shapes, key=natural_key)
    same = [n for n in fired if template(n) == template(pattern)]
    if same:
        idx = sorted({tuple(loop_indices(n).items()) for n in same})
        first, last = dict(idx[0]), dict(idx[-1])
        return (f"hook {pattern!r} did not fire in this run{' within ' + str(loops) if loops else ''}; "
                f"'{template(pattern)}' fired from {first} to {last}")
    close = difflib.get_close_matches(pattern, fired, n=5, cutoff=0.4)
    return (f"{pattern!r} matches no hook that fired in this run; closest fired hooks: "
            f"{', '.join(close) if close else _examples(shapes)}")
