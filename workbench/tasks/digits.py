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


def parse_digit(text: str) -> Digit:
    """Parse the text format; ``ValueError`` names the line, column and the rule broken."""
    lines = text.split("\n")
    while lines and lines[-1].strip() == "":
        lines.pop()
    if not lines:
        raise ValueError("line 1, column 1: empty text; expected 'digit <0-9> index <n>' and 8 rows of pixels")
    head = lines[0].split(" ")
    if len(head) != 4 or head[0] != "digit" or head[2] != "index":
        raise ValueError(f"line 1, column 1: header {lines[0]!r}; expected 'digit <0-9> index <n>'")
    if not head[1].isdigit() or int(head[1]) >= N_CLASSES:
        raise ValueError(f"line 1, column 7: label {head[1]!r}; allowed 0..{N_CLASSES - 1}")
    if not head[3].isdigit():
        raise ValueError(f"line 1, column {len(head[0]) + len(head[1]) + len(head[2]) + 4}: "
                         f"index {head[3]!r} is not a non-negative integer")
    if len(lines) != SIDE + 1:
        raise ValueError(f"line {min(len(lines), SIDE + 1) + 1}, column 1: {len(lines) - 1} pixel rows; "
                         f"expected {SIDE}")
    pixels = []
    for i, line in enumerate(lines[1:], start=2):
        parts, col = line.split(" "), 1
        if len(parts) != SIDE:
            raise ValueError(f"line {i}, column 1: {len(parts)} pixels; expected {SIDE} separated by single spaces")
        for part in parts:
            if not part.isdigit() or int(part) > MAX_VALUE:
                raise ValueError(f"line {i}, column {col}: pixel {part!r}; allowed integers 0..{MAX_VALUE}")
            pixels.append(int(part))
            col += len(part) + 1
    return Digit(int(head[3]), int(head[1]), tuple(pixels))
