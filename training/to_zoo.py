"""Copy a reasoner run's checkpoint into the zoo, evaluated afresh, with its card.

    python training/to_zoo.py training/reasoner-z23 reasoner-z23 --length-ref 300

The zoo folder gets the checkpoint's config (with ``length_ref`` if given: no parameters, see
``ReasonerConfig``) and weights as one unit, then metrics measured on the copied checkpoint
(``final_n`` fresh problems at the training size, the repair rate) and a card whose command is
the run's. ``workbench eval reasoner --models <name> ... --update-zoo`` adds the OOD table.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import models
from models import recipes
from models.recipes import reasoner as recipe
from workbench import cards, files
from workbench.tasks import graph_arith as ga


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run", type=Path, help="a run folder with config.json, model.safetensors, train_state.json")
    p.add_argument("name", help="the zoo name to write (models/zoo/<name>)")
    p.add_argument("--length-ref", type=int, default=0, help="ReasonerConfig.length_ref of the copy (0 = as trained)")
    p.add_argument("--final-n", type=int, default=512, help="fresh problems at the training size")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    dest = Path(models.__file__).parent / "zoo" / args.name
    stored = files.read_json(args.run / files.CONFIG)
    if args.length_ref:
        stored["config"]["length_ref"] = args.length_ref
    state = files.read_json(args.run / "train_state.json")
    files.write_unit(dest, {
        files.CONFIG: lambda tmp: files.dump_json(tmp, stored),
        files.WEIGHTS: lambda tmp: shutil.copyfile(args.run / files.WEIGHTS, tmp),
    })
    model = models.load(dest)
    task_dict = model.cfg.task
    task = ga.GraphArithConfig(**{**task_dict, "ops": tuple(task_dict["ops"])})
    setup = SimpleNamespace(args=SimpleNamespace(seed=args.seed, final_n=args.final_n), task=task)
    parts = recipe.evaluate(model, setup)
    before = files.read_json(args.run / files.METRICS)
    train = before.get("train", before)
    metrics = {"headline": recipe.headline(parts, setup), **parts,
               "train": {"step": state["step"], "train_wall_s": state["wall_s"], "hardware": train["hardware"],
                         "world_size": train.get("world_size", 1), "seed": train["seed"]}}
    files.write_json(dest / files.METRICS, metrics)
    command = cards.card_command(args.run / "card.md")
    recipes.write_card(recipe, dest, metrics, command, recipes.preset_of(command.split()))
    print(json.dumps(metrics["evaluation"], indent=1))


if __name__ == "__main__":
    main()
