"""The WARP recipe: WARP, WARP-Phys and the GRU baseline on dynamical systems and digits (``workbench train warp``)."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from models.gru import GRU, GRUConfig, hidden_for_params
from models.recipes import Setup, from_args
from models.warp import Warp, WarpConfig
from models.warp_data import Forcing, training_batch
from models.warp_eval import digits_eval, forecast_eval, model_kind, model_task
from workbench import cards
from workbench.tasks import digits as dg
from workbench.tasks import dynamics as dy
from workbench.train import TrainSpec

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
                             "last step and next-pixel prediction (completion) from the same root. Trained on "
                             "the fit split (the training images minus a stratified 20% validation split); "
                             "every choice is made on the validation split, the test split is read once at "
                             "the end (`workbench eval warp --digits-test`)."),
}
# WarpConfig fields set from the task, not from the command line
MODEL_SKIP = ("d_in", "n_classes", "dt", "phys_scales", "seq_len", "task")


def build(args) -> Setup:
    task = make_task(args)
    forcing = Forcing(min=args.forcing_min, decay=args.forcing_decay, start=args.forcing_start)
    model = make_model(args, task)
    spec = TrainSpec(
        model=model,
        make_batch=batches(task, args.batch_size, forcing),
        evaluate=lambda m: evaluate_task(m, task, args.eval_n, [args.seed, 10_000]),
        extra_config={"forcing": asdict(forcing)},
    )
    return Setup(args, model, task, spec)


def make_task(args) -> dy.DynamicsConfig | dg.DigitsConfig:
    if args.task == "digits":
        return from_args(dg.DigitsConfig, args, context=args.context or dg.DigitsConfig.context)
    return from_args(dy.DynamicsConfig, args, system=args.task)


def make_model(args, task) -> Warp | GRU:
    """The model the options describe (built after ``torch.manual_seed``)."""
    if isinstance(task, dy.DynamicsConfig):
        d_in, n_classes, seq_len, dt = task.d_state, 0, task.length, task.dt
        # physical parameters are bounded around the geometric mean of their ranges
        scales = tuple(float(np.sqrt(lo * hi)) for lo, hi in task.spec.param_ranges) if task.system == "msd" else ()
    else:
        d_in, n_classes, seq_len, dt, scales = 1, dg.N_CLASSES, dg.N_PIXELS, 1 / 32, ()
    wcfg = from_args(WarpConfig, args, skip=MODEL_SKIP, d_in=d_in, n_classes=n_classes, seq_len=seq_len, dt=dt,
                     phys_scales=scales, task=asdict(task))
    if args.arch == "warp":
        return Warp(wcfg)
    if n_classes:
        raise ValueError("the GRU baseline is trained on the dynamical systems only (--task sine, msd or lv)")
    hidden = args.gru_hidden or hidden_for_params(n_params(Warp(wcfg)), d_in)
    return GRU(GRUConfig(d_in=d_in, hidden=hidden, seq_len=seq_len, task=asdict(task)))


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def batches(task, batch_size: int, forcing: Forcing):
    """make_batch(rng, step): fresh trajectories (or digits), the truth fed back on the forcing schedule."""
    return lambda rng, step: training_batch(task, batch_size, rng, step, forcing)


def evaluate_task(model, task, n: int, seed) -> dict:
    """Forecast MSE on ``n`` fresh trajectories, or accuracy and completion on the digits validation split.

    Training never reads the digits test split: ``workbench eval warp --digits-test`` does, once, at the end.
    """
    if isinstance(task, dy.DynamicsConfig):
        ev = forecast_eval(model, task, n, seed)
        return {k: ev[k] for k in ("mse", "mse_x1e-2", "n")}
    return digits_eval(model, task, "val")


def score(model, n: int, seed) -> dict:
    """The headline metric on ``n`` fresh trajectories, or on the digits validation split (``models.seeds``)."""
    task = model_task(model)
    ev = evaluate_task(model, task, n, seed)
    if isinstance(task, dy.DynamicsConfig):
        return {"forecast_mse_x1e-2": ev["mse_x1e-2"]}
    return {"val_accuracy": ev.get("accuracy")}


def evaluate(model, setup: Setup) -> dict:
    task = setup.task
    fresh_seed = [setup.args.seed, 20_000]
    final = evaluate_task(model, task, setup.args.final_n, fresh_seed)
    return {
        "evaluation": {**final, "seed": fresh_seed, "task": asdict(task), "data": _data_note(task, final)},
        "model": {"kind": model_kind(model), "parameters": n_params(model), **_sizes(model)},
    }


def _sizes(model) -> dict:
    if isinstance(model, Warp):
        return {"D": model.cfg.d_theta, "A_entries": model.cfg.d_theta ** 2}
    return {"hidden": model.cfg.hidden}


def _data_note(task, final: dict) -> str:
    if isinstance(task, dy.DynamicsConfig):
        return (f"{final['n']} fresh {task.system} trajectories of {task.length} steps; the first {task.context} "
                f"are given, the remaining {task.length - task.context} are generated autoregressively")
    return (f"the validation split ({final['n']} of the {len(dg.load(task, 'train'))} training images, never "
            f"trained on); completion from {task.context} pixels")


def headline(parts: dict, setup: Setup) -> dict:
    kind, final, task = parts["model"]["kind"], parts["evaluation"], setup.task
    if isinstance(task, dy.DynamicsConfig):
        return {"metric": "forecast_mse_x1e-2", "value": final["mse_x1e-2"],
                "text": f"{kind} on {task.system}: forecast MSE {final['mse_x1e-2']:.3g} x1e-2 "
                        f"({task.length - task.context} steps from {task.context})"}
    return digits_headline(kind, final, task.context)


def digits_headline(kind: str, ev: dict, context: int, test: dict | None = None) -> dict:
    """The digits headline: validation accuracy after training; test accuracy with its 95% interval once measured."""
    if test is None:
        text = f"{kind} on digits: validation accuracy {ev.get('accuracy', float('nan')):.3f}"
        if "completion_mse" in ev:
            text += f", completion MSE {ev['completion_mse']:.4f} (from {context} pixels)"
        return {"metric": "val_accuracy", "value": ev.get("accuracy"), "text": text}
    lo, hi = test["ci95"]
    text = (f"{kind} on digits: test accuracy {test['accuracy']:.3f} (95% CI {lo:.3f}-{hi:.3f}, {test['n']} images "
            f"never used for a choice)")
    if "completion_mse" in test:
        text += f", completion MSE {test['completion_mse']:.4f} (from {context} pixels)"
    return {"metric": "accuracy", "value": test["accuracy"], "split": "test", "text": text}


def report(metrics: dict, setup: Setup) -> str:
    return f"{metrics['headline']['text']}; wall {metrics['train']['train_wall_s'] / 60:.1f} min"


def card(folder: Path, stored: dict, metrics: dict, what: str | None) -> dict:
    cfg, ev, m = stored["config"], metrics["evaluation"], metrics["model"]
    if "system" in ev["task"]:
        rows = [{"system": ev["task"]["system"], "model": m["kind"], "forecast MSE (x1e-2)": ev["mse_x1e-2"],
                 "context": ev["task"]["context"], "horizon": ev["task"]["length"] - ev["task"]["context"],
                 "trajectories": ev["n"]}]
    else:
        split = "validation" if ev.get("split") == "val" else ev.get("split", "test")
        rows = [{"data": f"digits {split} split", "model": m["kind"], "accuracy": ev.get("accuracy", ""),
                 "95% CI": "", "completion MSE": ev.get("completion_mse", ""), "images": ev["n"]}]
    notes = ""
    test = metrics.get("test")
    if test:  # written by `workbench eval warp --digits-test --update-zoo`
        rows.append({"data": "digits test split", "model": m["kind"], "accuracy": test["accuracy"],
                     "95% CI": _ci(test["ci95"]), "completion MSE": test.get("completion_mse", ""),
                     "images": test["n"]})
        for b in test["baselines"]:
            rows.append({"data": "digits test split", "model": f"{b['model']} ({b['setting']})",
                         "accuracy": b["accuracy"], "95% CI": _ci(b["ci95"]), "completion MSE": "", "images": b["n"]})
        notes = (f"Protocol: the {test['fit_n']} fit images train the model; the {test['val_n']} validation images "
                 f"(a stratified 20% of the training split, `models.warp_data.digits_split`) are the only data any "
                 f"choice looked at; the {test['n']} test images were read once, at the end "
                 f"(`workbench eval warp --models {folder.name} --digits-test`). The baselines are fit on the "
                 f"same {test['fit_n']} images on raw pixels, their setting chosen on the validation split "
                 "(validation accuracy: "
                 + ", ".join(f"{b['model']} {b['val_accuracy']:.3f}" for b in test["baselines"])
                 + f"; {m['kind']} {test['val_accuracy']:.3f}). Intervals: 95% Wilson score intervals.")
    if metrics.get("selection"):  # the runs this checkpoint was chosen from, on the validation split
        notes += ("\n\nChosen among these runs on the validation split (the test split was not read for any of "
                  "them):\n\n" + cards.markdown_table(metrics["selection"]))
    size = (f"D = {m['D']} (A has {m['A_entries']:,} entries), {m['parameters']:,} parameters" if "D" in m
            else f"hidden = {m['hidden']}, {m['parameters']:,} parameters")
    keys = [k for k in ("root_width", "root_depth", "root_act", "tau_freqs", "root_takes_x", "init", "hyper_hidden",
                        "physics", "gaussian", "regress", "n_classes", "hidden", "seq_len") if k in cfg]
    head = metrics["headline"]["text"]
    if test:
        head = digits_headline(m["kind"], ev, ev["context"], test)["text"]
    return dict(
        title=f"{m['kind']}: {folder.name}",
        headline=head,
        what=(what or f"A {m['kind']} model.") + f"\n\nSize: {size}.\n\nConfig: "
        + ", ".join(f"{k}={cfg[k]}" for k in keys) + f"\n\nScheduled teacher forcing: {stored.get('forcing')}.",
        results=rows,
        results_note=f"Measured on the saved checkpoint: {ev['data']} (seed {ev['seed']})."
        + (f" Test rows: the fixed test split ({test['n']} images), read once after every choice was made."
           if test else ""),
        notes=notes,
    )


def _ci(ci) -> str:
    return f"{ci[0]:.3f}-{ci[1]:.3f}"
