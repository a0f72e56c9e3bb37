"""Every family's training recipe runs end to end through ``models.recipes.run`` and leaves a
checkpoint folder that reloads: config, weights, metrics and a card that records its command.
Presets are plain data."""

from __future__ import annotations

import importlib
import json
import shlex

import pytest
import torch

import models
from apps.cli import build_parser
from models import recipes
from workbench import cards, checkpoints

FAMILIES = ("reasoner", "act", "warp", "gain")
TINY = {
    "reasoner": "--n-nodes 6 --min-nodes 4 --n-leaves 3 --name-pool 16 --max-depth 2 --d-model 16 --n-heads 2 "
                "--d-mlp 32 --n-layers 1 --steps 3 --warmup 1 --batch-size 4 --eval-every 3 --eval-n 4 --final-n 8 "
                "--threads 1 --no-progress",
    "act": "--preset parity --size 6 --hidden 8 --max-ponder 3 --steps 4 --curriculum-steps 2 --warmup 1 "
           "--eval-every 2 --eval-n 8 --final-n 16 --batch-size 4 --threads 1 --no-progress",
    "warp": "--preset warp-sine --steps 3 --batch-size 4 --warmup 1 --root-width 6 --eval-n 4 --final-n 8 "
            "--forcing-decay 2 --threads 1 --no-progress",
    "gain": "--n-neurons 12 --grid 36 --n-samples 200",
}
PARTS = ("PRESETS", "build", "evaluate", "headline", "report", "card")


def options(family: str, out) -> tuple:
    """The parsed options of ``workbench train <family> <TINY> --out out``, and that command."""
    argv = ["train", family, *shlex.split(TINY[family]), "--out", str(out)]
    return build_parser(argv).parse_args(argv), "workbench " + shlex.join(argv)


@pytest.mark.parametrize("family", FAMILIES)
def test_every_recipe_has_the_one_shape(family):
    recipe = importlib.import_module(f"models.recipes.{family}")
    assert all(hasattr(recipe, part) for part in PARTS), [p for p in PARTS if not hasattr(recipe, p)]


@pytest.mark.parametrize("family", FAMILIES)
def test_presets_are_plain_data_naming_real_options(family):
    presets = importlib.import_module(f"models.recipes.{family}").PRESETS
    assert json.loads(json.dumps(presets)) == presets  # JSON round trip: no tuples, callables or objects
    argv = ["train", family, "--out", "x"]
    known = set(vars(build_parser(argv).parse_args(argv)))
    for name, preset in presets.items():
        assert set(preset) == {"args", "what"} and isinstance(preset["what"], str) and preset["what"], name
        assert set(preset["args"]) <= known, (name, set(preset["args"]) - known)


@pytest.mark.parametrize("family", FAMILIES)
def test_a_tiny_run_trains_reloads_and_describes_itself(family, tmp_path, capsys):
    torch.set_num_threads(1)
    recipe = importlib.import_module(f"models.recipes.{family}")
    out = tmp_path / family
    args, command = options(family, out)
    metrics = recipes.run(recipe, args, command)
    assert capsys.readouterr().out.strip()  # the report
    assert {p.name for p in out.iterdir()} >= {checkpoints.CONFIG, checkpoints.WEIGHTS, checkpoints.METRICS, "card.md"}
    model = models.load(out)
    assert isinstance(model, torch.nn.Module) and not model.training
    assert checkpoints.load_metrics(out) == json.loads(json.dumps(metrics))
    assert list(metrics)[:2] == ["headline", "evaluation"] and "train" in metrics
    assert metrics["train"]["seed"] == args.seed and metrics["train"]["train_wall_s"] >= 0
    card = (out / "card.md").read_text()
    assert cards.card_command(out / "card.md") == command
    headline = next(line for line in card.splitlines() if line.startswith("> "))
    assert len(headline) > 10 and "## Results" in card
    if getattr(args, "preset", None):
        assert recipe.PRESETS[args.preset]["what"].split(":")[0] in card

    # an evaluation that belongs on the card: stored in the metrics, the card rewritten with the same command
    recipes.update(recipe, out, extra_seed=7)
    assert checkpoints.load_metrics(out)["extra_seed"] == 7
    assert cards.card_command(out / "card.md") == command
    assert (out / "card.md").read_text() == card


def test_a_run_checks_its_folder_and_options_before_any_work(tmp_path):
    from models.recipes import act

    (tmp_path / "file").write_text("x")
    args, command = options("act", tmp_path / "file")
    with pytest.raises(ValueError, match="is a file"):
        recipes.run(act, args, command)
    args, command = options("act", tmp_path / "run")
    args.task, args.curriculum_steps = "addition", 5
    with pytest.raises(ValueError, match="--curriculum-steps is for the parity task only"):
        recipes.run(act, args, command)
    args, command = options("act", tmp_path / "run")
    args.hidden = 0
    with pytest.raises(ValueError, match="--hidden=0"):
        recipes.run(act, args, command)
    assert not (tmp_path / "run").exists()


def test_preset_of_reads_both_spellings():
    assert recipes.preset_of(["train", "act", "--preset", "parity"]) == "parity"
    assert recipes.preset_of("workbench train warp --preset=gru-msd --out x".split()) == "gru-msd"
    assert recipes.preset_of(["train", "gain"]) is None
