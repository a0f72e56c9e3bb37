"""Training seeds: a zoo model's headline metric over runs that differ from it only in ``--seed``.

Every checkpoint (the shipped one first, then its seed runs) is scored by its family recipe's
``score(model, n, seed)`` on the same freshly generated inputs. The result is the ``seeds`` part
of the shipped model's metrics.json, which its card (``workbench.cards.seeds_section``),
``apps.zoo.headline`` and Home's zoo table read:

    {"n": 10000, "eval_seed": [2027, 1], "metric": "error", "values": [0.016, 0.021, 0.018],
     "rows": [{"seed": 0, "error": 0.016, "mean ponder N": 3.4, "checkpoint": "this one"}, ...],
     "summary": "3 seeds: error 0.0183 ± 0.0025 (mean ± sample standard deviation; range 0.0160-0.0210)."}

    >>> from models import seeds
    >>> part = seeds.compare("act-addition", ["runs/seeds/act-addition-s1", "runs/seeds/act-addition-s2"],
    ...                      n=10000, eval_seed=[2027, 1])
    >>> seeds.store("act-addition", part)          # metrics.json and card.md of the zoo model

``workbench seeds <model> --runs a,b`` is the same from the command line. ``with_scored(part,
stored)`` adds the rows of a comparison stored earlier for seeds not scored again (``--keep-scored``).
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Sequence

import models
from models import registry
from workbench import checkpoints, files


def _train_seed(folder: Path) -> int:
    seed = files.load_metrics(folder).get("train", {}).get("seed")
    if not isinstance(seed, int):
        raise ValueError(f"{folder}: its metrics.json records no training seed (is the run finished?)")
    return seed


def _train_step(folder: Path) -> int | None:
    """The step a checkpoint was trained to (a wall-time limit may stop a run before its ``--steps``)."""
    return files.load_metrics(folder).get("train", {}).get("step")


def _recipe(family: registry.Family):
    recipe = family.recipe
    if recipe is None or not hasattr(recipe, "score"):
        raise ValueError(f"the {family.label} family has no seed comparison (its recipe has no score)")
    return recipe


# training options that may differ between seed runs: where, how long and how the run was written
# (not what it learned; the steps trained are a column of the table); checkpoints from before an
# option existed do not record it
_FREE = ("seed", "out", "resume", "overwrite", "threads", "progress", "time_limit_min", "stop_at", "world_size",
         "device", "data_workers")


def _differences(a: dict, b: dict) -> list[str]:
    """The model-config keys, training options and other config.json parts in which ``a`` and ``b`` differ."""
    out = [k for k in sorted(set(a["config"]) | set(b["config"])) if a["config"].get(k) != b["config"].get(k)]
    ta, tb = a.get("train", {}), b.get("train", {})
    out += [f"train.{k}" for k in sorted(set(ta) | set(tb)) if k not in _FREE and ta.get(k) != tb.get(k)]
    return out + [k for k in sorted(set(a) | set(b)) if k not in ("class", "config", "train") and a.get(k) != b.get(k)]


def _effective_config(folder: Path) -> dict:
    """``config.json`` with the model config as the model built from it sees it: a field added to
    the config after a checkpoint was written is absent from its file and takes its default."""
    config = checkpoints.read_config(folder)
    if config["class"] in registry.class_table():
        config["config"] = checkpoints.build(folder, registry.class_table()).config_dict()
    return config


def check_runs(shipped: str | Path, runs: Sequence[str | Path]) -> list[Path]:
    """The folders of ``shipped`` and ``runs``; ValueError unless every run is the shipped model's
    class and config with another training seed (so the comparison varies the seed alone)."""
    if not runs:
        raise ValueError("--runs: give at least one seed run to compare with the shipped model")
    folders = [models.resolve(shipped), *(models.resolve(r) for r in runs)]
    configs = [_effective_config(folder) for folder in folders]
    base = configs[0]
    seen: dict[int, Path] = {}
    for folder, config in zip(folders, configs):
        if config["class"] != base["class"]:
            raise ValueError(f"{folder}: a {config['class']}, not a {base['class']} like {folders[0]}")
        differ = _differences(base, config)
        if differ:
            raise ValueError(f"{folder}: its config differs from {folders[0]}'s in {', '.join(differ)}; "
                             "a seed run changes only --seed")
        seed = _train_seed(folder)
        if seed in seen:
            raise ValueError(f"{folder} and {seen[seed]} were both trained with seed {seed}")
        seen[seed] = folder
    return folders


def _num(v: float) -> str:
    """Four decimals for rates and small errors, three significant digits for larger values."""
    return f"{v:.4f}" if abs(v) < 1 else f"{v:.3g}"


def compare(shipped: str | Path, runs: Sequence[str | Path], n: int, eval_seed) -> dict:
    """The ``seeds`` part for ``shipped``: each checkpoint scored on the same ``n`` fresh inputs."""
    folders = check_runs(shipped, runs)
    recipe = _recipe(registry.family_of(folders[0]))
    metric = files.load_metrics(folders[0]).get("headline", {}).get("metric")
    rows = []
    for i, folder in enumerate(folders):
        scores = recipe.score(models.load(folder), n, eval_seed)
        if metric not in scores:
            raise ValueError(f"{folders[0]}: its headline metric {metric!r} is not one the recipe scores "
                             f"({', '.join(scores)})")
        rows.append({"seed": _train_seed(folder), **scores, "steps": _train_step(folder),
                     "checkpoint": "this one" if i == 0 else f"{folder} (not shipped)"})
    return _part(n, list(eval_seed) if isinstance(eval_seed, (list, tuple)) else eval_seed, metric, rows)


def _part(n: int, eval_seed, metric: str, rows: list[dict]) -> dict:
    """The ``seeds`` part of ``rows`` (the shipped checkpoint's first): values and their summary."""
    values = [float(r[metric]) for r in rows]
    spread = f" ± {statistics.stdev(values):.2g}" if len(values) > 1 else ""
    summary = (f"{len(values)} seeds: {metric} {_num(statistics.mean(values))}{spread} (mean ± sample standard "
               f"deviation; range {_num(min(values))}-{_num(max(values))}).")
    return {"n": n, "eval_seed": eval_seed, "metric": metric, "values": values, "rows": rows, "summary": summary}


def _earlier(checkpoint: str) -> str:
    return checkpoint if checkpoint.endswith(" (scored earlier)") else f"{checkpoint} (scored earlier)"


def with_scored(part: dict, recorded: dict | None) -> dict:
    """``part`` and the rows of ``recorded`` (a comparison stored earlier) for the seeds ``part`` does not
    score again, so runs whose checkpoints are gone still count. ValueError unless both were scored on
    the same inputs: the same ``n`` and input seed, and the shipped checkpoint's value agreeing to within
    two inputs in ``n`` (another machine's arithmetic may flip an input on the edge)."""
    if not recorded:
        raise ValueError("there is no stored seed comparison to keep rows from")
    same = {k: (part[k], recorded.get(k)) for k in ("n", "eval_seed", "metric")}
    differ = [f"{k} {new} (stored: {old})" for k, (new, old) in same.items() if new != old]
    if differ:
        raise ValueError(f"the stored comparison was scored on other inputs: {', '.join(differ)}; "
                         "score again with its --n and --seed")
    metric, shipped = part["metric"], part["rows"][0]
    old_shipped = recorded["rows"][0]
    if abs(float(shipped[metric]) - float(old_shipped[metric])) > max(1e-6, 2 / part["n"]):
        raise ValueError(f"the shipped checkpoint scores {metric} {shipped[metric]:.6g} now but "
                         f"{old_shipped[metric]:.6g} in the stored comparison: the inputs or the checkpoint "
                         "changed since, so its rows are not comparable")
    scored = {r["seed"] for r in part["rows"]}
    kept = [{**r, "checkpoint": _earlier(r["checkpoint"])} for r in recorded["rows"][1:] if r["seed"] not in scored]
    runs = sorted(part["rows"][1:] + kept, key=lambda r: r["seed"])
    return _part(part["n"], part["eval_seed"], metric, [shipped, *runs])


def zoo_folder(shipped: str | Path) -> Path:
    """The zoo folder of ``shipped``; ValueError where it is not a zoo model (only those list their seeds)."""
    folder = models.resolve(shipped)
    if models.ZOO.resolve() not in folder.resolve().parents:
        raise ValueError(f"{str(shipped)!r} is not a zoo model; only a shipped model's card lists its seeds")
    return folder


def store(shipped: str | Path, part: dict) -> Path:
    """Write ``part`` as the ``seeds`` of a zoo model's metrics.json and rewrite its card; returns the folder."""
    from models import recipes

    folder = zoo_folder(shipped)
    recipes.update(_recipe(registry.family_of(folder)), folder, seeds=part)
    return folder
