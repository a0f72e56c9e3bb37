"""``workbench train warp`` and ``workbench eval warp``.

    workbench train warp --preset warp-msd --out runs/warp-msd --threads 1
    workbench train warp --preset gru-msd --threads 1          # writes runs/warp-gru-msd
    workbench eval warp --n 512 --seed 1 --out out/warp_eval
    workbench eval warp --models warp-digits --digits-test      # the digits test split, once, at the end

A folder that already holds a run is never replaced: ``--resume`` continues it, ``--overwrite``
replaces it (e.g. a zoo entry: ``--out models/zoo/warp-msd --overwrite``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd
import torch

import models
from apps.options import (add_dataclass_args, add_preset_arg, add_train_args as add_trainer_args, check_writable,
                          command_line, folder, name_list, non_negative_float, non_negative_int, positive_float,
                          positive_int, probability, real, seed, threads)
from apps.views.warp import forecast_figure, results_table_figure
from models import recipes
from models.gru import GRU
from models.recipes import warp as recipe
from models.warp import Warp, WarpConfig
from models.warp_eval import (digits_report_table, digits_test_report, dynamics_table, euler_true_params, forecast,
                              margins, model_kind, model_task, results_table, system_seed)
from workbench import checkpoints, files
from workbench.tasks import digits as dg
from workbench.tasks import dynamics as dy

# value ranges checked while parsing (WarpConfig checks the rest when it is built)
_MODEL_TYPES = {"root_width": positive_int, "a_scale": positive_float, "phys_bound": positive_float,
                "std_min": positive_float, "cls_weight": non_negative_float}


# ----------------------------------------------------------------------- train
def add_train_args(p: argparse.ArgumentParser, argv: list[str]) -> None:
    preset = add_preset_arg(p, recipe.PRESETS, argv, what="model")
    p.add_argument("--arch", choices=recipe.ARCHS, default="warp", help="WARP or the GRU baseline")
    p.add_argument("--gru-hidden", type=non_negative_int, default=0,
                   help="GRU hidden size (0: as many parameters as the WARP model the other options describe)")
    p.add_argument("--eval-n", type=positive_int, default=256, help="fresh trajectories for periodic evaluation")
    p.add_argument("--final-n", type=positive_int, default=512, help="fresh trajectories for the final evaluation")
    g = p.add_argument_group("task")
    g.add_argument("--task", choices=recipe.TASKS, default="msd")
    g.add_argument("--length", type=positive_int, default=None, help="observed steps (default: the system's)")
    g.add_argument("--context", type=positive_int, default=None,
                   help="steps given before forecasting / completing (default: the task's)")
    g.add_argument("--dt", type=positive_float, default=None,
                   help="time between observed steps (default: the system's)")
    g.add_argument("--noise", type=non_negative_float, default=0.0, help="observation noise std")
    g.add_argument("--test-fraction", type=real(0.0, 1.0, lo_open=True, hi_open=True), default=0.25,
                   help="digits: test split fraction")
    g.add_argument("--split-seed", type=seed, default=0, help="digits: seed of the fixed split")
    add_dataclass_args(p, WarpConfig, skip=recipe.MODEL_SKIP, title="model (WARP)", types=_MODEL_TYPES)
    g = p.add_argument_group("scheduled teacher forcing")
    g.add_argument("--forcing-min", type=probability, default=0.25, help="probability of feeding the truth after decay")
    g.add_argument("--forcing-decay", type=non_negative_int, default=1000,
                   help="steps over which it falls from 1 to min")
    g.add_argument("--forcing-start", type=non_negative_int, default=0, help="steps of pure teacher forcing first")
    add_trainer_args(p, "warp", preset, recipe.PRESETS)


def train(args: argparse.Namespace) -> None:
    recipes.run(recipe, args, command_line(args))


# ------------------------------------------------------------------------ eval
def add_eval_args(p: argparse.ArgumentParser, argv: list[str]) -> None:
    p.add_argument("--models", type=name_list, default=None,
                   help="comma-separated zoo names or folders (default: every WARP / GRU model in the zoo)")
    p.add_argument("--n", type=positive_int, default=512, help="fresh trajectories per system")
    p.add_argument("--seed", type=seed, default=1)
    p.add_argument("--threads", type=threads, default=1)
    p.add_argument("--out", type=folder, default="out/warp_eval", help="folder for CSV and HTML")
    p.add_argument("--digits-test", action="store_true",
                   help="read the digits test split (for one digits model, after every choice is made): accuracy "
                        "with a 95%% Wilson interval next to logistic regression and k-NN fit on the same images")
    p.add_argument("--update-zoo", action="store_true",
                   help="with --digits-test: store the test report in that zoo model's metrics and card")


def eval(args: argparse.Namespace) -> None:  # noqa: A001 - the CLI verb
    torch.set_num_threads(args.threads)
    check_writable(args.out)
    if args.models:
        loaded = {n: models.load(n) for n in args.models}
        bad = [n for n, m in loaded.items() if not isinstance(m, (Warp, GRU))]
        if bad:
            raise ValueError(f"--models: not WARP or GRU models: {bad}")
    else:
        loaded = {}
        for n in models.zoo_names():
            cls = checkpoints.read_config(models.resolve(n))["class"]
            if cls in ("models.warp.Warp", "models.gru.GRU"):
                loaded[n] = models.load(n)
    if not loaded:
        raise ValueError("no WARP or GRU checkpoints found; train one with `workbench train warp`")
    if args.update_zoo and not args.digits_test:
        raise ValueError("--update-zoo stores the digits test report; give --digits-test too")
    if args.digits_test:
        return _digits_test(loaded, Path(args.out), args.update_zoo)
    per_trajectory: list = []
    results = results_table(loaded, n=args.n, seed=args.seed, trajectories=per_trajectory)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results.to_csv(out / "results.csv", index=False)
    table = dynamics_table(results)
    written = [out / "results.csv"]
    if len(table):
        table.to_csv(out / "dynamics_table.csv")
        written.append(out / "dynamics_table.csv")
        print(f"forecast MSE x 1e-2 on {args.n} fresh trajectories per system (seed {args.seed})")
        print(table.round(3).to_string())
        one_step = dynamics_table(results, "one_step_x1e-2")
        print("\nthe same targets predicted one step ahead from the true states (teacher forced), MSE x 1e-2:")
        print(one_step.round(4).to_string())
        phys = [m for m in loaded.values() if getattr(getattr(m, "cfg", None), "physics", "none") == "msd"]
        if phys:
            task = model_task(phys[0])
            ideal = euler_true_params(task, args.n, system_seed(args.seed, "msd"), dt=phys[0].cfg.dt)
            print("\nmsd, WARP-Phys's formula with the true m, c, k (no learning: what exact identification would "
                  f"forecast): forecast {ideal['forecast_mse_x1e-2']:.3f}, "
                  f"one step {ideal['one_step_x1e-2']:.4f} (x 1e-2)")
        margin = margins(pd.DataFrame(per_trajectory))
        if len(margin):
            margin.to_csv(out / "margins.csv", index=False)
            written.append(out / "margins.csv")
            print("\nper trajectory, other's MSE / model's (median, 10th-90th percentile) and the share of "
                  "trajectories where the model is better:")
            for r in margin.itertuples():
                print(f"  {r.task}: {r.model} vs {r.other}: mean {r.mean_ratio:.2f}x, median {r.median_ratio:.2f}x "
                      f"({r.p10_ratio:.2f}-{r.p90_ratio:.2f}), better on {r.share_better:.0%}")
    digits = results[results.task == "digits"]
    for _, r in digits.iterrows():
        print(f"digits {r.model}: {r.metric} = {r.value:.4f} ({r.n} {r.split} images)")
    results_table_figure(table, digits).write_html(out / "results.html", include_plotlyjs="cdn")
    written.append(out / "results.html")
    written += _forecast_pages(loaded, out, args.seed)
    print("\nwrote " + ", ".join(str(p) for p in written))


def _digits_test(loaded: dict, out: Path, update_zoo: bool) -> None:
    """The end of the digits protocol: one model, the test split, its 95% interval, the baselines."""
    digits = {n: m for n, m in loaded.items() if isinstance(model_task(m), dg.DigitsConfig)}
    if len(digits) != 1:
        raise ValueError("--digits-test reads the test split for one chosen digits model; "
                         f"got {sorted(digits) or 'none'}"
                         " (compare candidates on the validation split: `workbench eval warp --models a,b`)")
    (name, model), = digits.items()
    if files.load_metrics(models.resolve(name)).get("evaluation", {}).get("split") != "val":
        print(f"note: {name} predates the validation split (its card reports no validation accuracy): it was "
              "trained on the validation images too, so its validation accuracy below is not held out")
    report = digits_test_report(model)
    table = digits_report_table(report, f"{name} ({model_kind(model)})")
    out.mkdir(parents=True, exist_ok=True)
    table.to_csv(out / "digits_test.csv", index=False)
    print(f"digits: fit on {report['fit_n']} images, chosen on {report['val_n']} validation images, "
          f"tested once on {report['n']} (95% Wilson intervals)")
    print(table.round(4).to_string(index=False))
    print(f"\nwrote {out / 'digits_test.csv'}")
    if update_zoo:
        folder = models.resolve(name)
        if not str(folder.resolve()).startswith(str(models.ZOO.resolve())):
            raise ValueError(f"--update-zoo: {name!r} is not a zoo model")
        head = recipe.digits_headline(model_kind(model), {}, model_task(model).context, report)
        recipes.update(recipe, folder, test=report, headline=head)
        print(f"updated {folder / 'metrics.json'} and card.md")


def _forecast_pages(loaded: dict, out: Path, seed: int) -> list[Path]:
    """One page per system: a fresh trajectory and every model's forecast of it."""
    by_system: dict[str, dict] = {}
    for name, model in loaded.items():
        task = model_task(model)
        if isinstance(task, dy.DynamicsConfig):
            by_system.setdefault(task.system, {})[name] = model
    pages = []
    for system, group in by_system.items():
        task = model_task(next(iter(group.values())))
        traj = dy.sample(task, 1, [seed, 99])[0]
        x = torch.from_numpy(traj.states[None]).float()
        preds = {f"{name} ({model_kind(m)})": forecast(m, x, task.context)[0].numpy() for name, m in group.items()}
        path = out / f"forecast_{system}.html"
        forecast_figure(traj.times, traj.states, preds, task.context, task.spec.state_names,
                        title=f"{system}: {traj.params}").write_html(path, include_plotlyjs="cdn")
        pages.append(path)
    return pages
