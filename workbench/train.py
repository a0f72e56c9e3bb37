"""One trainer for every model of the workbench.

A model brings a ``TrainSpec``: the model (with ``loss(batch) -> (loss, stats)``,
``config_dict()`` and ``from_config``; build it after ``torch.manual_seed(seed)`` so every
rank starts from the same weights), a batch maker ``make_batch(rng, step)`` and an
optional ``evaluate(model) -> dict``. The trainer adds AdamW with warm-up and cosine
decay, a progress bar, periodic evaluation, atomic checkpoints (``workbench.checkpoints``
plus ``train_state.pt`` for the optimizer), resume after interruption, and a clear stop on
a non-finite loss that keeps the last good checkpoint.

Determinism: the batch of step s on rank r is drawn from
``numpy.random.default_rng([seed, r, s])``, so a resumed run sees exactly the batches an
uninterrupted run would have seen.

Under ``torchrun`` (``WORLD_SIZE`` > 1) the same code trains with DistributedDataParallel
(gloo on CPU, nccl on GPU); rank 0 evaluates and writes checkpoints.
"""

from __future__ import annotations

import math
import multiprocessing as mp
import os
import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from tqdm.auto import tqdm

from . import checkpoints

TRAIN_STATE = "train_state.pt"


class TrainingError(RuntimeError):
    """Training stopped (e.g. a non-finite loss); the last good checkpoint is kept."""


@dataclass
class TrainConfig:
    steps: int = 1000
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.01
    warmup: int = 100
    min_lr_frac: float = 0.1  # cosine decays to lr * min_lr_frac
    grad_clip: float = 1.0
    seed: int = 0
    eval_every: int = 500
    checkpoint_every: int = 500
    out: str = "runs/model"
    resume: bool = False
    time_limit_min: Optional[float] = None  # stop (and checkpoint) after this much wall time
    threads: Optional[int] = None
    progress: bool = True
    device: str = "cpu"  # "cuda" trains on a GPU; checkpoints are always written from CPU copies
    data_workers: int = 0  # >0: batches are made ahead in this many forked processes (same batches)


@dataclass
class TrainSpec:
    model: nn.Module
    make_batch: Callable[[np.random.Generator, int], Any]
    evaluate: Optional[Callable[[nn.Module], dict]] = None
    extra_config: dict = field(default_factory=dict)  # stored in config.json (e.g. the task)


class _Objective(nn.Module):
    """Lets DistributedDataParallel see the model's loss as its forward."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, batch):
        return self.model.loss(batch)


def to_device(batch: Any, device: str | torch.device) -> Any:
    """Tensors inside dicts, lists and tuples moved to ``device`` (other leaves unchanged)."""
    if torch.is_tensor(batch):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(to_device(v, device) for v in batch)
    return batch


def lr_at(step: int, cfg: TrainConfig) -> float:
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    frac = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return cfg.lr * (cfg.min_lr_frac + (1 - cfg.min_lr_frac) * 0.5 * (1 + math.cos(math.pi * min(1.0, frac))))


def hardware() -> str:
    cpu = f"{os.cpu_count()} CPU cores, {torch.get_num_threads()} torch threads"
    gpu = f", {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""
    return f"{platform.machine()} {cpu}{gpu}, torch {torch.__version__}"


def _dist_info() -> tuple[int, int]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return (dist.get_rank(), world) if world > 1 else (0, 1)


def train(spec: TrainSpec, cfg: TrainConfig) -> dict:
    """Train ``spec.model`` in place; returns the final metrics (also in ``metrics.json``)."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    rank, world = _dist_info()
    out = Path(cfg.out)
    model = spec.model.to(cfg.device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    start, wall_before, history = 0, 0.0, []
    if cfg.resume and (out / TRAIN_STATE).is_file():
        start, wall_before, history = _resume(model, optimizer, out, spec)
    objective = _Objective(model)
    if world > 1:
        objective = nn.parallel.DistributedDataParallel(objective)
    extra = {**spec.extra_config, "train": asdict(cfg) | {"world_size": world}}

    def checkpoint(step: int, metrics: dict) -> None:
        if rank != 0:
            return
        checkpoints.save(out, model, extra=extra)
        state = {"step": step, "optimizer": optimizer.state_dict(), "wall_s": wall_before + time.time() - t0,
                 "history": history}
        checkpoints.atomic_write(out / TRAIN_STATE, lambda tmp: torch.save(state, tmp))
        checkpoints.write_json(out / checkpoints.METRICS, metrics)

    def metrics_now(step: int, evaluation: dict) -> dict:
        return {
            "step": step,
            "evaluation": evaluation,
            "train_wall_s": round(wall_before + time.time() - t0, 1),
            "hardware": hardware(),
            "world_size": world,
            "seed": cfg.seed,
            "history": history[-200:],
        }

    batches = _Batches(spec.make_batch, cfg, rank, start)
    t0 = time.time()
    model.train()
    bar = tqdm(range(start, cfg.steps), initial=start, total=cfg.steps, disable=not cfg.progress or rank != 0,
               desc=f"train {out.name}", dynamic_ncols=True)
    step, last_eval = start, {}
    for step in bar:
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, cfg)
        batch = to_device(batches.get(step), cfg.device)
        loss, stats = objective(batch)
        stats = {k: float(v) for k, v in stats.items()}
        bad = torch.tensor(0.0 if torch.isfinite(loss) else 1.0)
        if world > 1:
            dist.all_reduce(bad)
        if bad > 0:
            bar.close()
            kept = f"the last good checkpoint (step {_saved_step(out)}) is kept in {out}" if (out / TRAIN_STATE).is_file() \
                else "no checkpoint had been written yet"
            raise TrainingError(f"non-finite loss ({loss.item()}) at step {step}; training stopped; {kept}. "
                                "Try a lower --lr or a stronger --grad-clip.")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        optimizer.step()
        if step % 20 == 0:
            history.append({"step": step, "loss": round(loss.item(), 5), **{k: round(v, 4) for k, v in stats.items()}})
            bar.set_postfix(loss=f"{loss.item():.4f}", **{k: f"{v:.3f}" for k, v in list(stats.items())[-2:]})
        done = step + 1
        timed_out = cfg.time_limit_min is not None and time.time() - t0 > 60 * cfg.time_limit_min
        if spec.evaluate and (done % cfg.eval_every == 0 or done == cfg.steps or timed_out) and rank == 0:
            model.eval()
            last_eval = spec.evaluate(model)
            model.train()
            bar.write(f"step {done}: " + ", ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}"
                                                 for k, v in last_eval.items()))
        if done % cfg.checkpoint_every == 0 or done == cfg.steps or timed_out:
            checkpoint(done, metrics_now(done, last_eval))
        if timed_out:
            bar.write(f"time limit of {cfg.time_limit_min} min reached at step {done}; checkpoint written")
            break
    bar.close()
    batches.close()
    model.eval()
    if world > 1:
        dist.barrier()
    return metrics_now(step + 1 if cfg.steps > start else start, last_eval)


_MAKE_BATCH: Optional[Callable] = None  # set before forking, so workers inherit it (closures don't pickle)


def _batch_in_worker(seed: tuple[int, int, int], step: int):
    torch.set_num_threads(1)
    return _MAKE_BATCH(np.random.default_rng(list(seed)), step)


class _Batches:
    """The batch of each step, from rng [seed, rank, step]: made here, or ahead by forked workers.

    Workers keep at most 2 batches each in flight, so memory stays bounded on long runs.
    """

    def __init__(self, make_batch: Callable, cfg: TrainConfig, rank: int, start: int):
        global _MAKE_BATCH
        self.make, self.cfg, self.rank, self.pool, self.pending = make_batch, cfg, rank, None, {}
        if cfg.data_workers > 0:
            _MAKE_BATCH = make_batch
            self.pool = mp.get_context("fork").Pool(cfg.data_workers)
            self.next = start
            self._fill(start)

    def _fill(self, step: int) -> None:
        while self.next < min(step + 2 * self.cfg.data_workers, self.cfg.steps):
            seed = (self.cfg.seed, self.rank, self.next)
            self.pending[self.next] = self.pool.apply_async(_batch_in_worker, (seed, self.next))
            self.next += 1

    def get(self, step: int):
        if self.pool is None:
            return self.make(np.random.default_rng([self.cfg.seed, self.rank, step]), step)
        self._fill(step)
        return self.pending.pop(step).get()

    def close(self) -> None:
        if self.pool is not None:
            self.pool.terminate()
            self.pool = None


def _saved_step(out: Path) -> int:
    return int(torch.load(out / TRAIN_STATE, weights_only=False)["step"])


def _resume(model: nn.Module, optimizer: torch.optim.Optimizer, out: Path, spec: TrainSpec):
    saved = checkpoints.read_json(out / checkpoints.CONFIG).get("config", {})
    current = checkpoints.as_saved(model.config_dict())
    if saved != current:
        diff = sorted(k for k in set(saved) | set(current) if saved.get(k) != current.get(k))
        raise checkpoints.CheckpointError(
            f"{out / checkpoints.CONFIG}: cannot resume, the model config differs in {diff}; "
            "use a new --out folder or the same options")
    checkpoints.load_weights(model, out / checkpoints.WEIGHTS)
    state = torch.load(out / TRAIN_STATE, weights_only=False)
    optimizer.load_state_dict(state["optimizer"])
    return int(state["step"]), float(state.get("wall_s", 0.0)), list(state.get("history", []))
