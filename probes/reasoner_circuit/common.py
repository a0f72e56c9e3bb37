"""Shared pieces of the circuit study: the result type, problem sampling, batching, token structure."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Optional

import numpy as np
import plotly.graph_objects as go
import torch
from torch import Tensor
from tqdm.auto import tqdm

from models.reasoner import Reasoner
from models.reasoner_data import encode_batch
from models.reasoner_eval import ood_task
from probes import reasoner as pr
from workbench.results import Result
from workbench.tasks import graph_arith as ga


DEF_ROUTES = ("gather", "gather_1", "gather_2", "gather_3", "parent_defs", "def_self", "def_other")
OP_ROUTES = ("lookup", "operand_self", "operand_other")
ROUTES = DEF_ROUTES + OP_ROUTES
THRESHOLDS = (0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 0.9)
STATES = ("exact", "rollout")  # what a graph-recovery readout of step s starts from
COMPONENTS = ("hook_attn_out", "hook_mlp_out", "hook_resid_post")
PAIR_KINDS = ("axis_a", "axis_b", "diagonal", "antidiagonal", "other")
ATTENTION_BUDGET = 2**23  # attention elements [batch x head x query x key] per forward


# ----------------------------------------------------------------- results
@dataclass
class CircuitResult(Result):
    """A ``Result`` whose figure comes from this study's own builder (``builder(result)``)."""

    builder: Optional[Callable] = None

    def figure(self, value: str | None = None, **kwargs) -> go.Figure:
        return self.builder(self, **kwargs)


def check_reasoner(model) -> Reasoner:
    """The model itself if it is a recursive reasoner; otherwise a ``TypeError`` saying what it is."""
    if not isinstance(model, Reasoner):
        raise TypeError(f"the circuit study needs a recursive reasoner (models.reasoner.Reasoner); got "
                        f"{type(model).__module__}.{type(model).__name__}. Pass a reasoner zoo name or checkpoint.")
    return model


def sample_problems(model: Reasoner, n: int, n_nodes: int | None = None, seed: int = 0) -> list[ga.Problem]:
    """``n`` fresh problems of the model's task; other sizes scale the depth cap as in evaluation."""
    train = pr.task_of(model)
    task = train if n_nodes is None or n_nodes == train.n_nodes else ood_task(train, n_nodes)
    return ga.sample(task, n, np.random.default_rng([seed, task.n_nodes]))


def steps_for(model: Reasoner, problems: Sequence[ga.Problem]) -> int:
    """Rollout steps for a batch, or a clear error when the model has too few hook points."""
    depth = max(p.depth for p in problems)
    T = model.cfg.steps_for_depth(depth)
    if T > model.cfg.max_steps:
        raise ValueError(f"graphs of depth {depth} need {T} steps, but this model has hook points for "
                         f"max_steps={model.cfg.max_steps}; use smaller graphs (--nodes)")
    return T


# ----------------------------------------------------------------- batches
@dataclass
class Batch:
    index: list[int]  # problem indices (into the caller's list)
    problems: list[ga.Problem]
    encs: list[ga.Encoded]
    arr: dict  # encode_batch arrays [B, L(, k)]
    tokens: Tensor  # [B, L, 4] long
    steps: int


def batches(model: Reasoner, problems: Sequence[ga.Problem], batch_size: int, progress: bool,
            desc: str) -> Iterator[Batch]:
    """Problems in batches of similar length; long ones in smaller batches (attention is L^2)."""
    cfg = model.cfg
    order = sorted(range(len(problems)), key=lambda i: ga.n_tokens(problems[i]))
    chunks, i = [], 0
    while i < len(order):
        L = max(ga.n_tokens(problems[j]) for j in order[i: i + batch_size])
        size = max(1, min(batch_size, ATTENTION_BUDGET // (cfg.n_heads * L * L)))
        chunks.append(order[i: i + size])
        i += size
    for chunk in tqdm(chunks, disable=not progress, desc=desc, leave=False):
        batch = [problems[j] for j in chunk]
        arr = encode_batch(batch, cfg)
        encs = [ga.encode(p, cfg.scheme, cfg.name_pool) for p in batch]
        yield Batch(chunk, batch, encs, arr, torch.from_numpy(arr["factors"]), steps_for(model, batch))


def token_structure(enc: ga.Encoded) -> tuple[np.ndarray, dict[int, int], dict[int, list[int]]]:
    """(variable named at each position or -1 [L], variable -> its defining position,
    defining position of each non-leaf -> its operand positions, left to right)."""
    var = np.where(enc.factors[:, 0] == ga.VAR, enc.factors[:, 1], -1)
    define = {int(var[i]): int(i) for i in np.flatnonzero(enc.role == ga.ROLE_DEFINE)}
    operands = {}
    for q in define.values():
        ops = np.flatnonzero((enc.equation == enc.equation[q]) & (enc.role == ga.ROLE_OPERAND)).tolist()
        if ops:
            operands[q] = ops
    return var, define, operands


def allowed_keys(model: Reasoner, tokens: Tensor) -> Tensor:
    """Keys each query may attend to: [B, L, L] bool."""
    layout = model.layout(tokens)
    mask = layout.mask if layout.rows is None else layout.mask[layout.rows]  # [B | 1, 1, L|1, L]
    B, L = tokens.shape[:2]
    return mask[:, 0].expand(B, L, L)
