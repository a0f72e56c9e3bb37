"""Seed runs of zoo models: each card's training command with only ``--seed`` and ``--out`` changed.

    python training/seeds.py act-addition gru-lv --seeds 1 2        # runs/seeds/<name>-s<seed>, one at a time
    python training/seeds.py reasoner-continuous --seeds 1 --time-limit-min 80   # a card of several resumed runs
    python training/seeds.py warp-lv --seeds 1 2 --dry-run          # print the commands only

A folder that holds a finished checkpoint is skipped, one with training state is resumed
(``--resume``), so the script can be started again after an interruption. Once every run of a
model is finished it prints the ``workbench seeds`` command that scores them next to the shipped
checkpoint on the same fresh inputs and stores the table in the card.
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import models  # noqa: E402
from workbench import cards, files  # noqa: E402

# options of a card's command that say where or how a run was written, not what it learns
_DROPPED = {"--out": 1, "--seed": 1, "--overwrite": 0, "--resume": 0}


def seed_command(name: str, seed: int, out: Path, time_limit_min: float | None = None) -> list[str]:
    """``workbench train ...`` of zoo model ``name`` with ``--seed seed --out out`` (argv, without ``workbench``)."""
    lines = [ln for ln in cards.card_command(models.resolve(name) / "card.md").splitlines() if ln.strip()]
    if not lines:
        raise ValueError(f"{name}: its card records no training command")
    if len(lines) > 1 and time_limit_min is None:
        raise ValueError(f"{name} was trained by {len(lines)} resumed runs; give --time-limit-min with their "
                         "total so that one run does the same")
    argv = shlex.split(lines[-1] if len(lines) > 1 else lines[0])[1:]  # without "workbench"
    kept, i = [], 0
    while i < len(argv):
        key = argv[i].split("=", 1)[0]
        if key in _DROPPED or (time_limit_min is not None and key == "--time-limit-min"):
            i += 1 + (0 if "=" in argv[i] else _DROPPED.get(key, 1))
            continue
        kept.append(argv[i])
        i += 1
    if time_limit_min is not None:
        kept += ["--time-limit-min", f"{time_limit_min:g}"]
    return kept + ["--seed", str(seed), "--out", str(out)]


def finished(folder: Path) -> bool:
    """Whether ``folder`` holds a finished run (its final metrics, with the training record)."""
    try:
        metrics = files.load_metrics(folder)
    except (OSError, ValueError):
        return False
    return "headline" in metrics and "train" in metrics


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("models", nargs="+", help="zoo names")
    p.add_argument("--seeds", type=int, nargs="+", default=[1, 2])
    p.add_argument("--root", type=Path, default=Path("runs/seeds"), help="where the runs go")
    p.add_argument("--time-limit-min", type=float, default=None,
                   help="for a card of several resumed runs: the one run's time limit (their total)")
    p.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    args = p.parse_args()
    for name in args.models:
        outs = []
        for seed in args.seeds:
            out = args.root / f"{name}-s{seed}"
            outs.append(out)
            try:
                argv = seed_command(name, seed, out, args.time_limit_min)
            except (ValueError, OSError) as e:
                p.error(str(e))
            if finished(out):
                print(f"{out}: finished")
                continue
            if (out / "train_state.json").is_file():
                argv.append("--resume")
            print("workbench " + shlex.join(argv), flush=True)
            if not args.dry_run:
                subprocess.run([sys.executable, "-m", "apps.cli", *argv], cwd=ROOT, check=True)
        if all(finished(o) for o in outs):
            print(f"done; store with: workbench seeds {name} --runs {','.join(map(str, outs))} --update-zoo")
    return 0


if __name__ == "__main__":
    sys.exit(main())
