"""``workbench train act`` and ``workbench eval act``.

    workbench train act --preset parity                   # writes runs/act-parity
    workbench eval act --models act-parity,act-parity-tau1e-2 --out out/act_eval
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd
import torch

import models
from apps.options import (add_dataclass_args, add_preset_arg, add_train_args as add_trainer_args, check_writable,
                          command_line, folder, name_list, non_negative_float, non_negative_int, positive_int, real,
                          seed, threads)
from apps.views.act import halting_figure, ponder_difficulty_figure, tau_sweep_figure
from models import recipes
from models.act import ACT, ACTConfig
from models.act_data import addition_batch, parity_batch
from models.act_eval import compare, evaluate, fresh_problems, halting_trace, ponder_by, task_of
from models.recipes import act as recipe
from workbench import checkpoints
from workbench.tasks import addition as add
from workbench.tasks import parity as par

# value ranges checked while parsing (the config dataclasses check the rest when they are built)
_TASK_TYPES = dict.fromkeys(("size", "min_nonzero", "max_digits", "min_numbers", "max_numbers"), positive_int)
_MODEL_TYPES = {**dict.fromkeys(("hidden", "fixed_steps", "max_ponder"), positive_int),
                "eps": real(0.0, 1.0, lo_open=True, hi_open=True), "tau": non_negative_float}


def add_train_args(p: argparse.ArgumentParser, argv: list[str]) -> None:
    preset = add_preset_arg(p, recipe.PRESETS, argv)
    p.add_argument("--task", choices=recipe.TASKS, default="parity")
    p.add_argument("--eval-n", type=positive_int, default=1000, help="problems for periodic evaluation")
    p.add_argument("--final-n", type=positive_int, default=10000, help="fresh problems for the final evaluation")
    p.add_argument("--curriculum-steps", type=non_negative_int, default=0,
                   help="parity: the cap on nonzero entries grows from --curriculum-start to the full task over "
                        "this many steps (0: no curriculum)")
    p.add_argument("--curriculum-start", type=positive_int, default=2,
                   help="parity: the cap on nonzero entries at step 0")
    add_dataclass_args(p, par.ParityConfig, title="parity task", types=_TASK_TYPES)
    add_dataclass_args(p, add.AdditionConfig, title="addition task", types=_TASK_TYPES)
    add_dataclass_args(p, ACTConfig, skip=recipe.MODEL_SKIP, title="model", types=_MODEL_TYPES)
    add_trainer_args(p, "act", preset, recipe.PRESETS)


def train(args: argparse.Namespace) -> None:
    recipes.run(recipe, args, command_line(args))


# ------------------------------------------------------------------------ eval
def add_eval_args(p: argparse.ArgumentParser, argv: list[str]) -> None:
    p.add_argument("--models", type=name_list, default=None,
                   help="comma-separated zoo names or folders (default: every ACT model)")
    p.add_argument("--n", type=positive_int, default=5000, help="fresh problems per task")
    p.add_argument("--seed", type=seed, default=1)
    p.add_argument("--batch-size", type=positive_int, default=1000)
    p.add_argument("--out", type=folder, default="out/act_eval", help="folder for CSV and HTML")
    p.add_argument("--threads", type=threads, default=1)
    p.add_argument("--update-zoo", action="store_true", help="store the tau sweep in the zoo models' metrics and cards")


def eval(args: argparse.Namespace) -> None:  # noqa: A001 - the CLI verb
    torch.set_num_threads(args.threads)
    check_writable(args.out)
    names = args.models or [n for n in models.zoo_names()
                            if checkpoints.read_config(models.ZOO / n)["class"] == "models.act.ACT"]
    if not names:
        raise ValueError("no ACT checkpoints found; train one with `workbench train act`")
    loaded = {n: models.load(n) for n in names}
    bad = [n for n, m in loaded.items() if not isinstance(m, ACT)]
    if bad:
        raise ValueError(f"--models: not ACT models: {bad}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    groups: dict[tuple, dict[str, ACT]] = {}
    for n, m in loaded.items():
        groups.setdefault((m.cfg.task_name, str(m.cfg.task)), {})[n] = m
    sweeps = []
    for (task_name, _), group in groups.items():
        first = next(iter(group.values()))
        t = first.cfg.task
        label = f"parity{t['size']}" if task_name == "parity" else f"addition{t['max_digits']}d{t['max_numbers']}n"
        table = compare(group, args.n, [args.seed, 1], args.batch_size)
        table.to_csv(out / f"{label}_models.csv", index=False)
        print(f"\n{task_name} {first.cfg.task}: {args.n} fresh problems (seed {args.seed})")
        print(table.drop(columns=["n"]).round(4).to_string(index=False))
        # ponder time against difficulty, every model of the group on the same problems
        problems = fresh_problems(first, args.n, [args.seed, 2])
        evs = {n: evaluate(m, problems, args.batch_size) for n, m in group.items()}
        for by in (("n_nonzero",) if task_name == "parity" else ("digits", "position")):
            diff = pd.concat([ponder_by(ev, by).assign(model=n) for n, ev in evs.items()], ignore_index=True)
            diff.to_csv(out / f"{label}_ponder_by_{by}.csv", index=False)
            ponder_difficulty_figure(diff, by, title=f"{task_name}: ponder time against {by}").write_html(
                out / f"{label}_ponder_by_{by}.html", include_plotlyjs="cdn")
            wide = diff.pivot(index=by, columns="model", values="mean_ponder")
            print(f"\nmean ponder time N(t) by {by}")
            print(wide.round(2).to_string())
        # halting probabilities per ponder step for one example, from the first ACT model
        act_models = {n: m for n, m in group.items() if m.cfg.act}
        if act_models:
            name, model = next(iter(act_models.items()))
            batch = parity_batch(_first(problems)) if task_name == "parity" \
                else addition_batch(problems[:1], task_of(model))
            trace = halting_trace(model, batch["inputs"], batch["mask"])
            trace.to_csv(out / f"{label}_halting.csv", index=False)
            halting_figure(trace, title=f"{name}: halting at every ponder step (one example)").write_html(
                out / f"{label}_halting.html", include_plotlyjs="cdn")
        # the tau sweep: ACT models of the group that differ only in tau
        sweep = table[table.act].copy()
        if sweep["tau"].nunique() >= 2:
            sweep = sweep.sort_values("tau")
            sweep.to_csv(out / f"{label}_tau_sweep.csv", index=False)
            tau_sweep_figure(sweep, title=f"{task_name}: error and ponder time against tau").write_html(
                out / f"{label}_tau_sweep.html", include_plotlyjs="cdn")
            print("\ntau sweep")
            print(sweep[["model", "tau", "error", "mean_ponder"]].round(4).to_string(index=False))
            sweeps.append((group, sweep))
    print(f"\nwrote CSV and HTML files to {out}")
    if args.update_zoo:
        for group, sweep in sweeps:
            rows = sweep[["model", "tau", "error", "mean_ponder"]].to_dict("records")
            for name in group:
                folder = models.resolve(name)
                if not str(folder.resolve()).startswith(str(models.ZOO.resolve())):
                    continue
                recipes.update(recipe, folder, sweep=rows, sweep_seed=args.seed)


def _first(problems: par.ParitySet) -> par.ParitySet:
    return par.ParitySet(problems.vectors[:1], problems.target[:1], problems.n_nonzero[:1], problems.n_plus[:1])
