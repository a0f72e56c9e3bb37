"""Seed comparisons (``models.seeds``, ``workbench seeds``): every checkpoint scored on the same fresh
inputs, runs that differ in more than the seed refused, the result stored on the zoo model's card."""

from __future__ import annotations

import json
import shlex
import statistics

import numpy as np
import pytest
import torch

import models
from apps.cli import build_parser, main
from models import recipes, registry, seeds
from models.act_data import parity_batch
from models.recipes import act

TINY = ("--preset parity --size 6 --hidden 8 --max-ponder 3 --steps 6 --curriculum-steps 2 --warmup 1 "
        "--eval-every 6 --eval-n 8 --final-n 16 --batch-size 8 --threads 1 --no-progress")


def _train(out, extra: str = "") -> None:
    argv = ["train", "act", *shlex.split(TINY + " " + extra), "--out", str(out)]
    recipes.run(act, build_parser(argv).parse_args(argv), "workbench " + shlex.join(argv))


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    """A zoo with one tiny ACT model (seed 0) and, outside it, its runs with seeds 1 and 2 and a different one."""
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("seeds")
    _train(root / "zoo" / "tiny")
    for s in (1, 2):
        _train(root / "runs" / f"tiny-s{s}", f"--seed {s}")
    _train(root / "runs" / "wider-s3", "--seed 3 --hidden 12")
    return root


def _parity_error(model, n: int, eval_seed) -> float:
    """Oracle: the share of fresh parity vectors whose sign of the output disagrees with the parity."""
    problems = registry.sample(model, n, eval_seed)
    with torch.no_grad():
        out = model(parity_batch(problems)["inputs"])
    predicted = (out.outputs[:, 0, 0] > 0).numpy().astype(int)
    return float(np.mean(predicted != np.asarray(problems.target)))


def test_every_checkpoint_is_scored_on_the_same_fresh_inputs(zoo):
    runs = [zoo / "runs" / "tiny-s1", zoo / "runs" / "tiny-s2"]
    part = seeds.compare(zoo / "zoo" / "tiny", runs, n=300, eval_seed=[5, 1])
    assert [r["seed"] for r in part["rows"]] == [0, 1, 2] and part["metric"] == "error"
    for row, folder in zip(part["rows"], [zoo / "zoo" / "tiny", *runs]):
        assert row["error"] == pytest.approx(_parity_error(models.load(folder), 300, [5, 1]), abs=1e-9)
    assert part["values"] == [r["error"] for r in part["rows"]]
    mean, sd = statistics.mean(part["values"]), statistics.stdev(part["values"])
    assert f"3 seeds: error {mean:.4f} ± {sd:.2g}" in part["summary"]
    assert json.loads(json.dumps(part)) == part  # stored as plain JSON


def test_runs_that_differ_in_more_than_the_seed_are_refused(zoo):
    with pytest.raises(ValueError, match="differs .* in hidden"):
        seeds.compare(zoo / "zoo" / "tiny", [zoo / "runs" / "wider-s3"], n=10, eval_seed=0)
    with pytest.raises(ValueError, match="both trained with seed 1"):
        seeds.compare(zoo / "zoo" / "tiny", [zoo / "runs" / "tiny-s1", zoo / "runs" / "tiny-s1"], n=10, eval_seed=0)
    with pytest.raises(ValueError, match="at least one seed run"):
        seeds.compare(zoo / "zoo" / "tiny", [], n=10, eval_seed=0)


def test_a_config_field_added_later_counts_at_its_default(zoo, tmp_path):
    import shutil

    old = tmp_path / "old"  # the shipped model as written before ``eps`` was a config field
    shutil.copytree(zoo / "zoo" / "tiny", old)
    config = json.loads((old / "config.json").read_text())
    assert config["config"].pop("eps") == 0.01  # its default
    (old / "config.json").write_text(json.dumps(config))
    assert seeds.check_runs(old, [zoo / "runs" / "tiny-s1"])[1] == zoo / "runs" / "tiny-s1"
    config["config"]["tau"] = 0.5  # a value that is not the run's: still refused
    (old / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="differs .* in tau"):
        seeds.check_runs(old, [zoo / "runs" / "tiny-s1"])


def test_the_command_stores_the_comparison_on_the_zoo_card(zoo, monkeypatch, capsys):
    monkeypatch.setattr(models, "ZOO", zoo / "zoo")
    runs = f"{zoo / 'runs' / 'tiny-s1'},{zoo / 'runs' / 'tiny-s2'}"
    assert main(["seeds", str(zoo / "runs" / "tiny-s1"), "--runs", str(zoo / "runs" / "tiny-s2"), "--n", "50",
                 "--update-zoo"]) == 2
    assert "not a zoo model" in capsys.readouterr().err
    card_before = (zoo / "zoo" / "tiny" / "card.md").read_text()
    assert main(["seeds", str(zoo / "zoo" / "tiny"), "--runs", runs, "--n", "50", "--seed", "9",
                 "--update-zoo"]) == 0
    stored = json.loads((zoo / "zoo" / "tiny" / "metrics.json").read_text())["seeds"]
    assert stored["n"] == 50 and stored["eval_seed"] == [9] and len(stored["values"]) == 3
    card = (zoo / "zoo" / "tiny" / "card.md").read_text()
    assert card.startswith(card_before.split("## Notes")[0])  # the rest of the card is unchanged
    assert "Across training seeds" in card and stored["summary"] in card and "tiny-s2 (not shipped)" in card


def test_a_forecaster_is_scored_on_its_forecast_error(tmp_path):
    """WARP's seed score: the forecast MSE (x 1e-2) of fresh trajectories, checked against one written here."""
    from workbench.tasks import dynamics as dy

    torch.set_num_threads(1)
    argv = ["train", "warp", "--preset", "warp-sine", "--steps", "3", "--batch-size", "4", "--warmup", "1",
            "--root-width", "6", "--eval-n", "4", "--final-n", "8", "--forcing-decay", "2", "--threads", "1",
            "--no-progress", "--out", str(tmp_path / "sine")]
    from models.recipes import warp

    recipes.run(warp, build_parser(argv).parse_args(argv), "workbench " + shlex.join(argv))
    model = models.load(tmp_path / "sine")
    task = registry.task_of(model)
    x = torch.from_numpy(dy.stack(dy.sample(task, 20, np.random.default_rng([3, 4])))).float()
    with torch.no_grad():
        out = model(x[:, :task.context], context=task.context, horizon=task.length - task.context)
    forecast = out.mean[:, task.context - 1: task.length - 1]  # the prediction of x[:, context:]
    expected = float(((forecast - x[:, task.context:]) ** 2).mean()) * 100
    assert warp.score(model, 20, [3, 4]) == {"forecast_mse_x1e-2": pytest.approx(expected, rel=1e-4)}


def test_a_seed_run_is_the_cards_command_with_another_seed_and_folder():
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location("seed_runs", Path(__file__).parent.parent / "training" / "seeds.py")
    seed_runs = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(seed_runs)
    card = shlex.split((models.ZOO / "act-addition" / "card.md").read_text().split("```")[1].strip())[1:]
    step = json.loads((models.ZOO / "act-addition" / "metrics.json").read_text())["train"]["step"]
    argv = seed_runs.seed_command("act-addition", 2, Path("runs/x"))
    assert argv[-8:] == ["--stop-at", str(step), "--time-limit-min", "600", "--seed", "2", "--out", "runs/x"]
    assert argv[:-8] == [a for i, a in enumerate(card) if a != "--out" and (i == 0 or card[i - 1] != "--out")]
    # a card of several resumed runs (each under a 40-minute limit): one run, to the shipped step
    lines = [ln for ln in (models.ZOO / "reasoner-continuous" / "card.md").read_text().split("```")[1].splitlines()
             if ln.strip()]
    assert len(lines) > 1 and all("--time-limit-min" in ln for ln in lines)
    step = json.loads((models.ZOO / "reasoner-continuous" / "metrics.json").read_text())["train"]["step"]
    resumed = seed_runs.seed_command("reasoner-continuous", 1, Path("runs/y"), time_limit_min=90)
    assert "--resume" not in resumed and resumed.count("--time-limit-min") == 1
    assert resumed[resumed.index("--time-limit-min") + 1] == "90" and resumed[resumed.index("--stop-at") + 1] == str(step)


def test_seeds_scored_earlier_are_kept_when_their_runs_are_not_given_again(zoo, tmp_path, monkeypatch, capsys):
    import shutil

    shutil.copytree(zoo / "zoo", tmp_path / "zoo")
    monkeypatch.setattr(models, "ZOO", tmp_path / "zoo")
    shipped, s1, s2 = tmp_path / "zoo" / "tiny", str(zoo / "runs" / "tiny-s1"), str(zoo / "runs" / "tiny-s2")
    assert main(["seeds", str(shipped), "--runs", s1, "--n", "60", "--seed", "4", "--update-zoo"]) == 0
    assert main(["seeds", str(shipped), "--runs", s2, "--n", "60", "--seed", "4", "--keep-scored",
                 "--update-zoo"]) == 0
    stored = json.loads((shipped / "metrics.json").read_text())["seeds"]
    both = seeds.compare(shipped, [s1, s2], n=60, eval_seed=[4])  # oracle: all three scored in one go
    assert [r["seed"] for r in stored["rows"]] == [0, 1, 2] and stored["values"] == both["values"]
    assert stored["summary"] == both["summary"]
    assert stored["rows"][1]["checkpoint"].endswith("tiny-s1 (not shipped) (scored earlier)")
    assert stored["rows"][2]["checkpoint"].endswith("tiny-s2 (not shipped)")
    capsys.readouterr()
    # other inputs than the stored comparison's: refused, and the card keeps its table
    assert main(["seeds", str(shipped), "--runs", s2, "--n", "61", "--seed", "4", "--keep-scored",
                 "--update-zoo"]) == 2
    assert "n 61 (stored: 60)" in capsys.readouterr().err
    assert json.loads((shipped / "metrics.json").read_text())["seeds"] == stored
    tampered = {**stored, "rows": [{**stored["rows"][0], "error": stored["rows"][0]["error"] + 0.5}, *stored["rows"][1:]]}
    with pytest.raises(ValueError, match="the shipped checkpoint scores error"):
        seeds.with_scored(seeds.compare(shipped, [s2], n=60, eval_seed=[4]), tampered)
