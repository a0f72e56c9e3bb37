"""Evaluating ACT models on fresh problems: error, ponder time, ponder against difficulty.

Every function returns tidy pandas DataFrames (one row per input step, per model, or per
ponder step) so the CLI, the app and notebooks use the same objects.

Error is the paper's sequence error: a parity vector is wrong if its bit is wrong; an
addition sequence is wrong if any digit of any running sum is wrong. Ponder time is
N(t), the number of state updates at an input step; ``ponder_cost`` is N(t) + R(t).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from workbench.tasks import parity as par

from . import registry
from .act import ACT
from .act_data import addition_batch, parity_batch

DIFFICULTY = {"parity": ("n_nonzero",), "addition": ("digits", "position")}


@dataclass
class ACTEvaluation:
    steps: pd.DataFrame  # one row per real input step: item, position, difficulty, correct, ponder, ponder_cost
    task_name: str
    max_ponder: int | None = None  # the model's cap M on ponder steps (ACT on); None without ACT

    def summary(self) -> dict:
        s = self.steps
        seq_wrong = ~s.groupby("item")["correct"].all()
        return {
            "error": float(seq_wrong.mean()),
            "step_error": float(1 - s["correct"].mean()),
            "mean_ponder": float(s["ponder"].mean()),
            "mean_ponder_cost": float(s["ponder_cost"].mean()),
            "max_ponder": int(s["ponder"].max()),
            "n": int(s["item"].nunique()),
        }


def task_of(model: ACT):
    """The model's task (``ParityConfig`` or ``AdditionConfig``): ``models.registry.task_of``."""
    return registry.task_of(model)


def fresh_problems(model: ACT, n: int, seed) -> object:
    """``n`` fresh problems from the task the model was trained on (``models.registry.sample``)."""
    return registry.sample(model, n, seed)


@torch.no_grad()
def evaluate(model: ACT, problems, batch_size: int = 1000, fwd_hooks: list | None = None) -> ACTEvaluation:
    """Run ``problems`` (a ``ParitySet`` or a list of ``AdditionProblem``) through the model.

    ``fwd_hooks`` (TransformerLens ``(name or filter, hook)`` pairs) run the model with those
    hooks attached, e.g. ``PONDER_TO_CAP``.
    """
    name, task = model.cfg.task_name, task_of(model)
    frames = []
    for start in range(0, len(problems), batch_size):
        if name == "parity":
            chunk = par.ParitySet(*(a[start : start + batch_size] for a in (
                problems.vectors, problems.target, problems.n_nonzero, problems.n_plus)))
            batch = parity_batch(chunk)
        else:
            batch = addition_batch(problems[start : start + batch_size], task)
        out = model.run_with_hooks(batch["inputs"], batch["mask"], fwd_hooks=fwd_hooks) if fwd_hooks \
            else model(batch["inputs"], batch["mask"])
        _, wrong = model.task_loss(out, batch["targets"], batch["mask"])
        mask = batch["mask"].numpy()
        B, T = mask.shape
        item, position = np.meshgrid(np.arange(start, start + B), np.arange(T), indexing="ij")
        df = pd.DataFrame({
            "item": item[mask],
            "position": position[mask],
            "correct": ~wrong.numpy()[mask],
            "ponder": out.n_steps.numpy()[mask],
            "ponder_cost": out.ponder_cost.numpy()[mask],
        })
        if name == "parity":
            df["n_nonzero"] = batch["n_nonzero"].numpy()
        else:
            df["digits"] = batch["digits"].numpy()[mask]
        frames.append(df)
    return ACTEvaluation(pd.concat(frames, ignore_index=True), name, model.cfg.max_ponder if model.cfg.act else None)


# every halting logit pushed down by 20: h ~ 0, so every input ponders up to the cap M and the
# output is (almost entirely) that of the M-th ponder step
PONDER_TO_CAP = [(lambda name: name.endswith("hook_halt_logit"), lambda logit, hook: logit - 20.0)]


def ponder_by(ev: ACTEvaluation, by: str) -> pd.DataFrame:
    """Mean ponder time and error per difficulty level: one row per value of ``by``.

    ``at_cap`` is the share of steps that pondered up to the cap M (``max_ponder``; NaN
    without ACT); ``error_at_cap`` and ``error_below_cap`` split the error between them.
    """
    if by not in ev.steps:
        raise ValueError(f"unknown difficulty {by!r}; allowed for {ev.task_name}: {DIFFICULTY[ev.task_name]}")
    s = ev.steps
    cap = s["ponder"] >= ev.max_ponder if ev.max_ponder else pd.Series(False, index=s.index)
    g = s.groupby(by)
    wrong = ~s["correct"]
    nan = float("nan")
    return pd.DataFrame({
        "mean_ponder": g["ponder"].mean(),
        "std_ponder": g["ponder"].std().fillna(0.0),
        "median_ponder": g["ponder"].median(),
        "mean_ponder_cost": g["ponder_cost"].mean(),
        "step_error": 1 - g["correct"].mean(),
        "at_cap": cap.groupby(s[by]).mean() if ev.max_ponder else nan,
        "error_at_cap": wrong[cap].groupby(s[by][cap]).mean() if ev.max_ponder else nan,
        "error_below_cap": wrong[~cap].groupby(s[by][~cap]).mean() if ev.max_ponder else nan,
        "n": g.size(),
    }).reset_index()


def compare(models: dict[str, ACT], n: int, seed, batch_size: int = 1000) -> pd.DataFrame:
    """One row per model: ACT on/off, tau, cell, error and ponder time on the same fresh problems.

    All models must share a task; the problems come from the first model's task.
    """
    first = next(iter(models.values()))
    problems = fresh_problems(first, n, seed)
    rows = []
    for name, model in models.items():
        if (model.cfg.task_name, model.cfg.task) != (first.cfg.task_name, first.cfg.task):
            raise ValueError(f"model {name!r} was trained on another task than {next(iter(models))!r}")
        c = model.cfg
        rows.append({"model": name, "act": c.act, "tau": c.tau if c.act else None, "cell": c.cell,
                     "hidden": c.hidden, **evaluate(model, problems, batch_size).summary()})
    return pd.DataFrame(rows)


@torch.no_grad()
def halting_trace(model: ACT, inputs: torch.Tensor, mask: torch.Tensor | None = None, item: int = 0) -> pd.DataFrame:
    """Halting probabilities of one sample at every ponder step of every input step.

    Returns one row per (t, ponder) that the sample ran (``ponder`` = n, 0-based as the hooks;
    ``n`` = how many ponder steps ran so, 1-based): h, cumulative h, the weight p, and
    the step's N(t) and R(t). Read from the hooks (``time.{t}.ponder.{n}.hook_*``).
    """
    _, cache = model.run_with_cache(inputs, mask, names_filter=lambda k: k.endswith(
        ("hook_halt", "hook_cum_halt", "hook_weight", "hook_n_steps", "hook_remainder")))
    rows = []
    T = inputs.shape[1]
    for t in range(T):
        N = int(cache[f"time.{t}.hook_n_steps"][item])
        for n in range(N):
            pre = f"time.{t}.ponder.{n}."
            rows.append({
                "t": t, "ponder": n, "n": n + 1, "N": N, "R": float(cache[f"time.{t}.hook_remainder"][item]),
                "h": float(cache[pre + "hook_halt"][item]) if model.cfg.act else float("nan"),
                "cum_halt": float(cache[pre + "hook_cum_halt"][item]) if model.cfg.act else float("nan"),
                "p": float(cache[pre + "hook_weight"][item]),
            })
    return pd.DataFrame(rows)
