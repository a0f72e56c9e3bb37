"""A run killed at random moments (SIGKILL, often inside a checkpoint write) loses nothing: the
folder always holds one complete step, and resuming ends with the uninterrupted run's weights."""

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tests.toy import ToyLoop
from workbench import checkpoints
from workbench.train import TRAIN_STATE, TRAIN_TENSORS, saved_step

ROOT = Path(__file__).resolve().parents[1]
STEPS = 40
KILLS = int(os.environ.get("WORKBENCH_KILLS", "5"))  # 20 for the full measurement
TOY = checkpoints.allow(ToyLoop)


def _start(out: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "tests.kill_worker", str(out), str(STEPS)], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _wait_for_a_checkpoint(out: Path, proc: subprocess.Popen, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not (out / TRAIN_STATE).exists():
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        assert time.monotonic() < deadline, "no checkpoint was written"
        time.sleep(0.01)


def _consistent(out: Path) -> int:
    """The folder's files all belong to one step; returns it."""
    checkpoints.recover(out)
    step = saved_step(out)
    assert checkpoints.read_json(out / checkpoints.METRICS)["step"] == step
    model = checkpoints.load(out, TOY)  # weights load, finite, right dtype
    moments = checkpoints.read_safetensors(out / TRAIN_TENSORS)
    assert set(k for k in moments if k.startswith("optimizer.")), "optimizer state missing"
    assert sum(p.numel() for p in model.parameters()) > 0
    assert not any(p.name.endswith(".tmp") for p in out.iterdir())
    return step


@pytest.mark.slow
def test_random_kills_lose_nothing(tmp_path):
    reference = tmp_path / "uninterrupted"
    proc = _start(reference)
    assert proc.wait(timeout=300) == 0, proc.stderr.read().decode()[-2000:]

    out, rng, kills, steps_seen = tmp_path / "killed", random.Random(0), 0, []
    while True:
        proc = _start(out)
        if kills >= KILLS:
            break
        _wait_for_a_checkpoint(out, proc)
        time.sleep(rng.uniform(0.0, 0.4))  # anywhere: mid-step, mid-write, between files
        if proc.poll() is not None:
            break  # finished before the kill
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        kills += 1
        steps_seen.append(_consistent(out))
    assert proc.wait(timeout=300) == 0, proc.stderr.read().decode()[-2000:]
    assert steps_seen == sorted(steps_seen)  # never goes back
    assert _consistent(out) == STEPS
    done = checkpoints.load(out, TOY).state_dict()
    for k, v in checkpoints.load(reference, TOY).state_dict().items():
        assert torch.equal(v, done[k]), k


def test_an_unfinished_unit_is_dropped_and_a_committed_one_finished(tmp_path):
    model = ToyLoop()
    checkpoints.save(tmp_path, model, metrics={"step": 1})
    old = (tmp_path / checkpoints.WEIGHTS).read_bytes()
    # a kill while writing the next unit: files staged, no COMMIT marker
    pending = tmp_path / checkpoints.PENDING
    pending.mkdir()
    (pending / checkpoints.WEIGHTS).write_bytes(b"half")
    checkpoints.recover(tmp_path)
    assert not pending.exists() and (tmp_path / checkpoints.WEIGHTS).read_bytes() == old
    # a kill after COMMIT while moving files into place: the move is finished
    with torch.no_grad():
        model.lin.weight.add_(1.0)
    checkpoints.save(tmp_path / "next", model, metrics={"step": 2})
    pending.mkdir()
    for name in (checkpoints.CONFIG, checkpoints.METRICS):  # the weights were already moved
        os.replace(tmp_path / "next" / name, pending / name)
    os.replace(tmp_path / "next" / checkpoints.WEIGHTS, tmp_path / checkpoints.WEIGHTS)
    (pending / checkpoints.COMMIT).write_text("\n".join([checkpoints.WEIGHTS, checkpoints.CONFIG, checkpoints.METRICS]))
    loaded = checkpoints.load(tmp_path, TOY)
    assert torch.equal(loaded.lin.weight, model.lin.weight)
    assert checkpoints.read_json(tmp_path / checkpoints.METRICS) == {"step": 2}
    assert not pending.exists()
