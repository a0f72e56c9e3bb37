"""``workbench dynamics <model> --analysis lens|convergence|transfer|basin|fixed-points``: the loop-dynamics lab.

``<model>`` is a zoo name or a checkpoint folder of a family with a loop (reasoner, ACT, WARP,
GRU, gain circuit). The family's adapters (``models.dynamics_adapters``, named by
``models.registry``) draw ``--n`` fresh inputs of the model's task, run the analysis, print its
summary and write ``dynamics_<analysis>.csv`` (plus one CSV per extra table) and
``dynamics_<analysis>.html`` to ``--out``. The same command runs as
``python -m apps.commands.dynamics <model> --analysis ...``.

    workbench dynamics reasoner --analysis convergence       # commit step vs depth
    workbench dynamics act-parity --analysis lens --n 64
    workbench dynamics warp-phys-msd --analysis basin     # does theta return after a kick?
    workbench dynamics gain-v1 --analysis fixed-points
"""

from __future__ import annotations

import argparse
import sys

from apps.options import check_writable, folder, positive_int, seed, threads

HELP = "loop dynamics (iteration lens, convergence, probe transfer, basins, fixed points) of a zoo model or checkpoint"


def _analyses() -> tuple[str, ...]:
    from models.registry import ANALYSES  # torch-free

    return ANALYSES


def add_dynamics_args(p: argparse.ArgumentParser, argv: list[str]) -> None:
    p.add_argument("model", help="zoo name or checkpoint folder")
    p.add_argument("--analysis", required=True, choices=_analyses(), help="which analysis")
    p.add_argument("--n", type=positive_int, default=None,
                   help="inputs (>= 2; default: the family's: 8 for the reasoner, 64 for ACT, 16 otherwise; "
                        "transfer: 64 for the reasoner, 256 otherwise)")
    p.add_argument("--quick", action="store_true",
                   help="the Dynamics page's small, quick settings (fewer inputs, steps, sizes and starts)")
    p.add_argument("--seed", type=seed, default=0, help="seed for the sampled inputs")
    p.add_argument("--out", type=folder, default="out/dynamics", help="folder for CSV and HTML")
    p.add_argument("--threads", type=threads, default=1, help="torch threads")


def dynamics(args: argparse.Namespace) -> None:
    import torch

    import models
    from models import dynamics_adapters as da
    from models import registry

    torch.set_num_threads(args.threads)
    if args.n is not None and args.n < 2:
        raise ValueError(f"--n {args.n}: give at least 2 inputs")
    check_writable(args.out)
    family = registry.family_of(args.model)  # from config.json, before loading
    if family.dynamics is None:
        covered = ", ".join(n for n, f in registry.families().items() if f.dynamics is not None)
        raise ValueError(f"{args.model!r}: the dynamics lab does not cover the {family.label} family "
                         f"(covered: {covered})")
    a = da.family_adapters(family.name)
    allowed = da.analyses_of(family.name)
    if args.analysis not in allowed:
        why = a.notes if a is not None else family.dynamics.state
        raise ValueError(f"--analysis {args.analysis!r} does not apply to the {family.label} family "
                         f"({why}); allowed: {', '.join(allowed)}")
    model = models.load(args.model)
    options = da.page_defaults(da.adapters(model), args.analysis) if args.quick else {}
    if args.n is not None:
        options["n"] = args.n
    res = da.run(model, args.analysis, seed=args.seed, **options)
    print(res.summary())
    paths = res.save(args.out, f"dynamics_{args.analysis.replace('-', '_')}")
    print(f"wrote {', '.join(str(p) for p in paths)}")


def build_parser(argv: list[str]) -> argparse.ArgumentParser:
    from apps.cli import Parser

    parser = Parser(prog="python -m apps.commands.dynamics", description=__doc__)
    add_dynamics_args(parser, argv)
    parser.set_defaults(func=dynamics)
    return parser


def main(argv: list[str] | None = None) -> int:
    """``python -m apps.commands.dynamics <model> --analysis ...``"""
    from apps.cli import run

    return run(build_parser, list(sys.argv[1:] if argv is None else argv), prog="python -m apps.commands.dynamics")


if __name__ == "__main__":
    sys.exit(main())
