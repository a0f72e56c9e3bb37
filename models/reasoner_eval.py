"""Evaluating a reasoner on fresh problems: fully solved, per-node accuracy, per-step accuracy.

"Fully solved" is the paper's metric: after the rollout every factor of every token equals
the exact algorithm's solved state. The number of steps is the model's
``steps_for_depth(depth)`` for the deepest problem in a batch (batches are grouped by
depth), so extra steps beyond a problem's own need must leave its solution unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from workbench.tasks import graph_arith as ga

from .reasoner import Reasoner
from .reasoner_data import encode_batch


_ATTENTION_BUDGET = 2**26  # attention-score elements per batch (256 MB in float32)


@dataclass
class Evaluation:
    fully_solved: np.ndarray  # [n] bool
    node_acc: np.ndarray  # [n] fraction of defining slots with the right value
    steps: np.ndarray  # [n] recurrence steps run
    per_step: pd.DataFrame  # depth, step, solved, n: nodes of depth d right after step t
    solved_step: np.ndarray  # [n] first step t from which the state is the solution to the end; -1: never
    per_position: pd.DataFrame  # position (start of a 64-token bucket), solved, n: defining slots right at the end

    def summary(self) -> dict:
        return {
            "fully_solved": float(self.fully_solved.mean()),
            "node_acc": float(self.node_acc.mean()),
            "mean_steps": float(self.steps.mean()),
            "max_steps": int(self.steps.max()),
            "n": int(len(self.fully_solved)),
        }

    def solved_by_step(self) -> pd.DataFrame:
        """Fraction of problems fully solved after step t (and from then on), t = 0 .. the longest rollout."""
        T = int(self.steps.max())
        return pd.DataFrame({"step": np.arange(T),
                             "fully_solved": [float(((self.solved_step >= 0) & (self.solved_step <= t)).mean())
                                              for t in range(T)]})


def _device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


def ood_task(train_task: ga.GraphArithConfig, n_nodes: int) -> ga.GraphArithConfig:
    """The task at another size: the depth cap scales with the number of nodes."""
    depth = max(train_task.max_depth, round(train_task.max_depth * n_nodes / train_task.n_nodes))
    return replace(train_task, n_nodes=n_nodes, max_depth=depth, n_leaves=min(train_task.n_leaves, n_nodes))


def per_size(n: int | list[int], sizes: list[int]) -> list[int]:
    """One problem count per size from one count for all sizes or a list of one per size."""
    counts = [n] * len(sizes) if isinstance(n, int) else list(n)
    if len(counts) != len(sizes):
        raise ValueError(f"n: {len(counts)} counts for {len(sizes)} sizes; give one count or one per size")
    return counts


@torch.no_grad()
def evaluate(model: Reasoner, problems: list[ga.Problem], batch_size: int = 64, progress: bool = False) -> Evaluation:
    cfg = model.cfg
    n = len(problems)
    order = sorted(range(n), key=lambda i: (problems[i].depth, ga.n_tokens(problems[i])))
    fully, node_acc, steps = np.zeros(n, bool), np.zeros(n), np.zeros(n, int)
    solved_step = np.full(n, -1)
    hits: dict[tuple[int, int], list[int]] = {}
    by_pos: dict[int, list[int]] = {}
    chunks, i = [], 0
    while i < n:  # long problems go in smaller batches: attention memory grows as L^2
        L = max(ga.n_tokens(problems[j]) for j in order[i : i + batch_size])
        size = max(1, min(batch_size, _ATTENTION_BUDGET // (cfg.n_heads * L * L)))
        chunks.append(order[i : i + size])
        i += size
    for chunk in tqdm(chunks, disable=not progress, desc="evaluate", leave=False):
        batch = [problems[i] for i in chunk]
        arr = encode_batch(batch, cfg)
        T = cfg.steps_for_depth(max(p.depth for p in batch))
        with model.fused_attention():  # accuracy only: the faster kernel
            out = model(torch.from_numpy(arr["factors"]).to(_device(model)), steps=T)
        codes = out.codes.cpu().numpy()  # [B, T, L, 4]
        solved = arr["factors"].copy()
        solved[..., 3] = np.where(arr["slot"], arr["answer"], arr["factors"][..., 3])
        valid = arr["factors"][..., 0] != ga.PAD
        final = codes[:, -1]
        fully[chunk] = ((final == solved).all(-1) | ~valid).all(-1)
        # solved after step t: every token right; the first t from which that holds to the end
        right_at = ((codes == solved[:, None]).all(-1) | ~valid[:, None]).all(-1)  # [B, T]
        stays = np.flip(np.logical_and.accumulate(np.flip(right_at, 1), axis=1), 1)
        solved_step[chunk] = np.where(stays.any(1), stays.argmax(1), -1)
        define = arr["role"] == ga.ROLE_DEFINE
        right = codes[..., 3] == arr["answer"][:, None]  # [B, T, L]
        node_acc[chunk] = (right[:, -1] & define).sum(1) / define.sum(1)
        steps[chunk] = T
        for b, pos in zip(*np.nonzero(define)):
            h = by_pos.setdefault(int(pos) // 64 * 64, [0, 0])
            h[0] += int(right[b, -1, pos])
            h[1] += 1
        for d in np.unique(arr["depth"][define]):
            sel = define & (arr["depth"] == d)
            for t in range(T):
                h = hits.setdefault((int(d), t), [0, 0])  # solved after steps.{t}
                h[0] += int((right[:, t] & sel).sum())
                h[1] += int(sel.sum())
    rows = [{"depth": d, "step": t, "solved": a / b, "n": b} for (d, t), (a, b) in sorted(hits.items())]
    per_position = pd.DataFrame([{"position": q, "solved": a / b, "n": b} for q, (a, b) in sorted(by_pos.items())])
    return Evaluation(fully, node_acc, steps, pd.DataFrame(rows), solved_step, per_position)


def ood_table(models: dict[str, Reasoner], train_task: ga.GraphArithConfig, sizes: list[int], n: int | list[int],
              seed: int, batch_size: int = 64, progress: bool = True) -> pd.DataFrame:
    """Fully solved vs number of nodes for each model (the paper's table), tidy rows.

    ``n``: fresh problems per size, one number for every size or one per size (large graphs cost
    ~L^2 per step over more steps, so the largest sizes may get fewer)."""
    counts = per_size(n, sizes)
    rows = []
    for size, count in tqdm(list(zip(sizes, counts)), disable=not progress, desc="sizes"):
        problems = ga.sample(ood_task(train_task, size), count, np.random.default_rng([seed, size]))
        for name, model in models.items():
            ev = evaluate(model, problems, batch_size)
            rows.append({"model": name, "n_nodes": size, **ev.summary()})
    return pd.DataFrame(rows)


@torch.no_grad()
def repair_rate(model: Reasoner, problems: list[ga.Problem], seed: int = 0, batch_size: int = 64) -> dict:
    """One-step error correction, measured through hooks.

    For each problem, at step s = (steps needed) // 2 the codes of every value written at
    that step are replaced (``steps.{s}.bottleneck.hook_codes``) by a random wrong value;
    the repair rate is the fraction of those slots holding the right value one step later.
    """
    cfg = model.cfg
    rng = np.random.default_rng(seed)
    repaired = corrupted = 0
    for i in range(0, len(problems), batch_size):
        batch = problems[i : i + batch_size]
        arr = encode_batch(batch, cfg)
        s = max(1, ga.steps_needed(min(p.depth for p in batch), cfg.scheme) // 2)
        hit = arr["slot"] & (arr["fill_step"] == s + 1)  # written by step index s
        if not hit.any():
            continue
        wrong = (arr["answer"] + rng.integers(1, cfg.modulus, size=hit.shape)) % cfg.modulus
        hit_t, wrong_t = torch.from_numpy(hit).to(_device(model)), torch.from_numpy(wrong).to(_device(model))

        def corrupt(codes, hook):
            codes = codes.clone()
            codes[..., 3] = torch.where(hit_t, wrong_t, codes[..., 3])
            return codes

        out = model.run_with_hooks(torch.from_numpy(arr["factors"]).to(_device(model)), steps=s + 2,
                                   fwd_hooks=[(f"steps.{s}.bottleneck.hook_codes", corrupt)])
        after = out.codes[:, s + 1, :, 3].cpu().numpy()
        repaired += int(((after == arr["answer"]) & hit).sum())
        corrupted += int(hit.sum())
    return {"repair_rate": repaired / max(1, corrupted), "corrupted": corrupted}
