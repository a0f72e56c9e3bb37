"""The ACT recipe: an RNN with Adaptive Computation Time on parity or running sums (``workbench train act``)."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from models.act import ACT, ACTConfig
from models.act_data import curriculum, model_shape, sample_batch
from models.act_eval import evaluate as evaluate_problems, fresh_problems, ponder_by
from models.recipes import Setup, from_args
from workbench import cards
from workbench.tasks import addition as add
from workbench.tasks import parity as par
from workbench.train import TrainSpec

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
TASKS = ("parity", "addition")
# ACTConfig fields fixed by the task (see models.act_data.model_shape) or stored separately
MODEL_SKIP = ("input_size", "output_size", "output", "n_classes", "max_time", "task_name", "task")
# the difficulty that ponder time is reported against
BY = {"parity": "n_nonzero", "addition": "digits"}


def build(args) -> Setup:
    task = from_args(par.ParityConfig if args.task == "parity" else add.AdditionConfig, args)
    cfg = from_args(ACTConfig, args, skip=MODEL_SKIP, **model_shape(args.task, task), task_name=args.task,
                    task=asdict(task))
    model = ACT(cfg)
    if args.curriculum_steps and args.task != "parity":
        raise ValueError("--curriculum-steps is for the parity task only")
    held_out = fresh_problems(model, args.eval_n, [args.seed, 10_000])
    spec = TrainSpec(
        model=model,
        make_batch=batches(args, task),
        evaluate=lambda m: evaluate_problems(m, held_out).summary(),
        extra_config={"curriculum": {"steps": args.curriculum_steps, "start": args.curriculum_start}}
        if args.curriculum_steps else {},
    )
    return Setup(args, model, task, spec)


def batches(args, task):
    """make_batch(rng, step): running sums, or parity whose nonzero count grows under the curriculum."""

    def make_batch(rng, step: int) -> dict:
        now = curriculum(task, step, args.curriculum_steps, args.curriculum_start) if args.task == "parity" else task
        return sample_batch(args.task, now, args.batch_size, rng)

    return make_batch


def evaluate(model: ACT, setup: Setup) -> dict:
    args = setup.args
    fresh_seed = [args.seed, 20_000]
    ev = evaluate_problems(model, fresh_problems(model, args.final_n, fresh_seed))
    by = BY[args.task]
    return {
        "evaluation": {**ev.summary(), "data": f"{args.final_n} fresh problems, {args.task} {asdict(setup.task)}",
                       "seed": fresh_seed},
        f"ponder_by_{by}": _records(ponder_by(ev, by)),
    }


def score(model: ACT, n: int, seed) -> dict:
    """The headline metric and its companion on ``n`` fresh problems (``models.seeds`` compares training seeds)."""
    ev = evaluate_problems(model, fresh_problems(model, n, seed)).summary()
    return {"error": ev["error"], "mean ponder N": ev["mean_ponder"]}


def _records(df) -> list[dict]:
    """Rows for metrics.json: NaN (e.g. the error at the cap where no input reached it) becomes null."""
    return df.astype(object).where(df.notna(), None).to_dict("records")


def headline(parts: dict, setup: Setup) -> dict:
    return {"metric": "error", "value": parts["evaluation"]["error"], "task": setup.args.task, **asdict(setup.task)}


def report(metrics: dict, setup: Setup) -> str:
    ev = metrics["evaluation"]
    return (f"error {ev['error']:.4f}, mean ponder {ev['mean_ponder']:.2f} on {setup.args.final_n} fresh "
            f"{setup.args.task} problems; wall {metrics['train']['train_wall_s'] / 60:.1f} min")


def card(folder: Path, stored: dict, metrics: dict, what: str | None) -> dict:
    config = stored["config"]
    ev = metrics["evaluation"]
    task = config["task_name"]
    mode = f"ACT tau={config['tau']:g}" if config["act"] else f"no ACT ({config['fixed_steps']} step/input)"
    rows = [{"data": "fresh problems", "error": ev["error"], "step error": ev["step_error"],
             "mean ponder N": ev["mean_ponder"], "mean N+R": ev["mean_ponder_cost"], "n": ev["n"]}]
    by = BY[task]
    diff_rows = [{by: r[by], "mean ponder N": r["mean_ponder"], "error": r["step_error"], "n": r["n"]}
                 for r in metrics.get(f"ponder_by_{by}", [])]
    keys = ("cell", "hidden", "act", "fixed_steps", "max_ponder", "eps", "tau", "halt_bias_init")
    what = what or "An ACT RNN."
    if stored.get("curriculum"):
        c = stored["curriculum"]
        what += (f" Training curriculum: at most {c['start']} nonzero entries at step 0, growing linearly to the "
                 f"full task at step {c['steps']} (`models.act_data.curriculum`); the evaluation uses the full task.")
    notes = f"Ponder time and error against {by.replace('_', ' ')}:\n\n{cards.markdown_table(diff_rows)}"
    if metrics.get("sweep"):
        notes += "\n\nTime-penalty sweep (`workbench eval act`):\n\n" + cards.markdown_table(metrics["sweep"])
    return dict(
        title=f"Adaptive Computation Time RNN: {folder.name}",
        headline=f"{config['cell']} {config['hidden']}, {mode}, {task} {_task_label(config)}: "
                 f"error {ev['error']:.3f}, mean ponder {ev['mean_ponder']:.2f}",
        what=what + f"\n\nTask: {task} {config['task']}\n\nConfig: " + ", ".join(f"{k}={config[k]}" for k in keys),
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
