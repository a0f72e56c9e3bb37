"""Training batches for the recursive reasoner: algorithmic supervision and error noise.

Every batch is built from freshly sampled problems with the exact algorithm of
``workbench.tasks.graph_arith`` (``encode`` + ``next_state``). Three kinds, chosen by the
model's config:

* ``transition_batch`` (discrete latent, algorithmic supervision): one teacher-forced
  step from a state to the next exact state. The start state is a true intermediate state
  of the exact algorithm (step t, uniform over 0..solved) or, with probability
  ``random_states``, a random partly filled state (each slot filled with probability q,
  drawn per example and per role: operand slots q ~ U(0.5, 1), defining slots q ~ U(0, 0.5))
  — many more fresh multi-operand sums per sequence than the trajectory offers.
* ``rollout_batch`` with ``supervision="algorithmic"`` (continuous latent): the same start
  states, then ``bptt_steps`` supervised steps.
* ``rollout_batch`` with ``supervision="final"`` (end-to-end baselines): the initial state
  and the solved state after ``fixed_steps`` steps, nothing in between.

Error correction: with probability ``error_prob`` per batch, values written at the last
step (for random states: any written value) are replaced with probability
``error_frac`` by uniform random values; targets stay clean.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch

from workbench.tasks import graph_arith as ga

from .reasoner import ReasonerConfig


def pad_stack(encs: list[ga.Encoded], name_pool: int, modulus: int,
              lengths: list[int] | np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Stack encodings into padded arrays [B, L(, k)]; padding is the PAD token.

    ``lengths``: keep only the first ``lengths[i]`` tokens of encoding i (default: all)."""
    keep = [len(e.answer) for e in encs] if lengths is None else [min(int(n), len(e.answer))
                                                                    for n, e in zip(lengths, encs)]
    B, L = len(encs), max(keep)
    pad_row = np.array([ga.PAD, name_pool, ga.op_na(), ga.value_na(modulus)])
    out = {
        "factors": np.tile(pad_row, (B, L, 1)),
        "answer": np.full((B, L), ga.value_na(modulus)),
        "slot": np.zeros((B, L), dtype=bool),
        "fill_step": np.zeros((B, L), dtype=np.int64),
        "deps": np.full((B, L, 3), -1),
        "role": np.zeros((B, L), dtype=np.int64),
        "depth": np.full((B, L), -1),
    }
    for i, (e, n) in enumerate(zip(encs, keep)):
        for key in out:
            out[key][i, :n] = getattr(e, key)[:n]
    return out


def encode_batch(problems: list[ga.Problem], cfg: ReasonerConfig) -> dict[str, np.ndarray]:
    for i, p in enumerate(problems):
        if p.modulus != cfg.modulus:
            raise ValueError(f"problem {i} is over Z_{p.modulus} but the model computes in Z_{cfg.modulus}; "
                             f"parse or sample it with modulus={cfg.modulus}")
    return pad_stack([ga.encode(p, cfg.scheme, cfg.name_pool) for p in problems], cfg.name_pool, cfg.modulus)


def tokens(problems: list[ga.Problem], cfg: ReasonerConfig) -> torch.Tensor:
    """Initial factored tokens of a list of problems: [B, L, 4] long."""
    return torch.from_numpy(encode_batch(problems, cfg)["factors"])


def _sample(task: ga.GraphArithConfig, min_nodes: int, n: int, rng: np.random.Generator) -> list[ga.Problem]:
    n_nodes = int(rng.integers(min_nodes, task.n_nodes + 1))
    return ga.sample(replace(task, n_nodes=n_nodes), n, rng)


def _start_states(arr: dict, cfg: ReasonerConfig, rng: np.random.Generator, allow_random: bool = True):
    """Start values, filled mask and 'written at the last step' mask, each [B, L]."""
    B, L = arr["slot"].shape
    slot, fill_step = arr["slot"], arr["fill_step"]
    t = rng.integers(0, fill_step.max(axis=1) + 1)[:, None]  # uniform over 0..solved
    filled_traj = slot & (fill_step <= t)
    fresh_traj = slot & (fill_step == t)
    # one fill probability per example and per role: operand slots mostly filled (q ~ U(0.5, 1)),
    # defining slots mostly empty (q ~ U(0, 0.5)), so "operands known, result not yet" - a
    # fresh multi-operand sum, the slowest thing to learn - is common
    q = np.where(arr["role"] == ga.ROLE_OPERAND, 0.5 + 0.5 * rng.random((B, 1)), 0.5 * rng.random((B, 1)))
    filled_rand = slot & (rng.random((B, L)) < q)
    use_random = (rng.random((B, 1)) < cfg.random_states) & allow_random
    filled = np.where(use_random, filled_rand, filled_traj)
    fresh = np.where(use_random, filled_rand, fresh_traj)
    values = np.where(filled, arr["answer"], arr["factors"][..., 3])
    return values, filled, fresh


def _corrupt(values, fresh, cfg: ReasonerConfig, rng: np.random.Generator):
    if rng.random() >= cfg.error_prob:
        return values
    hit = fresh & (rng.random(values.shape) < cfg.error_frac)
    return np.where(hit, rng.integers(0, cfg.modulus, size=values.shape), values)


def _with_values(factors: np.ndarray, values: np.ndarray) -> torch.Tensor:
    out = factors.copy()
    out[..., 3] = values
    return torch.from_numpy(out)


def transition_batch(cfg: ReasonerConfig, task: ga.GraphArithConfig, n: int, rng, min_nodes: int) -> dict:
    """One teacher-forced step: inputs [B, L, 4], targets [B, L, 4], weight [B, L]."""
    arr = encode_batch(_sample(task, min_nodes, n, rng), cfg)
    values, filled, fresh = _start_states(arr, cfg, rng)
    target, target_filled = ga.next_state(values, filled, arr["answer"], arr["slot"], arr["deps"])
    new = target_filled & ~filled
    new_define, fan_in = new & (arr["role"] == ga.ROLE_DEFINE), (arr["deps"] >= 0).sum(-1)
    return {
        "inputs": _with_values(arr["factors"], _corrupt(values, fresh, cfg, rng)),
        "targets": _with_values(arr["factors"], target),
        "weight": torch.from_numpy(np.where(new, cfg.new_slot_weight, 1.0)).float(),
        "new_sum": torch.from_numpy(new_define & (fan_in >= 2)),
        "new_sum2": torch.from_numpy(new_define & (fan_in == 2)),
        "new_sum3": torch.from_numpy(new_define & (fan_in == 3)),
        "new_operand": torch.from_numpy(new & (arr["role"] == ga.ROLE_OPERAND)),
    }


def rollout_batch(cfg: ReasonerConfig, task: ga.GraphArithConfig, n: int, rng, min_nodes: int) -> dict:
    """A supervised rollout: inputs [B, L, 4], targets [B, K, L, 4], weight [B, K, L]."""
    arr = encode_batch(_sample(task, min_nodes, n, rng), cfg)
    if cfg.supervision == "final":
        K = cfg.fixed_steps
        values = arr["factors"][..., 3]
        solved = np.where(arr["slot"], arr["answer"], values)
        targets = np.repeat(solved[:, None], K, axis=1)
        weight = np.zeros(targets.shape, dtype=np.float32)
        weight[:, -1] = 1.0
        return {
            "inputs": _with_values(arr["factors"], values),
            "targets": _with_values(np.repeat(arr["factors"][:, None], K, axis=1), targets),
            "weight": torch.from_numpy(weight),
        }
    values, filled, fresh = _start_states(arr, cfg, rng)
    steps, weights, cur, cur_filled = [], [], values, filled
    for _ in range(cfg.bptt_steps):
        nxt, nxt_filled = ga.next_state(cur, cur_filled, arr["answer"], arr["slot"], arr["deps"])
        steps.append(nxt)
        weights.append(np.where(nxt_filled & ~cur_filled, cfg.new_slot_weight, 1.0))
        cur, cur_filled = nxt, nxt_filled
    K = cfg.bptt_steps
    return {
        "inputs": _with_values(arr["factors"], _corrupt(values, fresh, cfg, rng)),
        "targets": _with_values(np.repeat(arr["factors"][:, None], K, axis=1), np.stack(steps, axis=1)),
        "weight": torch.from_numpy(np.stack(weights, axis=1)).float(),
    }


def training_batch(cfg: ReasonerConfig, task: ga.GraphArithConfig, n: int, rng, min_nodes: int) -> dict:
    """The batch kind this configuration trains on."""
    if cfg.latent == "discrete" and cfg.supervision == "algorithmic":
        return transition_batch(cfg, task, n, rng, min_nodes)
    return rollout_batch(cfg, task, n, rng, min_nodes)
