"""The committed Z_23 training state resumes exactly: two short resumes in a row take the same
steps as one resume of both lengths, bit for bit (weights, optimizer, RNG and batches)."""

import shlex
import shutil
from pathlib import Path

import pytest
import torch

from apps.cli import main
from workbench import checkpoints
from workbench.train import saved_step

ROOT = Path(__file__).resolve().parents[1]
STATE = ROOT / "training" / "reasoner-z23"
COMMAND = ROOT / "training" / "reasoner-z23.command.txt"


def _resume(folder: Path, stop_at: int, last: int) -> None:
    """Resume the committed command into ``folder`` up to ``stop_at``; a schedule that ends before
    ``last`` (a completed run) is extended to it, the same for every resume of the test."""
    argv = shlex.split(COMMAND.read_text())[1:]  # drop the program name
    argv[argv.index("--out") + 1] = str(folder)
    steps = argv.index("--steps") + 1
    argv[steps] = str(max(int(argv[steps]), last))
    argv += ["--stop-at", str(stop_at), "--final-n", "2", "--eval-n", "2", "--data-workers", "0"]
    assert main(argv) == 0


@pytest.mark.slow
def test_resuming_the_committed_state_takes_the_steps_an_uninterrupted_run_takes(tmp_path):
    if not (STATE / "train_state.json").is_file():
        pytest.skip("no committed Z_23 training state")
    start = saved_step(STATE)
    once, twice = tmp_path / "once", tmp_path / "twice"
    for folder in (once, twice):
        shutil.copytree(STATE, folder)
    _resume(once, start + 2, start + 2)
    _resume(twice, start + 1, start + 2)
    assert saved_step(twice) == start + 1
    _resume(twice, start + 2, start + 2)
    a = checkpoints.read_safetensors(once / checkpoints.WEIGHTS)
    b = checkpoints.read_safetensors(twice / checkpoints.WEIGHTS)
    before = checkpoints.read_safetensors(STATE / checkpoints.WEIGHTS)
    assert saved_step(once) == saved_step(twice) == start + 2
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], before[k]) for k in a)  # it did train
    moments_a = checkpoints.read_safetensors(once / "train_state.safetensors")
    moments_b = checkpoints.read_safetensors(twice / "train_state.safetensors")
    assert all(torch.equal(moments_a[k], moments_b[k]) for k in moments_a)
