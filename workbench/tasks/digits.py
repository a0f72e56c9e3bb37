"""scikit-learn's 8x8 handwritten digits as 64-pixel sequences (ships with the package).

Each image (pixel intensities 0..16) is read row by row into a sequence of 64 values
scaled to [0, 1]. Two tasks use it:

* **sequence classification**: read all 64 pixels, predict the digit at the last step;
* **completion**: given the first ``context`` pixels, generate the rest pixel by pixel;
  the score is the mean squared error over the generated pixels (scale [0, 1]).

The train/test split is deterministic (stratified by label, ``split_seed``), so every
model sees the same test images. Nothing is downloaded: ``sklearn.datasets.load_digits``
reads a file inside the scikit-learn package.

Text format (one image; ``index`` is the row in ``load_digits``)::

    digit 3 index 17
    0 0 7 15 13 1 0 0
    ... (8 rows of 8 integers 0..16)

The reference ``nearest_neighbour_accuracy`` (a k-NN on raw pixels) shares no code with
any model; it says how hard the split is.

>>> cfg = DigitsConfig()
>>> train = load(cfg, "train"); test = load(cfg, "test")
>>> sequences(test.pixels).shape                      # (450, 64, 1)
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from .text import show, trim

SIDE, N_PIXELS, N_CLASSES, MAX_VALUE = 8, 64, 10, 16
SPLITS = ("train", "test")


@dataclass(frozen=True)
class DigitsConfig:
    test_fraction: float = 0.25
    split_seed: int = 0
    context: int = 32  # pixels given before completion

    def __post_init__(self):
        if not 0 < self.test_fraction < 1:
            raise ValueError(f"test_fraction={self.test_fraction} must be in (0, 1)")
        if not 1 <= self.context < N_PIXELS:
            raise ValueError(f"context={self.context} must be in 1..{N_PIXELS - 1}")


@dataclass(eq=False)
class DigitSet:
    """A split: pixels [n, 64] int 0..16, labels [n], index [n] (row in load_digits)."""

    pixels: np.ndarray
    labels: np.ndarray
    index: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, rows) -> "DigitSet":
        return DigitSet(self.pixels[rows], self.labels[rows], self.index[rows])


@dataclass(frozen=True)
class Digit:
    index: int
    label: int
    pixels: tuple[int, ...]  # 64 values 0..16, row-major


@lru_cache(maxsize=1)
def _raw() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    data = load_digits()
    return data.data.astype(np.int64), data.target.astype(np.int64)


@lru_cache(maxsize=8)
def _split_rows(test_fraction: float, split_seed: int) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.model_selection import train_test_split

    _, labels = _raw()
    rows = np.arange(len(labels))
    train, test = train_test_split(rows, test_size=test_fraction, random_state=split_seed, stratify=labels)
    return np.sort(train), np.sort(test)


def load(config: DigitsConfig, split: str = "train") -> DigitSet:
    """The deterministic train or test split."""
    if split not in SPLITS:
        raise ValueError(f"split={split!r}; allowed: {SPLITS}")
    pixels, labels = _raw()
    rows = _split_rows(config.test_fraction, config.split_seed)[SPLITS.index(split)]
    return DigitSet(pixels[rows], labels[rows], rows)


def sample(config: DigitsConfig, n: int, seed: int | np.random.Generator, split: str = "train") -> list[Digit]:
    """``n`` images drawn with replacement from a split, with label and index as metadata."""
    data = load(config, split)
    rows = np.random.default_rng(seed).integers(0, len(data), size=n)
    return [Digit(int(data.index[r]), int(data.labels[r]), tuple(int(v) for v in data.pixels[r])) for r in rows]


def sequences(pixels: np.ndarray) -> np.ndarray:
    """Pixels [n, 64] (0..16) -> float sequences [n, 64, 1] in [0, 1]."""
    pixels = np.asarray(pixels)
    if pixels.ndim != 2 or pixels.shape[1] != N_PIXELS:
        raise ValueError(f"pixels must be [n, {N_PIXELS}]; got {pixels.shape}")
    return (pixels / MAX_VALUE).astype(np.float32)[..., None]


def completion_mse(truth: np.ndarray, completion: np.ndarray, context: int) -> float:
    """MSE over the generated pixels: truth [n, 64, 1], completion [n, 64 - context, 1]."""
    future = truth[:, context:]
    if completion.shape != future.shape:
        raise ValueError(f"completion has shape {completion.shape}; expected {future.shape}")
    return float(np.mean((future - completion) ** 2))


def nearest_neighbour_accuracy(config: DigitsConfig, k: int = 3) -> float:
    """Test accuracy of a k-nearest-neighbour classifier on raw pixels (a reference point)."""
    from sklearn.neighbors import KNeighborsClassifier

    train, test = load(config, "train"), load(config, "test")
    clf = KNeighborsClassifier(n_neighbors=k).fit(train.pixels, train.labels)
    return float(clf.score(test.pixels, test.labels))


# ------------------------------------------------------------------ text format
def format_digit(digit: Digit) -> str:
    rows = [" ".join(str(v) for v in digit.pixels[r * SIDE:(r + 1) * SIDE]) for r in range(SIDE)]
    return f"digit {digit.label} index {digit.index}\n" + "\n".join(rows) + "\n"


MAX_INDEX = 10**9 - 1  # far above the rows of load_digits; bounds the number a header may carry
_HEADER_SHAPE = "expected 'digit <0-9> index <n>' (single spaces)"



def _small_int(s: str, limit: int) -> int | None:
    """``int(s)`` for ASCII digits 0-9 (leading zeros allowed) if it is at most ``limit``,
    else None; never converts a huge string."""
    if not (s.isascii() and s.isdigit()):
        return None
    s = s.lstrip("0") or "0"
    return int(s) if len(s) <= len(str(limit)) and int(s) <= limit else None


def _why(s: str) -> str:
    """A hint for a rejected number: non-ASCII digits look fine but are not allowed."""
    c = next((c for c in s[:64] if c.isdigit() and not c.isascii()), None)
    return f" (non-ASCII digit {c!r}; use 0-9)" if c else ""



def _header(line: str) -> tuple[int, int]:
    """``digit <label> index <n>`` -> (label, index)."""
    head = line.split(" ", 4)  # 5 parts at most: the rest of a long line is never split
    if len(head) != 4 or head[0] != "digit" or head[2] != "index":
        raise ValueError(f"line 1, column 1: header {show(line)}; {_HEADER_SHAPE}")
    label = _small_int(head[1], N_CLASSES - 1)
    if label is None:
        raise ValueError(f"line 1, column 7: label {show(head[1])}{_why(head[1])}; allowed 0..{N_CLASSES - 1}")
    index = _small_int(head[3], MAX_INDEX)
    if index is None:
        rule = "is too large" if head[3].isascii() and head[3].isdigit() else \
            f"is not a non-negative integer{_why(head[3])}"
        raise ValueError(f"line 1, column {len(head[1]) + 14}: index {show(head[3])} {rule}; "
                         f"allowed 0..{MAX_INDEX} written with 0-9")
    return label, index


def _row(line: str, i: int) -> list[int]:
    """A pixel row (line ``i``): ``SIDE`` integers 0..MAX_VALUE separated by single spaces."""
    parts = line.split(" ", SIDE)  # SIDE + 1 parts at most: the rest is never split
    if len(parts) != SIDE:
        n = line.count(" ") + 1
        raise ValueError(f"line {i}, column 1: {n} pixels; expected {SIDE} separated by single spaces")
    out, col = [], 1
    for part in parts:
        value = _small_int(part, MAX_VALUE)
        if value is None:
            raise ValueError(f"line {i}, column {col}: pixel {show(part)}{_why(part)}; "
                             f"allowed integers 0..{MAX_VALUE} written with 0-9")
        out.append(value)
        col += len(part) + 1
    return out


def parse_digit(text: str) -> Digit:
    """Parse the text format; ``ValueError`` names the line, column and the rule broken.

    Rules: lines end with ``\\n`` (or ``\\r\\n``); trailing blank lines are ignored. Line 1
    is ``digit <label> index <n>`` with single spaces, label 0..9 and n 0..MAX_INDEX; then
    exactly ``SIDE`` rows of ``SIDE`` pixels 0..MAX_VALUE separated by single spaces.
    Numbers are written with the ASCII digits 0-9 (leading zeros allowed); anything else
    (signs, non-ASCII digits, control characters) is rejected. Linear time in the text.
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be a str; got {type(text).__name__}")
    # CRLF line ends: dropping the CR leaves every line number and column unchanged
    body = trim(text.replace("\r\n", "\n"))
    if not body:
        raise ValueError("line 1, column 1: empty text; expected 'digit <0-9> index <n>' and 8 rows of pixels")
    lines = body.split("\n", SIDE + 1)  # header, SIDE rows, and whatever follows them
    label, index = _header(lines[0])
    if len(lines) != SIDE + 1:
        rows = body.count("\n")
        raise ValueError(f"line {min(rows, SIDE) + 2}, column 1: {rows} pixel rows; expected {SIDE}")
    pixels = [v for i, line in enumerate(lines[1:], start=2) for v in _row(line, i)]
    return Digit(index, label, tuple(pixels))
