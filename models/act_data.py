"""Batches for the ACT RNN from the task modules (parity, addition).

A batch is a dict: ``inputs`` [B, T, input_size] float32, ``targets`` (parity [B, 1]
float 0/1; addition [B, T, out_digits] long classes), ``mask`` [B, T] bool, and the
difficulty of each step (``n_nonzero`` [B] or ``digits`` [B, T]).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Sequence

import numpy as np
import torch

from workbench.tasks import addition as add
from workbench.tasks import parity as par

TASKS = ("parity", "addition")


def model_shape(name: str, task) -> dict:
    """ACTConfig fields that a task fixes (input/output sizes, input steps)."""
    if name == "parity":
        return dict(input_size=task.size, output_size=1, output="binary", max_time=1)
    if name != "addition":
        raise ValueError(f"unknown task {name!r}; allowed: {TASKS}")
    return dict(input_size=task.input_size, output_size=task.out_digits * add.N_CLASSES, output="classes",
                n_classes=add.N_CLASSES, max_time=task.max_numbers)


def parity_batch(problems: par.ParitySet) -> dict:
    n = len(problems)
    return {
        "inputs": torch.from_numpy(problems.vectors.astype(np.float32))[:, None, :],
        "targets": torch.from_numpy(problems.target.astype(np.float32))[:, None],
        "mask": torch.ones(n, 1, dtype=torch.bool),
        "n_nonzero": torch.from_numpy(problems.n_nonzero),
    }


def addition_batch(problems: Sequence[add.AdditionProblem], config: add.AdditionConfig) -> dict:
    arr = add.encode(problems, config)
    return {key: torch.from_numpy(value) for key, value in arr.items()}


def curriculum(task: par.ParityConfig, step: int, steps: int, start: int = 2) -> par.ParityConfig:
    """Parity with at most ``start`` nonzero entries at step 0, growing linearly to the full
    task (``task.hi``) at step ``steps``; ``steps=0`` is no curriculum.

    Without it, ACT learns early on to halt at the first ponder step on vectors with
    many nonzero entries (it cannot solve them yet); a first-step halt (h_1 >= 1 - eps)
    gets no gradient at all, so those inputs stay stuck there.
    """
    if steps <= 0 or step >= steps:
        return task
    lo = min(max(start, task.min_nonzero), task.hi)
    hi = lo + int((task.hi - lo + 1) * step / steps)
    return replace(task, max_nonzero=min(hi, task.hi))


def sample_batch(name: str, task, n: int, rng: np.random.Generator) -> dict:
    """A fresh training batch of ``n`` problems."""
    if name == "parity":
        return parity_batch(par.sample(task, n, rng))
    if name == "addition":
        return addition_batch(add.sample(task, n, rng), task)
    raise ValueError(f"unknown task {name!r}; allowed: {TASKS}")
