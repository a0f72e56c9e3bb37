"""Training batches for WARP and the GRU baseline, with scheduled teacher forcing.

A batch is ``{"x": [B, T, d] float, "feed": [B, T] bool (optional), "label": [B] long
(digits)}``. ``feed`` says where the truth is fed (True) and where the model's own previous
prediction is (False); without it, or when it is all True, the model trains teacher-forced
(WARP then runs its fast parallel mode).

Schedule (``Forcing``): for the first ``start`` training steps every input is the truth;
then the probability of feeding the truth at each position falls linearly to ``min``
over ``decay`` steps and stays there (the paper feeds the truth with probability ~0.25).
The context prefix of the forecasting protocol is always the truth.

Digits: every choice (hyperparameters, which run or checkpoint to keep) is made on a
validation split carved from the training images (``digits_split``): the stratified
``VAL_FRACTION`` of ``workbench.tasks.digits``'s train split, fixed by ``split_seed``.
Training batches come from the rest ("fit"); the test split is read once, at the end
(``models.warp_eval.digits_test_report``).

    >>> task = dg.DigitsConfig()
    >>> [len(digits_split(task, s)) for s in DIGIT_SPLITS]     # [1077, 270, 450]
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch

from workbench.tasks import digits as dg
from workbench.tasks import dynamics as dy


@dataclass(frozen=True)
class Forcing:
    min: float = 0.25  # probability of feeding the truth once the schedule has decayed
    decay: int = 1000  # training steps over which it falls from 1 to min
    start: int = 0  # training steps of pure teacher forcing first

    def __post_init__(self):
        if not 0 <= self.min <= 1:
            raise ValueError(f"forcing min={self.min} must be in [0, 1]")
        if self.decay < 0 or self.start < 0:
            raise ValueError("forcing decay and start must be >= 0")

    def p(self, step: int) -> float:
        """Probability of feeding the truth at training step ``step``."""
        if step < self.start:
            return 1.0
        if self.decay == 0:
            return self.min
        return max(self.min, 1.0 - (1.0 - self.min) * (step - self.start) / self.decay)


# the share of the training images held out for validation
VAL_FRACTION = 0.2
DIGIT_SPLITS = ("fit", "val", "test")


@lru_cache(maxsize=8)
def _val_rows(test_fraction: float, split_seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Positions (within the train split) of the fit and validation images, stratified by label."""
    from sklearn.model_selection import train_test_split

    train = dg.load(dg.DigitsConfig(test_fraction=test_fraction, split_seed=split_seed), "train")
    pos = np.arange(len(train))
    fit, val = train_test_split(pos, test_size=VAL_FRACTION, random_state=split_seed, stratify=train.labels)
    return np.sort(fit), np.sort(val)


def digits_split(task: dg.DigitsConfig, split: str) -> dg.DigitSet:
    """``fit`` (training images minus validation), ``val``, ``test``; or ``train`` (fit + val).

    The three of ``DIGIT_SPLITS`` are disjoint and together are the whole of ``load_digits``.
    """
    if split in ("test", "train"):
        return dg.load(task, split)
    if split not in DIGIT_SPLITS:
        raise ValueError(f"split={split!r}; allowed: {DIGIT_SPLITS + ('train',)}")
    rows = _val_rows(task.test_fraction, task.split_seed)[DIGIT_SPLITS.index(split)]
    return dg.load(task, "train").subset(rows)


def task_name(task: dy.DynamicsConfig | dg.DigitsConfig) -> str:
    return task.system if isinstance(task, dy.DynamicsConfig) else "digits"


def _feed(rng: np.random.Generator, n: int, T: int, context: int, p: float) -> torch.Tensor | None:
    if p >= 1.0:
        return None
    feed = rng.random((n, T)) < p
    feed[:, :context] = True
    return torch.from_numpy(feed)


def dynamics_batch(task: dy.DynamicsConfig, n: int, rng: np.random.Generator, step: int, forcing: Forcing) -> dict:
    """Freshly integrated trajectories (new parameters every batch)."""
    x = torch.from_numpy(dy.stack(dy.sample(task, n, rng))).float()
    batch = {"x": x}
    feed = _feed(rng, n, task.length, task.context, forcing.p(step))
    if feed is not None:
        batch["feed"] = feed
    return batch


def digits_batch(task: dg.DigitsConfig, n: int, rng: np.random.Generator, step: int, forcing: Forcing) -> dict:
    """Images of the fit split (training minus validation) drawn with replacement: pixel sequences and labels."""
    data = digits_split(task, "fit")
    rows = rng.integers(0, len(data), size=n)
    batch = {"x": torch.from_numpy(dg.sequences(data.pixels[rows])),
             "label": torch.from_numpy(data.labels[rows])}
    feed = _feed(rng, n, dg.N_PIXELS, task.context, forcing.p(step))
    if feed is not None:
        batch["feed"] = feed
    return batch


def training_batch(task, n: int, rng: np.random.Generator, step: int, forcing: Forcing) -> dict:
    if isinstance(task, dy.DynamicsConfig):
        return dynamics_batch(task, n, rng, step, forcing)
    return digits_batch(task, n, rng, step, forcing)
