"""The ACT RNN for the explorer: inputs from text, halting traces, ponder time per input step,
ponder time against difficulty, and patches of the halting logit.

>>> x = parse_input(model, "+0-0++00-0000+0-")     # ACTInput: inputs [1, T, in], mask [1, T]
>>> trace(model, x)                                 # one row per (input step t, ponder step n)
>>> per_step(model, x)                              # N(t), R(t), prediction, target per input step
>>> trace(model, x, halt_patch(ponder=0, offset=20.0))   # halting forced at the first ponder step
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from models.act_data import addition_batch, parity_batch
from models.act_eval import DIFFICULTY, evaluate, fresh_problems, halting_trace, ponder_by
from models.registry import task_of
from workbench.tasks import addition as add
from workbench.tasks import parity as par


MAX_INPUT_CHARS = 2_000  # far above any input of the ACT tasks


def check_model(model) -> None:
    """Read what the pages need from the model's config; ``ValueError`` says what is unusable."""
    try:
        input_format(model)
        difficulties(model)
    except (TypeError, ValueError, AttributeError, KeyError) as e:
        raise ValueError(f"the checkpoint's task config is unusable: {e}") from e


@dataclass
class ACTInput:
    """One sequence for the model: inputs [1, T, input_size], mask [1, T], and its ground truth."""

    inputs: torch.Tensor
    mask: torch.Tensor
    targets: list[str]  # the true answer at every input step (parity bit or running sum)
    items: list[str]  # what is fed at every input step (the vector or the number)


def task_name(model) -> str:
    return model.cfg.task_name


def input_format(model) -> str:
    """A one-line description of the text format of the model's task."""
    task = task_of(model)
    if task_name(model) == "parity":
        example = par.format_vector([1, 0, -1] + [0] * (task.size - 3))
        return f"{task.size} characters: '+' (+1), '-' (-1), '0' (0); e.g. {example}"
    return (f"{task.min_numbers}..{task.max_numbers} numbers of up to {task.max_digits} digits separated by '+', "
            "e.g. 512 + 7 + 86")


def sample_text(model, seed: int) -> str:
    """One fresh problem from the model's task, as text."""
    problems = fresh_problems(model, 1, np.random.default_rng(int(seed)))
    if task_name(model) == "parity":
        return par.format_vector(problems[0].vector)
    return add.format_problem(problems[0])


def parse_input(model, text: str) -> ACTInput:
    """The input in ``text``; ``ValueError`` names the position and the rule broken.

    Texts longer than ``MAX_INPUT_CHARS`` are refused before they are read.
    """
    if len(text) > MAX_INPUT_CHARS:
        raise ValueError(f"the input has {len(text):,} characters; at most {MAX_INPUT_CHARS:,} are accepted")
    task = task_of(model)
    if task_name(model) == "parity":
        problem = par.parse(text, size=task.size)
        batch = parity_batch(par.from_vectors([problem.vector], size=task.size))
        return ACTInput(batch["inputs"], batch["mask"], [str(problem.target)], [par.format_vector(problem.vector)])
    problem = add.parse(text, task)
    batch = addition_batch([problem], task)
    return ACTInput(batch["inputs"], batch["mask"], [str(s) for s in problem.sums], [str(n) for n in problem.numbers])


def halt_patch(ponder: int | None, offset: float, max_ponder: int) -> list:
    """Forward hooks adding ``offset`` to the halting logit at ponder step ``ponder`` (None: every step).

    A large positive offset makes the model halt there; a large negative one keeps it pondering.
    """
    if ponder is not None and not 0 <= int(ponder) < max_ponder:
        raise ValueError(f"ponder step {ponder} is out of range; allowed 0..{max_ponder - 1} (max_ponder - 1)")
    if not np.isfinite(offset):
        raise ValueError(f"offset={offset} must be a finite number")

    def shift(logit, hook):
        return logit + float(offset)

    if ponder is None:
        return [(lambda name: name.endswith("hook_halt_logit"), shift)]
    return [(lambda name, n=int(ponder): name.endswith(f".ponder.{n}.hook_halt_logit"), shift)]


def trace(model, x: ACTInput, fwd_hooks=()) -> pd.DataFrame:
    """Halting at every ponder step (``models.act_eval.halting_trace``), optionally under hooks.

    Columns: t, n (ponder step from 1), N, R, h, cum_halt, p.
    """
    with model.hooks(fwd_hooks=list(fwd_hooks)):
        return halting_trace(model, x.inputs, x.mask)


def _predictions(model, outputs: torch.Tensor) -> list[str]:
    """Decoded answer per input step from outputs [T, output_size]."""
    if task_name(model) == "parity":
        return [str(int(o[0] > 0)) for o in outputs]
    groups = outputs.view(outputs.shape[0], -1, model.cfg.n_classes).argmax(-1)
    return ["?" if (s := add.decode_sum(g.tolist())) is None else str(s) for g in groups]


@torch.no_grad()
def per_step(model, x: ACTInput, fwd_hooks=()) -> pd.DataFrame:
    """One row per input step: t, item, N (ponder steps), R, ponder_cost, prediction, target, correct."""
    out = model.run_with_hooks(x.inputs, x.mask, fwd_hooks=list(fwd_hooks)) if fwd_hooks else model(x.inputs, x.mask)
    T = int(x.mask[0].sum())
    pred = _predictions(model, out.outputs[0, :T])
    return pd.DataFrame({
        "t": np.arange(T), "item": x.items[:T] if len(x.items) == T else [x.items[0]] * T,
        "N": out.n_steps[0, :T].numpy(), "R": out.remainder[0, :T].numpy(),
        "ponder_cost": out.ponder_cost[0, :T].numpy(), "prediction": pred, "target": x.targets[:T],
        "correct": [a == b for a, b in zip(pred, x.targets[:T])],
    })


def difficulties(model) -> tuple[str, ...]:
    return DIFFICULTY[task_name(model)]


def ponder_vs_difficulty(model, n: int, seed: int, by: str | None = None) -> pd.DataFrame:
    """Mean ponder time and error per difficulty level on ``n`` fresh problems (1..5000)."""
    if not 1 <= int(n) <= 5000:
        raise ValueError(f"n={n} problems is out of range; allowed 1..5000")
    by = by or difficulties(model)[0]
    if by not in difficulties(model):
        raise ValueError(f"difficulty {by!r}; allowed for {task_name(model)}: {difficulties(model)}")
    ev = evaluate(model, fresh_problems(model, int(n), np.random.default_rng(int(seed))))
    return ponder_by(ev, by)
