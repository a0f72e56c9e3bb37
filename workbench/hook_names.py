"""The one grammar of loop-indexed hook names (``workbench.hooks`` re-exports all of it).

    steps.{t}.blocks.{l}.hook_resid_post        # recurrent transformer, step t, layer l
    time.{t}.hook_theta                         # sequence position t processed one at a time
    time.{t}.ponder.{n}.hook_halt               # ACT: ponder step n at time t

``HookName`` splits a name into its loop indices and the rest, ``template`` replaces the
indices by ``*``, ``loop_sizes`` counts the steps of each loop among names, ``split_loop``
takes one loop's index off. Sites, patching and attribution read names only through these.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass
from typing import Optional

class UnknownHookError(ValueError):
    """A hook name that the model does not have."""


# ------------------------------------------------------------ the grammar of hook names
LOOPS = ("steps", "time", "ponder")  # the loop prefixes of the shipped models


def _is_index(part: str) -> bool:
    """An index: a decimal number without sign or leading zero ("0", "12"; not "01", "-1")."""
    return part.isascii() and part.isdigit() and (part == "0" or part[0] != "0")


def _index_positions(parts: list[str]) -> list[int]:
    """Positions of the parts that are indices: a number right after a name (``blocks``.``1``)."""
    return [i for i in range(1, len(parts)) if _is_index(parts[i]) and parts[i - 1].isidentifier()]


_PARSED: dict = {}  # (class, name, loops) -> HookName
_PARSED_MAX = 1 << 17


@dataclass(frozen=True)
class HookName:
    """A hook name split into its loops and its component.

    Grammar (``.``-separated parts)::

        name      = loop* component
        loop      = PREFIX "." INDEX "."     PREFIX one of the loop prefixes (LOOPS: steps, time,
                                             ponder), INDEX a decimal without leading zero
        component = the rest: what the hook is within one loop iteration; it may hold inner
                    indices of its own (``blocks.{l}``, ``layers.{i}``), which are not loops

    Loops come first, outermost first; a name without a loop prefix (``hook_gains``,
    ``parallel.root.hook_in``) has ``loops == ()``. Every string parses, and
    ``HookName.parse(name).format() == name`` for every name.

    Attributes:
        loops: ``((prefix, index), ...)``, e.g. ``(("time", 2), ("ponder", 5))``.
        component: the rest, e.g. ``"blocks.1.attn.hook_z"``.

    >>> h = HookName.parse("steps.3.blocks.1.attn.hook_z")
    >>> h.loops, h.component
    ((('steps', 3),), 'blocks.1.attn.hook_z')
    >>> HookName.parse("time.2.ponder.5.hook_halt").loops
    (('time', 2), ('ponder', 5))
    >>> h.template("{}"), h.template("*"), h.template()
    ('steps.{}.blocks.{}.attn.hook_z', 'steps.*.blocks.*.attn.hook_z', 'steps.{steps}.blocks.{blocks}.attn.hook_z')
    >>> h.indices, h.kind
    ({'steps': 3, 'blocks': 1}, 'attn.hook_z')
    >>> str(h)
    'steps.3.blocks.1.attn.hook_z'
    """

    loops: tuple[tuple[str, int], ...]
    component: str

    @classmethod
    def parse(cls, name: str, loops: Collection[str] = LOOPS) -> "HookName":
        """Split ``name``; ``loops`` are the prefixes that count as loops (default ``LOOPS``).

        Memoised (a HookName is immutable): analyses parse the same few thousand names many times."""
        try:
            key = (cls, name, loops if isinstance(loops, (tuple, frozenset)) else tuple(loops))
            return _PARSED[key]
        except KeyError:
            pass
        h = cls._split(name, loops)
        if len(_PARSED) < _PARSED_MAX:
            _PARSED[key] = h
        return h

    @classmethod
    def _split(cls, name: str, loops: Collection[str]) -> "HookName":
        parts = name.split(".")
        found, i = [], 0
        while i + 2 < len(parts) and parts[i] in loops and _is_index(parts[i + 1]):
            found.append((parts[i], int(parts[i + 1])))
            i += 2
        return cls(tuple(found), ".".join(parts[i:]))

    def format(self) -> str:
        """The hook name: ``loops`` then ``component``."""
        return ".".join([f"{prefix}.{index}" for prefix, index in self.loops] + [self.component])

    __str__ = format

    def loop(self, prefix: str) -> Optional[int]:
        """The index of loop ``prefix`` (``None`` when the name is not inside that loop)."""
        return dict(self.loops).get(prefix)

    @property
    def indices(self) -> dict[str, int]:
        """Every ``<name>.<index>`` pair of the whole name, outermost first, inner indices too:
        ``{"steps": 3, "blocks": 1}``."""
        found = self.__dict__.get("_indices")
        if found is None:  # computed once per (memoised) name; a copy is returned
            parts = self.format().split(".")
            found = {parts[i - 1]: int(parts[i]) for i in _index_positions(parts)}
            object.__setattr__(self, "_indices", found)
        return dict(found)

    @property
    def kind(self) -> str:
        """What the hook is wherever it sits: the name without any index pair (``attn.hook_z``;
        the ``component`` column of result tables)."""
        found = self.__dict__.get("_kind")
        if found is None:
            parts = self.format().split(".")
            drop = {j for i in _index_positions(parts) for j in (i - 1, i)}
            found = ".".join(p for j, p in enumerate(parts) if j not in drop)
            object.__setattr__(self, "_kind", found)
        return found

    def template(self, fill: Optional[str] = None) -> str:
        """The name with every index (loops and inner ones) replaced by ``fill`` (``"{}"``,
        ``"*"`` for a glob), or by default by the index's name in braces (``{steps}``)."""
        parts = self.format().split(".")
        for i in _index_positions(parts):
            parts[i] = "{" + parts[i - 1] + "}" if fill is None else fill
        return ".".join(parts)


def template(name: str) -> str:
    """The name with every index replaced by a named placeholder (a short menu of hooks).

    >>> template("steps.3.blocks.1.attn.hook_q")
    'steps.{steps}.blocks.{blocks}.attn.hook_q'
    """
    return HookName.parse(name).template()


def loop_sizes(names: Iterable[str], loops: Optional[Collection[str]] = LOOPS) -> dict[str, int]:
    """How many iterations each loop has among ``names``: ``{prefix: largest index + 1}``.

    ``loops``: the loop prefixes to count (default ``LOOPS``); ``None`` counts every indexed
    part of the names, inner ones included.

    >>> loop_sizes(["time.0.ponder.4.hook_halt", "time.2.hook_state"])
    {'time': 3, 'ponder': 5}
    >>> loop_sizes(["steps.3.blocks.1.hook_resid_pre"], loops=None)
    {'steps': 4, 'blocks': 2}
    """
    sizes: dict[str, int] = {}
    for name in names:
        h = HookName.parse(name, LOOPS if loops is None else loops)
        for prefix, index in (h.indices.items() if loops is None else h.loops):
            sizes[prefix] = max(sizes.get(prefix, 0), index + 1)
    return sizes


def split_loop(name: str, loop: str) -> Optional[tuple[int, str]]:
    """``{loop}.{t}.{rest}`` -> ``(t, rest)``; ``None`` when ``name`` is not of that form.

    ``loop`` is the literal prefix before the index: ``"steps"``, ``"time"``, or a nested
    prefix such as ``"time.3.ponder"``.

    >>> split_loop("time.3.ponder.2.hook_halt", "time.3.ponder")
    (2, 'hook_halt')
    """
    head = loop + "."
    if not name.startswith(head):
        return None
    index, dot, rest = name[len(head):].partition(".")
    return (int(index), rest) if dot and _is_index(index) else None
