"""One trainer for every model of the workbench.

A model brings a ``TrainSpec``: the model (with ``loss(batch) -> (loss, stats)``,
``config_dict()`` and ``from_config``; build it after ``torch.manual_seed(seed)`` so every
rank starts from the same weights), a batch maker ``make_batch(rng, step)`` and an
optional ``evaluate(model) -> dict``. The trainer adds AdamW with warm-up and cosine
decay, a progress bar, periodic evaluation, checkpoints written as one unit (weights,
config, metrics and the training state: ``train_state.safetensors`` for the optimizer's
tensors and the RNG, ``train_state.json`` for the rest; no pickle), resume after
interruption, and a clear stop on a non-finite loss that keeps the last good checkpoint.

Determinism: the batch of step s on rank r is drawn from
``numpy.random.default_rng([seed, r, s])`` and torch's RNG is saved with the optimizer, so a
resumed run takes exactly the steps an uninterrupted run would have taken.

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
from safetensors.torch import save_file
from tqdm.auto import tqdm

from . import checkpoints

TRAIN_STATE, TRAIN_TENSORS = "train_state.json", "train_state.safetensors"


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
    resume: bool = False  # continue the run in `out` (a fresh start when it has no training state yet)
    overwrite: bool = False  # replace a finished or unfinished run in `out`
    time_limit_min: Optional[float] = None  # stop (and checkpoint) after this much wall time
    stop_at: Optional[int] = None  # stop (and checkpoint) at this step; the schedule stays that of `steps`
    threads: Optional[int] = None
    progress: bool = True
    device: str = "cpu"  # "cuda" trains on a GPU; checkpoints are always written from CPU copies
    data_workers: int = 0  # >0: batches are made ahead in this many forked processes (same batches)
    init_from: Optional[str] = None  # a fresh run starts from this checkpoint's weights (fine-tuning)

    def __post_init__(self):
        positive = {"steps": self.steps, "batch_size": self.batch_size, "eval_every": self.eval_every,
                    "checkpoint_every": self.checkpoint_every}
        for name, value in positive.items():
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}={value!r} must be a whole number >= 1")
        ranges = {"lr": (self.lr, 0.0, 1.0), "weight_decay": (self.weight_decay, 0.0, 10.0),
                  "min_lr_frac": (self.min_lr_frac, 0.0, 1.0), "grad_clip": (self.grad_clip, 0.0, 1e6)}
        for name, (value, lo, hi) in ranges.items():
            if not (isinstance(value, (int, float)) and math.isfinite(value) and lo <= value <= hi):
                raise ValueError(f"{name}={value!r} must be a number in [{lo:g}, {hi:g}]")
        if self.lr == 0:
            raise ValueError("lr=0 would not train; it must be in (0, 1]")
        if self.warmup < 0 or self.data_workers < 0:
            raise ValueError(f"warmup={self.warmup} and data_workers={self.data_workers} must be >= 0")
        if self.threads is not None and not 1 <= self.threads <= 1024:
            raise ValueError(f"threads={self.threads} must be >= 1 (or unset for torch's default)")
        if self.stop_at is not None and not (isinstance(self.stop_at, int) and 1 <= self.stop_at <= self.steps):
            raise ValueError(f"stop_at={self.stop_at!r} must be a step in 1..steps={self.steps}")
        if self.time_limit_min is not None and not (math.isfinite(self.time_limit_min) and self.time_limit_min > 0):
            raise ValueError(f"time_limit_min={self.time_limit_min} must be a positive number of minutes")
        if not str(self.out).strip():
            raise ValueError("out='' names no folder; give the run's output folder")
        try:
            torch.device(self.device)
        except RuntimeError as e:
            raise ValueError(f"device={self.device!r} is not a torch device (e.g. 'cpu', 'cuda', 'cuda:1')") from e
        if self.device.startswith("cuda") and not torch.cuda.is_available():
            raise ValueError(f"device={self.device!r} but no CUDA GPU is available here; use 'cpu'")
        if self.resume and self.overwrite:
            raise ValueError("resume and overwrite exclude each other: continue the run, or replace it")
        if self.init_from is not None and not (Path(self.init_from) / checkpoints.WEIGHTS).is_file():
            raise ValueError(f"init_from={self.init_from!r}: no {checkpoints.WEIGHTS} there; "
                             "give a checkpoint folder of the same model")


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


def train(spec: TrainSpec, cfg: TrainConfig) -> dict:
    """Train ``spec.model`` in place; returns the final metrics (also in ``metrics.json``)."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    joined = world > 1 and not dist.is_initialized()
    if joined:
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    try:
        return _train(spec, cfg, dist.get_rank() if world > 1 else 0, world)
    finally:
        if joined:
            # a group left to interpreter shutdown can abort the process (gloo's threads outlive Python)
            dist.destroy_process_group()


def _train(spec: TrainSpec, cfg: TrainConfig, rank: int, world: int) -> dict:
    out = Path(cfg.out)
    _check_out(out, cfg)
    model = spec.model.to(cfg.device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    start, wall_before, history = 0, 0.0, []
    if cfg.resume and has_state(out):
        start, wall_before, history = _resume(model, optimizer, out)
    elif cfg.init_from:
        # weights only: the optimizer, the step and the schedule start afresh, and the task may differ
        checkpoints.load_weights(model, Path(cfg.init_from) / checkpoints.WEIGHTS)
    objective = _Objective(model)
    if world > 1:
        objective = nn.parallel.DistributedDataParallel(objective)
    extra = {**spec.extra_config, "train": asdict(cfg) | {"world_size": world}}

    def checkpoint(step: int, metrics: dict) -> None:
        if rank != 0:
            return
        tensors, info = _state_parts(optimizer)
        info.update(step=step, wall_s=wall_before + time.time() - t0, history=history)
        checkpoints.save(out, model, metrics=metrics, extra=extra, more={
            TRAIN_TENSORS: lambda p: save_file(tensors, p),
            TRAIN_STATE: lambda p: checkpoints.dump_json(p, info),
        })

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
    end = cfg.stop_at or cfg.steps
    bar = tqdm(range(start, end), initial=start, total=end, disable=not cfg.progress or rank != 0,
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
            kept = f"the last good checkpoint (step {saved_step(out)}) is kept in {out}" if has_state(out) \
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
        if spec.evaluate and (done % cfg.eval_every == 0 or done == end or timed_out) and rank == 0:
            model.eval()
            last_eval = spec.evaluate(model)
            model.train()
            bar.write(f"step {done}: " + ", ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}"
                                                 for k, v in last_eval.items()))
        if done % cfg.checkpoint_every == 0 or done == end or timed_out:
            checkpoint(done, metrics_now(done, last_eval))
        if timed_out:
            bar.write(f"time limit of {cfg.time_limit_min} min reached at step {done}; checkpoint written")
            break
    bar.close()
    batches.close()
    model.eval()
    if world > 1:
        dist.barrier()
    return metrics_now(step + 1 if end > start else start, last_eval)


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


def has_state(out: str | Path) -> bool:
    checkpoints.recover(out) if Path(out).is_dir() else None
    return (Path(out) / TRAIN_STATE).is_file()


def saved_step(out: str | Path) -> int:
    """The step of the training state saved in ``out``."""
    return int(checkpoints.read_json_object(Path(out) / TRAIN_STATE)["step"])


def _check_out(out: Path, cfg: TrainConfig) -> None:
    """Never replace a run by accident: an existing checkpoint needs ``resume`` or ``overwrite``."""
    if out.exists() and not out.is_dir():
        raise ValueError(f"out={str(out)!r} is a file, not a folder")
    if cfg.overwrite or not out.is_dir():
        return
    checkpoints.recover(out)
    found = [n for n in (checkpoints.CONFIG, checkpoints.WEIGHTS, TRAIN_STATE) if (out / n).exists()]
    if cfg.resume and found and TRAIN_STATE not in found:
        raise FileExistsError(f"{out} holds a checkpoint without training state ({', '.join(found)}), so it cannot "
                              "be resumed; pass --overwrite to replace it, or choose another --out")
    if found and not cfg.resume:
        raise FileExistsError(f"{out} already holds a run ({', '.join(found)}); "
                              "pass --resume to continue it, --overwrite to replace it, or choose another --out")


def _state_parts(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    """The optimizer's state as safetensors tensors + JSON, and torch's RNG (no pickle)."""
    sd = optimizer.state_dict()
    tensors = {"rng.torch": torch.get_rng_state()}
    state: dict[str, dict] = {}
    for idx, entry in sd["state"].items():
        state[str(idx)] = {}
        for key, value in entry.items():
            if torch.is_tensor(value):
                tensors[f"optimizer.{idx}.{key}"] = value.detach().cpu().contiguous()
                state[str(idx)][key] = {"tensor": f"optimizer.{idx}.{key}"}
            else:
                state[str(idx)][key] = value
    return tensors, {"optimizer": {"param_groups": sd["param_groups"], "state": state}}


def _read_state(out: Path) -> tuple[dict, dict[str, torch.Tensor]]:
    info = checkpoints.read_json_object(out / TRAIN_STATE)
    tensors = checkpoints.read_safetensors(out / TRAIN_TENSORS)
    try:
        state = {int(idx): {k: tensors[v["tensor"]] if isinstance(v, dict) else v for k, v in entry.items()}
                 for idx, entry in info["optimizer"]["state"].items()}
        sd = {"param_groups": info["optimizer"]["param_groups"], "state": state}
        int(info["step"])
    except (KeyError, TypeError, ValueError) as e:
        raise checkpoints.CheckpointError(f"{out / TRAIN_STATE}: not a training state of this trainer ({e!r})") from e
    return {**info, "optimizer": sd}, tensors


def _resume(model: nn.Module, optimizer: torch.optim.Optimizer, out: Path):
    saved = checkpoints.read_config(out)["config"]
    current = checkpoints.as_saved(model.config_dict())
    if saved != current and isinstance(saved, dict):  # fields added since the run began take their defaults
        try:
            saved = checkpoints.as_saved(type(model).from_config(saved).config_dict())
        except (TypeError, ValueError):
            pass  # reported below, field by field
    if saved != current:
        diff = sorted(k for k in set(saved) | set(current) if saved.get(k) != current.get(k))
        raise checkpoints.CheckpointError(
            f"{out / checkpoints.CONFIG}: cannot resume, the model config differs in {diff}; "
            "use a new --out folder or the same options")
    checkpoints.load_weights(model, out / checkpoints.WEIGHTS)
    info, tensors = _read_state(out)
    try:
        optimizer.load_state_dict(info["optimizer"])
    except (ValueError, KeyError, RuntimeError) as e:
        raise checkpoints.CheckpointError(f"{out / TRAIN_STATE}: does not match the model's optimizer ({e})") from e
    if "rng.torch" in tensors:
        torch.set_rng_state(tensors["rng.torch"])
    return int(info["step"]), float(info.get("wall_s", 0.0)), list(info.get("history", []))
