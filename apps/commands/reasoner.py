"""``workbench train reasoner`` and ``workbench eval reasoner``.

    workbench train reasoner --preset quick               # writes runs/reasoner-quick
    workbench train reasoner --preset quick --resume      # continues it after an interruption
    workbench train reasoner --preset quick --overwrite   # replaces it
    workbench eval reasoner --sizes 8,16,32 --out out/reasoner_eval
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

import models
from apps.options import (add_dataclass_args, add_preset_arg, add_train_args as add_trainer_args, check_writable,
                          command_line, folder, list_of, name_list, non_negative_float, positive_int, probability,
                          seed, whole)
from apps.views.reasoner import ood_figure, per_step_figure
from models import recipes
from models.reasoner import Reasoner, ReasonerConfig
from models.reasoner_eval import evaluate, ood_table, ood_task, per_size
from models.recipes import reasoner as recipe
from workbench.tasks import graph_arith as ga

# value ranges checked while parsing (the config dataclasses check the rest when they are built)
_TASK_TYPES = {**dict.fromkeys(("n_nodes", "n_leaves", "max_fan_in", "max_depth", "name_pool"), positive_int),
               "modulus": whole(2)}
_MODEL_TYPES = {**dict.fromkeys(("d_model", "n_layers", "n_heads", "d_mlp", "max_steps", "max_tokens", "bptt_steps"),
                                positive_int),
                **dict.fromkeys(("error_prob", "error_frac", "random_states"), probability),
                "new_slot_weight": non_negative_float}


def add_train_args(p: argparse.ArgumentParser, argv: list[str]) -> None:
    preset = add_preset_arg(p, recipe.PRESETS, argv)
    p.add_argument("--min-nodes", type=positive_int, default=None,
                   help="train on sizes min-nodes..n-nodes (default: n-nodes)")
    p.add_argument("--eval-n", type=positive_int, default=256, help="problems for periodic evaluation")
    p.add_argument("--final-n", type=positive_int, default=512, help="fresh problems for the final evaluation")
    add_dataclass_args(p, ga.GraphArithConfig, title="task", types=_TASK_TYPES)
    add_dataclass_args(p, ReasonerConfig, skip=recipe.MODEL_SKIP, title="model", types=_MODEL_TYPES)
    add_trainer_args(p, "reasoner", preset, recipe.PRESETS)


def train(args: argparse.Namespace) -> None:
    recipes.run(recipe, args, command_line(args))


# ------------------------------------------------------------------------ eval
def add_eval_args(p: argparse.ArgumentParser, argv: list[str]) -> None:
    p.add_argument("--models", type=name_list, default=None,
                   help="comma-separated zoo names or folders (default: every reasoner)")
    p.add_argument("--sizes", type=list_of(positive_int), default=None,
                   help="comma-separated node counts (default: N/4 .. 4N in steps of N/4)")
    p.add_argument("--n", type=list_of(positive_int), default=[512],
                   help="fresh problems per size: one count, or comma-separated counts, one per size")
    p.add_argument("--seed", type=seed, default=1)
    p.add_argument("--batch-size", type=positive_int, default=64)
    p.add_argument("--out", type=folder, default="out/reasoner_eval", help="folder for CSV and HTML")
    p.add_argument("--update-zoo", action="store_true", help="store the table in each zoo model's metrics and card")


def eval(args: argparse.Namespace) -> None:  # noqa: A001 - the CLI verb
    check_writable(args.out)
    names = args.models or [n for n in models.zoo_names() if isinstance(models.load(n), Reasoner)]
    if not names:
        raise ValueError("no reasoner checkpoints found; train one with `workbench train reasoner`")
    loaded = {n: models.load(n) for n in names}
    bad = [n for n, m in loaded.items() if not isinstance(m, Reasoner)]
    if bad:
        raise ValueError(f"--models: not reasoner models: {bad}")
    train_task = ga.GraphArithConfig(**{**loaded[names[0]].cfg.task, "ops": tuple(loaded[names[0]].cfg.task["ops"])})
    N = train_task.n_nodes
    sizes = args.sizes or list(range(max(1, N // 4), 4 * N + 1, max(1, N // 4)))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    counts = per_size(args.n[0] if len(args.n) == 1 else args.n, sizes)
    table = ood_table(loaded, train_task, sizes, counts, args.seed, args.batch_size)
    table.to_csv(out / "ood.csv", index=False)
    wide = table.pivot(index="model", columns="n_nodes", values="fully_solved")
    print("fully solved vs number of nodes (rows: models; columns: N)")
    print(wide.round(3).to_string())
    steps = table.pivot(index="model", columns="n_nodes", values="max_steps")
    print("\nrecurrence steps used (max over problems)")
    print(steps.to_string())
    ood_figure(table, train_n=N).write_html(out / "ood.html", include_plotlyjs="cdn")
    # per-step accuracy at the training size and at the largest size
    per_step = []
    for size in (N, max(sizes)):
        count = min(counts[sizes.index(size)] if size in sizes else counts[0], 256)
        problems = ga.sample(ood_task(train_task, size), count, np.random.default_rng([args.seed, size, 7]))
        for name, model in loaded.items():
            df = evaluate(model, problems, args.batch_size).per_step
            per_step.append(df.assign(model=name, n_nodes=size))
    per_step = pd.concat(per_step, ignore_index=True)
    per_step.to_csv(out / "per_step.csv", index=False)
    per_step_figure(per_step).write_html(out / "per_step.html", include_plotlyjs="cdn")
    print(f"\nwrote {out / 'ood.csv'}, {out / 'ood.html'}, {out / 'per_step.csv'}, {out / 'per_step.html'}")
    if args.update_zoo:
        for name in names:
            ood = table[table.model == name].drop(columns="model").to_dict("records")
            recipes.update(recipe, models.resolve(name), ood=ood, ood_seed=args.seed)
