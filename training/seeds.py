"""Seed runs of zoo models: each card's training command with only ``--seed`` and ``--out`` changed.

    python training/seeds.py act-addition gru-lv --seeds 1 2        # runs/seeds/<name>-s<seed>, one at a time
    python training/seeds.py warp-lv --seeds 1 2 --dry-run          # print the commands only

Every seed run trains exactly as many steps as the shipped checkpoint did (``--stop-at`` its
step; the learning-rate schedule stays that of the command's ``--steps``), whatever the machine:
a wall-time limit in the command or its preset (``--time-limit-min``) would stop a run on a
slower or busier machine earlier, so it is replaced by a generous one. A run of a card with
several resumed commands is the last command run once to the same step.

A folder that holds a run at that step is skipped, one with training state is resumed
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

# options of a card's command that say where, how long or how a run was written, not what it learns:
# option -> how many values follow it
_DROPPED = {"--out": 1, "--seed": 1, "--overwrite": 0, "--resume": 0, "--time-limit-min": 1, "--stop-at": 1}


def shipped_step(name: str) -> int:
    """The step the shipped checkpoint ``name`` was trained to."""
    step = files.load_metrics(models.resolve(name)).get("train", {}).get("step")
    if not isinstance(step, int):
        raise ValueError(f"{name}: its metrics.json records no training step")
    return step


def seed_command(name: str, seed: int, out: Path, time_limit_min: float = 600) -> list[str]:
    """``workbench train ...`` of zoo model ``name`` with ``--seed seed --out out``, stopped at the shipped
    checkpoint's step under a ``time_limit_min`` limit (argv, without ``workbench``)."""
    lines = [ln for ln in cards.card_command(models.resolve(name) / "card.md").splitlines() if ln.strip()]
    if not lines:
        raise ValueError(f"{name}: its card records no training command")
    argv = shlex.split(lines[-1])[1:]  # without "workbench"; the last of several resumed commands
    kept, i = [], 0
    while i < len(argv):
        key = argv[i].split("=", 1)[0]
        if key in _DROPPED:
            i += 1 + (0 if "=" in argv[i] else _DROPPED[key])
            continue
        kept.append(argv[i])
        i += 1
    return kept + ["--stop-at", str(shipped_step(name)), "--time-limit-min", f"{time_limit_min:g}",
                   "--seed", str(seed), "--out", str(out)]


def finished(folder: Path, step: int) -> bool:
    """Whether ``folder`` holds a run trained to ``step`` (its final metrics, with the training record)."""
    try:
        metrics = files.load_metrics(folder)
    except (OSError, ValueError):
        return False
    return "headline" in metrics and metrics.get("train", {}).get("step", -1) >= step


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("models", nargs="+", help="zoo names")
    p.add_argument("--seeds", type=int, nargs="+", default=[1, 2])
    p.add_argument("--root", type=Path, default=Path("runs/seeds"), help="where the runs go")
    p.add_argument("--time-limit-min", type=float, default=600,
                   help="wall-time limit of each run (generous: a run stops at the shipped step)")
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
            if finished(out, shipped_step(name)):
                print(f"{out}: finished")
                continue
            if (out / "train_state.json").is_file():
                argv.append("--resume")
            print("workbench " + shlex.join(argv), flush=True)
            if not args.dry_run:
                subprocess.run([sys.executable, "-m", "apps.cli", *argv], cwd=ROOT, check=True)
        if all(finished(o, shipped_step(name)) for o in outs):
            print(f"done; store with: workbench seeds {name} --runs {','.join(map(str, outs))} --update-zoo")
    return 0


if __name__ == "__main__":
    sys.exit(main())
