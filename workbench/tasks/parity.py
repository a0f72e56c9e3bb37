"""Parity of a sparse ±1 vector (Graves 2016, section 3.1).

A problem is a vector of ``size`` entries; a random number k ~ U{min_nonzero..max_nonzero}
of them (at random places) are set to +1 or -1 with equal probability, the rest are 0.
The target is 1 if the number of +1 entries is odd, else 0. The whole vector is
presented at a single input step, so every bit of the computation happens while the
model ponders. Difficulty = the number of nonzero entries.

Text format: one character per entry, ``+`` for +1, ``-`` for -1, ``0`` for 0::

    +0-00++0-0000+00        # 16 entries, four +1s -> parity 0

``parse`` rejects a wrong length or an unknown character, naming the position;
``check_vectors`` does the same for numeric arrays (values outside {-1, 0, 1}).
The solver (``solve``) counts +1 entries in plain Python and shares no code with any
model.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Sequence

import numpy as np

MAX_SIZE = 64
SYMBOLS = {"+": 1, "-": -1, "0": 0}


@dataclass(frozen=True)
class ParityConfig:
    size: int = 16  # entries per vector (the paper uses 64)
    min_nonzero: int = 1
    max_nonzero: int = 0  # 0 means ``size``

    def __post_init__(self):
        if not 1 <= self.size <= MAX_SIZE:
            raise ValueError(f"size={self.size} is out of range; allowed 1..{MAX_SIZE}")
        hi = self.hi
        if not 1 <= self.min_nonzero <= hi <= self.size:
            raise ValueError(
                f"need 1 <= min_nonzero <= max_nonzero <= size; got min_nonzero={self.min_nonzero}, "
                f"max_nonzero={self.max_nonzero} (0 = size), size={self.size}"
            )

    @property
    def hi(self) -> int:
        """The largest number of nonzero entries (``max_nonzero`` with 0 read as ``size``)."""
        return self.max_nonzero or self.size


@dataclass(frozen=True)
class ParityProblem:
    vector: tuple[int, ...]  # entries in {-1, 0, 1}
    target: int  # 1 if the number of +1 entries is odd
    n_nonzero: int  # difficulty


@dataclass
class ParitySet:
    """``n`` problems as arrays (what models consume) with per-item metadata."""

    vectors: np.ndarray  # [n, size] int8 in {-1, 0, 1}
    target: np.ndarray  # [n] int64 in {0, 1}
    n_nonzero: np.ndarray  # [n] int64
    n_plus: np.ndarray  # [n] int64: number of +1 entries

    def __len__(self) -> int:
        return len(self.target)

    def __getitem__(self, i: int) -> ParityProblem:
        return ParityProblem(tuple(int(v) for v in self.vectors[i]), int(self.target[i]), int(self.n_nonzero[i]))


def solve(vector: Sequence[int]) -> int:
    """1 if the number of +1 entries is odd, else 0."""
    plus = 0
    for v in vector:
        if v == 1:
            plus += 1
    return plus % 2


def sample(config: ParityConfig, n: int, seed: int | Sequence[int] | np.random.Generator) -> ParitySet:
    """``n`` random problems; the same seed gives the same problems."""
    rng = np.random.default_rng(seed)
    k = rng.integers(config.min_nonzero, config.hi + 1, size=n)
    # the k nonzero places of each row: the k smallest of ``size`` random keys
    ranks = rng.random((n, config.size)).argsort(axis=1).argsort(axis=1)
    nonzero = ranks < k[:, None]
    signs = np.where(rng.random((n, config.size)) < 0.5, 1, -1)
    vectors = np.where(nonzero, signs, 0).astype(np.int8)
    n_plus = (vectors == 1).sum(axis=1)
    return ParitySet(vectors, (n_plus % 2).astype(np.int64), k.astype(np.int64), n_plus.astype(np.int64))


def check_vectors(vectors: np.ndarray, size: int) -> None:
    """Raise ``ValueError`` unless ``vectors`` is [n, size] with entries in {-1, 0, 1}."""
    arr = np.asarray(vectors)
    if arr.ndim != 2 or arr.shape[1] != size:
        raise ValueError(f"parity vectors must have shape [n, {size}]; got {list(arr.shape)}")
    bad = ~np.isin(arr, (-1, 0, 1))
    if bad.any():
        row, col = (int(i) for i in np.argwhere(bad)[0])
        raise ValueError(f"entry {col} of vector {row} is {arr[row, col].item()!r}; allowed values: -1, 0, 1")


def from_vectors(vectors: np.ndarray | Sequence[Sequence[int]], size: int | None = None) -> ParitySet:
    """A ``ParitySet`` from given vectors (checked; ground truth from ``solve``)."""
    arr = np.asarray(vectors)
    if arr.ndim == 1:
        arr = arr[None]
    check_vectors(arr, size if size is not None else arr.shape[-1])
    arr = arr.astype(np.int8)
    target = np.array([solve(row.tolist()) for row in arr], dtype=np.int64)
    return ParitySet(arr, target, (arr != 0).sum(1).astype(np.int64), (arr == 1).sum(1).astype(np.int64))


# ----------------------------------------------------------------- text format
def format_vector(vector: Sequence[int]) -> str:
    """``[1, 0, -1]`` -> ``"+0-"``."""
    inverse = {v: s for s, v in SYMBOLS.items()}
    return "".join(inverse[int(v)] for v in vector)


_NON_BLANK = re.compile(r"[^ \t\r\n]")  # entries and anything else; blanks are skipped in C


def parse(text: str, size: int = 16) -> ParityProblem:
    """Parse ``"+0-0..."`` (exactly ``size`` entries) into a problem.

    Rules: one character per entry, ``+`` (+1), ``-`` (-1) or ``0`` (0); spaces, tabs,
    carriage returns and newlines between entries are ignored; exactly ``size`` entries. Any other
    character (letters, non-ASCII digits, control characters) is rejected. A broken rule
    raises ``ValueError`` naming the character offset, the rule and what is allowed.
    Linear time: reading stops at the first broken rule or after ``size + 1`` entries.
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be a str; got {type(text).__name__}")
    entries: list[int] = []
    for m in _NON_BLANK.finditer(text):
        ch, pos = m.group(), m.start()
        if ch not in SYMBOLS:
            raise ValueError(f"character {pos}: {ch!r} is not an entry; allowed '+' (+1), '-' (-1), '0' (0)")
        entries.append(SYMBOLS[ch])
        if len(entries) > size:
            raise ValueError(f"character {pos}: more than {size} entries; a vector has exactly {size}")
    if len(entries) != size:
        raise ValueError(f"character {len(text)}: {len(entries)} entries; a vector has exactly {size}")
    return ParityProblem(tuple(entries), solve(entries), sum(v != 0 for v in entries))
