"""``workbench train gain`` and ``workbench eval gain``: the gain circuit's adaptation experiment.

The gains are not learned by the shared trainer: the objective is a deterministic expectation
over p(s) with a closed-form optimum (``models.gain``), so ``train`` solves it exactly (or by
deterministic gradient descent with ``--solver gradient``), checks the closed form against
gradient descent, saves the circuit with both gain sets, and evaluates the saved checkpoint
(the recipe: ``models.recipes.gain``).

    workbench train gain --out runs/gain-v1
    workbench train gain --out models/zoo/gain-v1 --overwrite   # replace the shipped gain-v1
    workbench eval gain --out out/gain                          # the shipped gain-v1
    workbench eval gain --biased "biased adapter=30 weight=0.3 width=5" --out out/gain30
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

import models
from apps.options import (add_dataclass_args, check_writable, command_line, folder, non_negative_float,
                          positive_float, positive_int, seed, threads, whole)
from apps.views import gain as views
from models import recipes
from models.gain import GainCircuit, GainConfig
from models.gain_solvers import default_solver
from models.gain_experiment import run, sampled_correlations
from models.recipes import gain as recipe
from workbench.tasks import orientation as ori

DEFAULT_MODEL = "gain-v1"
# value ranges checked while parsing (GainConfig checks the rest when it is built)
_CONFIG_TYPES = {"n_neurons": whole(3), "max_steps": positive_int, "grid": whole(8),
                 **dict.fromkeys(("kappa", "w_exc_kappa", "tau", "dt", "alpha", "amplitude"), positive_float),
                 **dict.fromkeys(("baseline", "w_exc", "w_inh", "energy"), non_negative_float)}


# ----------------------------------------------------------------------- train
def add_train_args(p: argparse.ArgumentParser, argv: list[str]) -> None:
    p.add_argument("--out", type=folder, default="runs/gain", help="checkpoint folder to write")
    p.add_argument("--overwrite", action="store_true", help="replace the checkpoint already in --out")
    p.add_argument("--solver", choices=("analytic", "gradient"), default=None,
                   help="how the stored gain sets are found (default: analytic when energy=0, else gradient)")
    p.add_argument("--seed", type=seed, default=0, help="seed of the fresh sampled stimuli of the final check")
    p.add_argument("--n-samples", type=positive_int, default=20000,
                   help="fresh stimuli for the sampled correlation check")
    p.add_argument("--threads", type=threads, default=1, help="torch threads")
    add_dataclass_args(p, GainConfig, title="circuit and objective", types=_CONFIG_TYPES)


def train(args: argparse.Namespace) -> None:
    recipes.run(recipe, args, command_line(args))


# ------------------------------------------------------------------------ eval
def add_eval_args(p: argparse.ArgumentParser, argv: list[str]) -> None:
    p.add_argument("--model", type=folder, default=DEFAULT_MODEL, help="zoo name or checkpoint folder")
    p.add_argument("--biased", type=_distribution, default=None,
                   help="biased distribution in the text format, e.g. 'biased adapter=0 weight=0.5 width=0' "
                        "(default: the model's own; another one re-solves the adapted gains)")
    p.add_argument("--solver", choices=("stored", "analytic", "gradient"), default=None,
                   help="adapted gains: the stored set, or solved here (default: stored for the model's own "
                        "distribution, else analytic)")
    p.add_argument("--n-samples", type=positive_int, default=20000,
                   help="fresh stimuli for the sampled correlation check")
    p.add_argument("--seed", type=seed, default=1, help="seed of the sampled stimuli")
    p.add_argument("--out", type=folder, default="out/gain", help="folder for CSV and HTML")
    p.add_argument("--threads", type=threads, default=1)


def _distribution(text: str) -> str:
    """An argparse type: a distribution in the text format of ``workbench.tasks.orientation``."""
    try:
        ori.parse(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"{text!r}: {e}") from None
    return text


def eval(args: argparse.Namespace) -> None:  # noqa: A001 - the CLI verb
    torch.set_num_threads(args.threads)
    check_writable(args.out)
    t0 = time.time()
    model = models.load(args.model)
    if not isinstance(model, GainCircuit):
        raise ValueError(f"{args.model!r} is a {type(model).__name__}, not a GainCircuit")
    dist = ori.parse(args.biased) if args.biased else model.cfg.distribution("biased")
    solver = args.solver or ("stored" if dist == model.cfg.distribution("biased") else default_solver(model, dist))
    result = run(model, dist, solver=solver)
    sampled = sampled_correlations(model, result, args.n_samples, args.seed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    result.effects.to_csv(out / "effects.csv", index=False)
    result.neurons.to_csv(out / "neurons.csv", index=False)
    result.tuning.to_csv(out / "tuning.csv", index=False)
    result.pairs().to_csv(out / "pairs.csv", index=False)
    for name, fig in views.all_figures(result).items():
        fig.write_html(out / f"{name}.html", include_plotlyjs="cdn")
    print(f"model {args.model}; biased distribution {result.distribution!r}; adapted gains: {solver}")
    print(recipe.effects_table(result.effects))
    print(f"\nsampled check ({sampled['n']} fresh stimuli, seed {sampled['seed']}): near-pair correlation "
          f"{sampled['near_pairs_before']:.3f} -> {sampled['near_pairs_after']:.3f}")
    print(f"all effects reproduced in direction: {result.reproduced()}; {time.time() - t0:.1f} s")
    print(f"wrote {', '.join(sorted(p.name for p in out.iterdir()))} to {out}")
