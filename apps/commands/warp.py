"""``workbench train warp`` and ``workbench eval warp``.

    workbench train warp --preset warp-msd --out runs/warp-msd --threads 1
    workbench train warp --preset gru-msd --threads 1          # writes runs/warp-gru-msd
    workbench eval warp --n 512 --seed 1 --out out/warp_eval

A folder that already holds a run is never replaced: ``--resume`` continues it, ``--overwrite``
replaces it (e.g. a zoo entry: ``--out models/zoo/warp-msd --overwrite``).
"""

from __future__ import annotations

import argparse
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

import models
from apps.options import (add_dataclass_args, add_train_args as add_trainer_args, check_writable, command_line,
                          folder, from_args, name_list, non_negative_float, non_negative_int, positive_float,
                          positive_int, preset_of, probability, real, seed, threads, train_config)
from workbench import cards, checkpoints
from workbench.tasks import digits as dg
from workbench.tasks import dynamics as dy
from workbench.train import TrainSpec, train as run_training

TASKS = (*dy.SYSTEMS, "digits")
ARCHS = ("warp", "gru")

# Shared by every dynamical-system preset: a root MLP with two hidden layers of 16 units that
# also reads the current input; at most 19 minutes of training (then a checkpoint is written).
_DYN = dict(root_width=16, root_depth=2, root_act="tanh", root_takes_x=True, weight_decay=0.0, lr=1e-3,
            batch_size=32, warmup=100, eval_every=1000, checkpoint_every=500, time_limit_min=19.0)
# Forecasters train autoregressively: the truth is fed with a probability falling from 1 to 0.25
# over the first 1200 steps. WARP-Phys trains teacher-forced (its fast parallel mode): feeding
# its own predictions back made its training unstable in our runs.
_AR = dict(steps=3000, forcing_min=0.25, forcing_decay=1200)
_TF = dict(steps=4000, forcing_min=1.0)
PRESETS: dict[str, dict] = {
    "warp-msd": dict(args={**_DYN, **_AR, "task": "msd", "arch": "warp"},
                     what="WARP on the mass-spring-damper: the state is the weights of a root MLP "
                          "(tau, x, v) -> next (x, v)."),
    "warp-phys-msd": dict(args={**_DYN, **_TF, "task": "msd", "arch": "warp", "physics": "msd"},
                          what="WARP-Phys on the mass-spring-damper: the root outputs (m, c, k) and the "
                               "prediction is one explicit Euler step of m x'' + c x' + k x = 0."),
    "gru-msd": dict(args={**_DYN, **_AR, "task": "msd", "arch": "gru"},
                    what="GRU baseline on the mass-spring-damper, with about as many parameters as warp-msd."),
    "warp-sine": dict(args={**_DYN, **_AR, "task": "sine", "arch": "warp"},
                      what="WARP on sine waves with random phase and frequency."),
    "warp-phys-sine": dict(args={**_DYN, **_TF, "task": "sine", "arch": "warp", "physics": "sine"},
                           what="WARP-Phys on sine waves: the prediction is sin(2 pi tau + phi_hat(tau))."),
    "gru-sine": dict(args={**_DYN, **_AR, "task": "sine", "arch": "gru"},
                     what="GRU baseline on sine waves, with about as many parameters as warp-sine."),
    "warp-lv": dict(args={**_DYN, **_AR, "task": "lv", "arch": "warp"},
                    what="WARP on Lotka-Volterra predator-prey dynamics."),
    "gru-lv": dict(args={**_DYN, **_AR, "task": "lv", "arch": "gru"},
                   what="GRU baseline on Lotka-Volterra, with about as many parameters as warp-lv."),
    "warp-digits": dict(args=dict(task="digits", arch="warp", init="learned", root_width=32, root_depth=1,
                                  cls_weight=4.0, steps=6000, batch_size=64, lr=3e-3, weight_decay=0.0, warmup=100,
                                  forcing_min=1.0, eval_every=1000, checkpoint_every=500, time_limit_min=19.0),
                        what="WARP on scikit-learn's 8x8 digits read pixel by pixel: classification at the "
                             "last step and next-pixel prediction (completion) from the same root."),
}
# WARP options set from the task, not from the command line
_WARP_SKIP = ("d_in", "n_classes", "dt", "phys_scales", "seq_len", "task")
# value ranges checked while parsing (WarpConfig checks the rest when it is built)
_MODEL_TYPES = {"root_width": positive_int, "a_scale": positive_float, "phys_bound": positive_float,
                "std_min": positive_float, "cls_weight": non_negative_float}
_preset = preset_of


# ----------------------------------------------------------------------- train
def add_train_args(p: argparse.ArgumentParser, argv: list[str]) -> None:
    from models.warp import WarpConfig

    p.add_argument("--preset", choices=sorted(PRESETS), help="defaults for a shipped model; flags override")
    p.add_argument("--arch", choices=ARCHS, default="warp", help="WARP or the GRU baseline")
    p.add_argument("--gru-hidden", type=non_negative_int, default=0,
                   help="GRU hidden size (0: as many parameters as the WARP model the other options describe)")
    p.add_argument("--eval-n", type=positive_int, default=256, help="fresh trajectories for periodic evaluation")
    p.add_argument("--final-n", type=positive_int, default=512, help="fresh trajectories for the final evaluation")
    g = p.add_argument_group("task")
    g.add_argument("--task", choices=TASKS, default="msd")
    g.add_argument("--length", type=positive_int, default=None, help="observed steps (default: the system's)")
    g.add_argument("--context", type=positive_int, default=None,
                   help="steps given before forecasting / completing (default: the task's)")
    g.add_argument("--dt", type=positive_float, default=None,
                   help="time between observed steps (default: the system's)")
    g.add_argument("--noise", type=non_negative_float, default=0.0, help="observation noise std")
    g.add_argument("--test-fraction", type=real(0.0, 1.0, lo_open=True, hi_open=True), default=0.25,
                   help="digits: test split fraction")
    g.add_argument("--split-seed", type=seed, default=0, help="digits: seed of the fixed split")
    add_dataclass_args(p, WarpConfig, skip=_WARP_SKIP, title="model (WARP)", types=_MODEL_TYPES)
    g = p.add_argument_group("scheduled teacher forcing")
    g.add_argument("--forcing-min", type=probability, default=0.25, help="probability of feeding the truth after decay")
    g.add_argument("--forcing-decay", type=non_negative_int, default=1000,
                   help="steps over which it falls from 1 to min")
    g.add_argument("--forcing-start", type=non_negative_int, default=0, help="steps of pure teacher forcing first")
    preset = preset_of(argv)
    add_trainer_args(p, "warp", preset)
    if preset in PRESETS:
        p.set_defaults(**PRESETS[preset]["args"])


def make_task(args: argparse.Namespace):
    if args.task == "digits":
        return from_args(dg.DigitsConfig, args, context=args.context or dg.DigitsConfig.context)
    return from_args(dy.DynamicsConfig, args, system=args.task)


def make_model(args: argparse.Namespace, task):
    """The model the options describe (built after ``torch.manual_seed``)."""
    from models.gru import GRU, GRUConfig, hidden_for_params
    from models.warp import Warp, WarpConfig

    if isinstance(task, dy.DynamicsConfig):
        d_in, n_classes, seq_len, dt = task.d_state, 0, task.length, task.dt
        # physical parameters are bounded around the geometric mean of their ranges
        scales = tuple(float(np.sqrt(lo * hi)) for lo, hi in task.spec.param_ranges) if task.system == "msd" else ()
    else:
        d_in, n_classes, seq_len, dt, scales = 1, dg.N_CLASSES, dg.N_PIXELS, 1 / 32, ()
    wcfg = from_args(WarpConfig, args, skip=_WARP_SKIP, d_in=d_in, n_classes=n_classes, seq_len=seq_len, dt=dt,
                     phys_scales=scales, task=asdict(task))
    if args.arch == "warp":
        return Warp(wcfg)
    if n_classes:
        raise ValueError("the GRU baseline is trained on the dynamical systems only (--task sine, msd or lv)")
    hidden = args.gru_hidden or hidden_for_params(n_params(Warp(wcfg)), d_in)
    return GRU(GRUConfig(d_in=d_in, hidden=hidden, seq_len=seq_len, task=asdict(task)))


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def evaluate(model, task, n: int, seed) -> dict:
    from models.warp_eval import digits_eval, forecast_eval

    if isinstance(task, dy.DynamicsConfig):
        ev = forecast_eval(model, task, n, seed)
        return {k: ev[k] for k in ("mse", "mse_x1e-2", "n")}
    return digits_eval(model, task)


def train(args: argparse.Namespace) -> None:
    from models.warp_data import Forcing, training_batch

    task = make_task(args)
    tcfg = train_config(args)
    forcing = Forcing(min=args.forcing_min, decay=args.forcing_decay, start=args.forcing_start)
    if tcfg.threads:
        torch.set_num_threads(tcfg.threads)
    torch.manual_seed(tcfg.seed)
    model = make_model(args, task)
    spec = TrainSpec(
        model=model,
        make_batch=lambda rng, step: training_batch(task, tcfg.batch_size, rng, step, forcing),
        evaluate=lambda m: evaluate(m, task, args.eval_n, [tcfg.seed, 10_000]),
        extra_config={"forcing": asdict(forcing)},
    )
    result = run_training(spec, tcfg)
    # The card's numbers come from the saved checkpoint on fresh data, not from training logs.
    model = models.load(tcfg.out)
    fresh_seed = [tcfg.seed, 20_000]
    final = evaluate(model, task, args.final_n, fresh_seed)
    metrics = {
        "headline": headline_metric(model, task, final),
        "evaluation": {**final, "seed": fresh_seed, "task": asdict(task),
                       "data": _data_note(task, final)},
        "model": {"kind": _kind(model), "parameters": n_params(model), **_sizes(model)},
        "train": {k: result[k] for k in ("step", "train_wall_s", "hardware", "world_size", "seed")},
        "history": result["history"],
    }
    checkpoints.write_json(Path(tcfg.out) / checkpoints.METRICS, metrics)
    write_warp_card(tcfg.out, args.preset, metrics, cards.commands_so_far(tcfg.out, command_line(args), tcfg.resume))
    print(f"{metrics['headline']['text']}; wall {result['train_wall_s'] / 60:.1f} min")


def _kind(model) -> str:
    from models.warp_eval import model_kind

    return model_kind(model)


def _sizes(model) -> dict:
    from models.warp import Warp

    if isinstance(model, Warp):
        return {"D": model.cfg.d_theta, "A_entries": model.cfg.d_theta ** 2}
    return {"hidden": model.cfg.hidden}


def _data_note(task, final: dict) -> str:
    if isinstance(task, dy.DynamicsConfig):
        return (f"{final['n']} fresh {task.system} trajectories of {task.length} steps; the first {task.context} "
                f"are given, the remaining {task.length - task.context} are generated autoregressively")
    return f"the fixed test split of load_digits ({final['n']} images); completion from {task.context} pixels"


def headline_metric(model, task, final: dict) -> dict:
    kind = _kind(model)
    if isinstance(task, dy.DynamicsConfig):
        return {"metric": "forecast_mse_x1e-2", "value": final["mse_x1e-2"],
                "text": f"{kind} on {task.system}: forecast MSE {final['mse_x1e-2']:.3g} x1e-2 "
                        f"({task.length - task.context} steps from {task.context})"}
    text = f"{kind} on digits: test accuracy {final.get('accuracy', float('nan')):.3f}"
    if "completion_mse" in final:
        text += f", completion MSE {final['completion_mse']:.4f} (from {task.context} pixels)"
    return {"metric": "accuracy", "value": final.get("accuracy"), "text": text}


def write_warp_card(folder, preset: str | None, metrics: dict, command: str) -> None:
    config = checkpoints.read_json(Path(folder) / checkpoints.CONFIG)
    cfg, ev, tr, m = config["config"], metrics["evaluation"], metrics["train"], metrics["model"]
    if "system" in ev["task"]:
        rows = [{"system": ev["task"]["system"], "model": m["kind"], "forecast MSE (x1e-2)": ev["mse_x1e-2"],
                 "context": ev["task"]["context"], "horizon": ev["task"]["length"] - ev["task"]["context"],
                 "trajectories": ev["n"]}]
    else:
        rows = [{"data": "digits test split", "model": m["kind"], "accuracy": ev.get("accuracy", ""),
                 "completion MSE": ev.get("completion_mse", ""), "images": ev["n"]}]
    size = (f"D = {m['D']} (A has {m['A_entries']:,} entries), {m['parameters']:,} parameters" if "D" in m
            else f"hidden = {m['hidden']}, {m['parameters']:,} parameters")
    keys = [k for k in ("root_width", "root_depth", "root_act", "tau_freqs", "root_takes_x", "init", "hyper_hidden",
                        "physics", "gaussian", "regress", "n_classes", "hidden", "seq_len") if k in cfg]
    what = PRESETS.get(preset or "", {}).get("what", f"A {m['kind']} model.")
    cards.write_card(
        folder,
        title=f"{m['kind']}: {Path(folder).name}",
        headline=metrics["headline"]["text"],
        what=what + f"\n\nSize: {size}.\n\nConfig: " + ", ".join(f"{k}={cfg[k]}" for k in keys)
        + f"\n\nScheduled teacher forcing: {config.get('forcing')}.",
        command=command,
        seed=tr["seed"],
        wall_s=tr["train_wall_s"],
        hardware=tr["hardware"],
        results=rows,
        results_note=f"Measured on the saved checkpoint: {ev['data']} (seed {ev['seed']}).",
    )


# ------------------------------------------------------------------------ eval
def add_eval_args(p: argparse.ArgumentParser, argv: list[str]) -> None:
    p.add_argument("--models", type=name_list, default=None,
                   help="comma-separated zoo names or folders (default: every WARP / GRU model in the zoo)")
    p.add_argument("--n", type=positive_int, default=512, help="fresh trajectories per system")
    p.add_argument("--seed", type=seed, default=1)
    p.add_argument("--threads", type=threads, default=1)
    p.add_argument("--out", type=folder, default="out/warp_eval", help="folder for CSV and HTML")


def eval(args: argparse.Namespace) -> None:  # noqa: A001 - the CLI verb
    import models
    from apps.views.warp import results_table_figure
    from models.gru import GRU
    from models.warp import Warp
    from models.warp_eval import dynamics_table, results_table

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
    results = results_table(loaded, n=args.n, seed=args.seed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results.to_csv(out / "results.csv", index=False)
    table = dynamics_table(results)
    if len(table):
        table.to_csv(out / "dynamics_table.csv")
        print(f"forecast MSE x 1e-2 on {args.n} fresh trajectories per system (seed {args.seed})")
        print(table.round(3).to_string())
    digits = results[results.task == "digits"]
    for _, r in digits.iterrows():
        print(f"digits {r.model}: {r.metric} = {r.value:.4f} ({r.n} test images)")
    results_table_figure(table, digits).write_html(out / "results.html", include_plotlyjs="cdn")
    written = [out / "results.csv", out / "dynamics_table.csv", out / "results.html"]
    written += _forecast_pages(loaded, out, args.seed)
    print("\nwrote " + ", ".join(str(p) for p in written))


def _forecast_pages(loaded: dict, out: Path, seed: int) -> list[Path]:
    """One page per system: a fresh trajectory and every model's forecast of it."""
    from apps.views.warp import forecast_figure
    from models.warp_eval import forecast, model_kind, model_task

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
