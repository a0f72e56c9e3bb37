"""``workbench seeds <model> --runs a,b``: a zoo model's headline metric over its training seeds.

Each run is the model's training command with only ``--seed`` changed (``--out runs/seeds/<name>-s<seed>``).
Every checkpoint is scored on the same ``--n`` fresh inputs (``models.seeds``); ``--update-zoo``
stores the comparison in the zoo model's metrics.json and card, where Home's zoo table shows the
mean and standard deviation next to the shipped checkpoint's value.

    workbench seeds act-addition --runs runs/seeds/act-addition-s1,runs/seeds/act-addition-s2 --update-zoo

``--keep-scored`` adds the rows of the stored comparison for seeds not given again (a run scored
earlier whose checkpoint is gone), after checking that both were scored on the same inputs.
"""

from __future__ import annotations

import argparse

from apps.options import name_list, positive_int, seed, threads


def add_seeds_args(p: argparse.ArgumentParser, argv: list[str]) -> None:
    p.add_argument("model", help="the shipped model: zoo name (or checkpoint folder without --update-zoo)")
    p.add_argument("--runs", type=name_list, required=True, help="comma-separated checkpoint folders of its seed runs")
    p.add_argument("--n", type=positive_int, default=10000, help="fresh inputs every checkpoint is scored on")
    p.add_argument("--seed", type=seed, nargs="+", default=[2027, 0],
                   help="seed of those inputs (one or more integers; default: 2027 0)")
    p.add_argument("--threads", type=threads, default=1, help="torch threads")
    p.add_argument("--update-zoo", action="store_true", help="store the comparison in the zoo model's metrics and card")
    p.add_argument("--keep-scored", action="store_true",
                   help="also list the seeds of the zoo model's stored comparison that --runs does not score again "
                        "(their checkpoints may be gone); needs that comparison's --n and --seed")


def seeds(args: argparse.Namespace) -> None:
    import torch

    from models import seeds as sd
    from workbench import cards, files

    torch.set_num_threads(args.threads)
    if args.update_zoo or args.keep_scored:
        folder = sd.zoo_folder(args.model)  # before the work
    part = sd.compare(args.model, args.runs, args.n, args.seed)
    if args.keep_scored:
        part = sd.with_scored(part, files.load_metrics(folder).get("seeds"))
    print(cards.markdown_table(part["rows"], floats="{:.4f}"))
    print(part["summary"])
    if args.update_zoo:
        print(f"updated {sd.store(args.model, part)}/metrics.json and card.md")
