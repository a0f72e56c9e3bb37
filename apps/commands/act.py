"""``workbench train act`` and ``workbench eval act``.

    workbench train act --preset parity                   # writes runs/act-parity
    workbench eval act --models act-parity,act-parity-tau1e-2 --out out/act_eval
"""

from __future__ import annotations

import argparse
from dataclasses import asdict
from pathlib import Path

import pandas as pd
import torch

import models
from apps.options import (add_dataclass_args, add_train_args as add_trainer_args, check_writable, command_line,
                          folder, from_args, name_list, non_negative_float, non_negative_int, positive_int, preset_of,
                          real, seed, threads, train_config)
from workbench import cards, checkpoints
from workbench.tasks import addition as add
from workbench.tasks import parity as par
from workbench.train import TrainSpec, train as run_training

_PARITY = dict(task="parity", size=16, cell="gru", hidden=128, max_ponder=20, halt_bias_init=-2.0, tau=1e-3,
               lr=3e-3, batch_size=128, weight_decay=0.0, warmup=100, steps=14000, curriculum_steps=6000,
               eval_every=2000, checkpoint_every=1000)
_ADDITION = dict(task="addition", max_digits=3, max_numbers=5, cell="lstm", hidden=128, max_ponder=10,
                 halt_bias_init=0.0, tau=1e-1, lr=3e-3, batch_size=128, weight_decay=0.0, warmup=100, steps=6000,
                 eval_every=1000, checkpoint_every=500)
PRESETS: dict[str, dict] = {
    "parity": dict(args=_PARITY, what="ACT on 16-bit parity: the whole vector arrives at one input step, so all "
                                      "the computation happens while the network ponders."),
    "parity-no-act": dict(args={**_PARITY, "act": False, "fixed_steps": 1},
                          what="Baseline: the same RNN on 16-bit parity without ACT (one state update per input)."),
    "addition": dict(args=_ADDITION, what="ACT on running sums of decimal numbers (one number per input step)."),
    "addition-no-act": dict(args={**_ADDITION, "act": False, "fixed_steps": 1},
                            what="Baseline: the same RNN on running sums without ACT (one state update per input)."),
}
# ACTConfig fields fixed by the task (see models.act_data.model_shape) or stored separately.
_MODEL_SKIP = ("input_size", "output_size", "output", "n_classes", "max_time", "task_name", "task")
_HEADLINE = {"parity": "n_nonzero", "addition": "digits"}
# value ranges checked while parsing (the config dataclasses check the rest when they are built)
_TASK_TYPES = dict.fromkeys(("size", "min_nonzero", "max_digits", "min_numbers", "max_numbers"), positive_int)
_MODEL_TYPES = {**dict.fromkeys(("hidden", "fixed_steps", "max_ponder"), positive_int),
                "eps": real(0.0, 1.0, lo_open=True, hi_open=True), "tau": non_negative_float}
_preset = preset_of


def add_train_args(p: argparse.ArgumentParser, argv: list[str]) -> None:
    from models.act import ACTConfig

    p.add_argument("--preset", choices=sorted(PRESETS), help="defaults for a shipped variant; flags override")
    p.add_argument("--task", choices=("parity", "addition"), default="parity")
    p.add_argument("--eval-n", type=positive_int, default=1000, help="problems for periodic evaluation")
    p.add_argument("--final-n", type=positive_int, default=10000, help="fresh problems for the final evaluation")
    p.add_argument("--curriculum-steps", type=non_negative_int, default=0,
                   help="parity: the cap on nonzero entries grows from --curriculum-start to the full task over "
                        "this many steps (0: no curriculum)")
    p.add_argument("--curriculum-start", type=positive_int, default=2,
                   help="parity: the cap on nonzero entries at step 0")
    add_dataclass_args(p, par.ParityConfig, title="parity task", types=_TASK_TYPES)
    add_dataclass_args(p, add.AdditionConfig, title="addition task", types=_TASK_TYPES)
    add_dataclass_args(p, ACTConfig, skip=_MODEL_SKIP, title="model", types=_MODEL_TYPES)
    preset = preset_of(argv)
    add_trainer_args(p, "act", preset)
    if preset in PRESETS:
        p.set_defaults(**PRESETS[preset]["args"])


def build(args: argparse.Namespace):
    """(model, task config) from parsed options; the model is built after seeding."""
    from models.act import ACT, ACTConfig
    from models.act_data import model_shape

    task = from_args(par.ParityConfig if args.task == "parity" else add.AdditionConfig, args)
    cfg = from_args(ACTConfig, args, skip=_MODEL_SKIP, **model_shape(args.task, task), task_name=args.task,
                    task=asdict(task))
    return ACT(cfg), task


def train(args: argparse.Namespace) -> None:
    from models.act_data import curriculum, sample_batch
    from models.act_eval import evaluate, fresh_problems, ponder_by

    tcfg = train_config(args)
    if tcfg.threads:
        torch.set_num_threads(tcfg.threads)
    torch.manual_seed(tcfg.seed)
    model, task = build(args)
    if args.curriculum_steps and args.task != "parity":
        raise ValueError("--curriculum-steps is for the parity task only")

    def schedule(step: int):
        if args.task != "parity":
            return task
        return curriculum(task, step, args.curriculum_steps, args.curriculum_start)

    held_out = fresh_problems(model, args.eval_n, [tcfg.seed, 10_000])
    spec = TrainSpec(
        model=model,
        make_batch=lambda rng, step: sample_batch(args.task, schedule(step), tcfg.batch_size, rng),
        evaluate=lambda m: evaluate(m, held_out).summary(),
        extra_config={"curriculum": {"steps": args.curriculum_steps, "start": args.curriculum_start}}
        if args.curriculum_steps else {},
    )
    result = run_training(spec, tcfg)
    # The card's numbers come from the saved checkpoint on fresh problems, not from training logs.
    model = models.load(tcfg.out)
    fresh_seed = [tcfg.seed, 20_000]
    ev = evaluate(model, fresh_problems(model, args.final_n, fresh_seed))
    summary = ev.summary()
    by = _HEADLINE[args.task]
    metrics = {
        "headline": {"metric": "error", "value": summary["error"], "task": args.task, **asdict(task)},
        "evaluation": {**summary, "data": f"{args.final_n} fresh problems, {args.task} {asdict(task)}",
                       "seed": fresh_seed},
        f"ponder_by_{by}": ponder_by(ev, by).to_dict("records"),
        "train": {k: result[k] for k in ("step", "train_wall_s", "hardware", "world_size", "seed")},
        "history": result["history"],
    }
    checkpoints.write_json(Path(tcfg.out) / checkpoints.METRICS, metrics)
    write_act_card(tcfg.out, args.preset, metrics, cards.commands_so_far(tcfg.out, command_line(args), tcfg.resume))
    print(f"error {summary['error']:.4f}, mean ponder {summary['mean_ponder']:.2f} on {args.final_n} fresh "
          f"{args.task} problems; wall {result['train_wall_s'] / 60:.1f} min")


def write_act_card(folder: str | Path, preset: str | None, metrics: dict, command: str) -> None:
    stored = checkpoints.read_json(Path(folder) / checkpoints.CONFIG)
    config = stored["config"]
    ev, tr = metrics["evaluation"], metrics["train"]
    task = config["task_name"]
    mode = f"ACT tau={config['tau']:g}" if config["act"] else f"no ACT ({config['fixed_steps']} step/input)"
    rows = [{"data": "fresh problems", "error": ev["error"], "step error": ev["step_error"],
             "mean ponder N": ev["mean_ponder"], "mean N+R": ev["mean_ponder_cost"], "n": ev["n"]}]
    by = _HEADLINE[task]
    diff_rows = [{by: r[by], "mean ponder N": r["mean_ponder"], "error": r["step_error"], "n": r["n"]}
                 for r in metrics.get(f"ponder_by_{by}", [])]
    keys = ("cell", "hidden", "act", "fixed_steps", "max_ponder", "eps", "tau", "halt_bias_init")
    what = PRESETS.get(preset or "", {}).get("what", "An ACT RNN.")
    if stored.get("curriculum"):
        c = stored["curriculum"]
        what += (f" Training curriculum: at most {c['start']} nonzero entries at step 0, growing linearly to the "
                 f"full task at step {c['steps']} (`models.act_data.curriculum`); the evaluation uses the full task.")
    notes = f"Ponder time and error against {by.replace('_', ' ')}:\n\n{cards.markdown_table(diff_rows)}"
    if metrics.get("sweep"):
        notes += "\n\nTime-penalty sweep (`workbench eval act`):\n\n" + cards.markdown_table(metrics["sweep"])
    cards.write_card(
        folder,
        title=f"Adaptive Computation Time RNN: {Path(folder).name}",
        headline=f"{config['cell']} {config['hidden']}, {mode}, {task} {_task_label(config)}: "
                 f"error {ev['error']:.3f}, mean ponder {ev['mean_ponder']:.2f}",
        what=what + f"\n\nTask: {task} {config['task']}\n\nConfig: " + ", ".join(f"{k}={config[k]}" for k in keys),
        command=command,
        seed=tr["seed"],
        wall_s=tr["train_wall_s"],
        hardware=tr["hardware"],
        results=rows,
        results_note=f"Measured on the shipped checkpoint with freshly generated problems ({ev['data']}, "
                     f"seed {ev['seed']}). Error = fraction of sequences with any wrong output.",
        notes=notes,
    )


def _task_label(config: dict) -> str:
    t = config["task"]
    if config["task_name"] == "parity":
        return f"({t['size']} entries)"
    return f"(up to {t['max_numbers']} numbers of up to {t['max_digits']} digits)"


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
    import models
    from apps.views.act import halting_figure, ponder_difficulty_figure, tau_sweep_figure
    from models.act import ACT
    from models.act_data import addition_batch, parity_batch
    from models.act_eval import compare, evaluate, fresh_problems, halting_trace, ponder_by, task_of

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
                metrics = checkpoints.load_metrics(folder)
                metrics["sweep"] = rows
                metrics["sweep_seed"] = args.seed
                checkpoints.write_json(folder / checkpoints.METRICS, metrics)
                command = cards.card_command(folder / "card.md")
                write_act_card(folder, _preset(command.split()), metrics, command)


def _first(problems: par.ParitySet) -> par.ParitySet:
    return par.ParitySet(problems.vectors[:1], problems.target[:1], problems.n_nonzero[:1], problems.n_plus[:1])
