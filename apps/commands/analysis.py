"""``workbench patch|attribute|probe|codebook <model> ...``: the analyses from the shell.

``<model>`` is a zoo name or a checkpoint folder. Each command writes a CSV (one row per
site) and an HTML figure to ``--out`` and prints the top rows. The same commands run as
``python -m apps.commands.analysis patch <model> ...``.

    workbench patch reasoner --sites 'steps.*.blocks.*.hook_resid_pre' --positions each
    workbench attribute reasoner --sites 'steps.*.blocks.*.hook_resid_pre' --positions each
    workbench probe reasoner --n 2000 --targets value computed depth
    workbench codebook reasoner --n 256
    workbench patch act-parity            # ACT: every ponder step's state

Inputs, metrics and probe targets are model specific and come from ``probes``:
``probes.reasoner`` (a problem, the same problem with one leaf changed, the logit difference
of the deepest node's answer; probe targets value / computed / depth), ``probes.act``
(parity vectors with the sign of one nonzero entry flipped, the signed output; targets parity / halts) and
``probes.warp`` (trajectories with other physical parameters, the one-step error; targets
the physical parameters).
"""

from __future__ import annotations

import argparse
import fnmatch
import sys
from pathlib import Path

from apps.options import check_names, check_writable, folder, positive_float, positive_int, seed, threads

# torch, numpy, the models and probes are imported when a command runs, so that parsing (and
# rejecting) a command line stays fast
FAMILIES = ("Reasoner", "ACT", "Warp")


def _load(name: str):
    import models

    model = models.load(name)
    if type(model).__name__ not in FAMILIES:
        raise ValueError(f"{name!r} is a {type(model).__name__}; the analysis commands cover {', '.join(FAMILIES)} "
                         "(use the Python API with your own inputs and metric for other models)")
    return model


def _common(p: argparse.ArgumentParser, out: str) -> None:
    p.add_argument("model", help="zoo name or checkpoint folder")
    p.add_argument("--out", type=folder, default=out, help="folder for CSV and HTML")
    p.add_argument("--seed", type=seed, default=0, help="seed for the sampled problems")
    p.add_argument("--nodes", type=positive_int, default=None, help="reasoner: graph size (default: the training size)")
    p.add_argument("--threads", type=threads, default=1, help="torch threads")


def _sites_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--sites", nargs="+", type=_pattern, default=None,
                   help="hook names or glob patterns (default: the reasoner's step x layer x position grid of "
                        "hook_resid_pre; ACT's ponder states; WARP's theta_t)")
    p.add_argument("--positions", type=_axis_text, default=None,
                   help="'each', 'none' (whole activation) or comma-separated ints "
                        "(default: 'each' where the hooks have positions)")
    p.add_argument("--heads", type=_axis_text, default="none",
                   help="'each', 'none' or comma-separated ints (attention hooks)")
    p.add_argument("--n", type=positive_int, default=None,
                   help="problems in the batch (default: 1 for the reasoner, 8 else)")
    p.add_argument("--ablation", choices=["zero", "mean", "resample"], default=None,
                   help="ablate in the clean run instead of patching clean into corrupted")


def _pattern(text: str) -> str:
    """An argparse type: a hook name or glob pattern (not empty)."""
    if not text.strip():
        raise argparse.ArgumentTypeError("expected a hook name or glob pattern, got an empty string")
    return text


def _axis(text: str):
    if text == "none":
        return None
    if text == "each":
        return "each"
    try:
        values = [int(v) for v in text.split(",")]
    except ValueError:
        values = None
    if values is None or min(values) < 0:
        raise ValueError(f"{text!r}: expected 'each', 'none' or comma-separated integers >= 0")
    return values


def _axis_text(text: str) -> str:
    """An argparse type: 'each', 'none' or comma-separated ints >= 0 (kept as text; ``_axis`` reads it)."""
    try:
        _axis(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return text


def _check_sites(model, patterns: list[str] | None, flag: str = "--sites") -> None:
    """Before any work: every name must be one of the model's hooks, every glob must match one."""
    if not patterns:
        return
    names = list(model.hook_dict)
    for p in patterns:
        if not any(c in p for c in "*?["):
            try:
                model.check_hook_name(p)
            except ValueError as e:
                raise ValueError(f"{flag}: {e}") from None
        elif not any(fnmatch.fnmatchcase(n, p) for n in names):
            templates = model.hook_templates()
            menu = ", ".join(templates[:12]) + (", ..." if len(templates) > 12 else "")
            raise ValueError(f"{flag}: {p!r} matches no hook of this model; its hooks look like: {menu}")


def _write(result, out: str, stem: str) -> None:
    paths = result.save(out, stem)
    print(f"wrote {', '.join(str(p) for p in paths)}")


# ------------------------------------------------------------------ patch
def add_patch_args(p: argparse.ArgumentParser, argv: list[str]) -> None:
    _common(p, "out/analysis")
    _sites_args(p)
    p.add_argument("--memory-mb", type=positive_float, default=512, help="activation budget of one batched forward")


def _start(args):
    """Threads set, output folder checked, model loaded: everything cheap that can fail, first."""
    import torch

    torch.set_num_threads(args.threads)
    check_writable(args.out)
    return _load(args.model)


def _setup(args):
    from workbench.sites import Sites

    model = _start(args)
    _check_sites(model, args.sites)
    family = type(model).__name__
    if family == "Reasoner":
        from probes.reasoner import patching_setup

        setup = patching_setup(model, n=args.n or 1, n_nodes=args.nodes, seed=args.seed)
        default = Sites("steps.*.blocks.*.hook_resid_pre", positions="each")
    else:
        from probes import act, warp

        setup = (act if family == "ACT" else warp).patching_setup(model, n=args.n or 8, seed=args.seed)
        default = setup.sites
    if args.sites:
        positions = _axis(args.positions) if args.positions else ("each" if family == "Reasoner" else None)
        sites = Sites(args.sites, positions=positions, heads=_axis(args.heads))
    elif args.positions or args.heads != "none":
        sites = Sites(default.matches, positions=_axis(args.positions or "none"), heads=_axis(args.heads))
    else:
        sites = default
    print(setup.description)
    return model, setup, sites


def patch(args: argparse.Namespace) -> None:
    from workbench.patching import patch as run_patch

    model, s, sites = _setup(args)
    res = run_patch(model, s.clean, s.corrupted, s.metric, sites, ablation=args.ablation,
                    forward_kwargs=s.forward_kwargs, memory_mb=args.memory_mb, progress=True)
    m = res.meta
    print(f"{m['sites']} sites ({m['sites_noop']} no-op) in {m['seconds']:.1f} s; metric clean "
          f"{m['metric_clean']:.3f}, corrupted {m['metric_corrupted']:.3f}")
    print(res.summary(10))
    _write(res, args.out, "patch" if not args.ablation else f"patch_{args.ablation}")


# -------------------------------------------------------------- attribute
def add_attribute_args(p: argparse.ArgumentParser, argv: list[str]) -> None:
    _common(p, "out/analysis")
    _sites_args(p)


def attribute(args: argparse.Namespace) -> None:
    from workbench.attribution import attribute as run_attribute

    model, s, sites = _setup(args)
    res = run_attribute(model, s.clean, s.corrupted, s.metric, sites, ablation=args.ablation,
                        forward_kwargs=s.forward_kwargs)
    print(f"{len(res.df)} sites in {res.meta['seconds']:.1f} s")
    print(res.summary(10))
    _write(res, args.out, "attribute" if not args.ablation else f"attribute_{args.ablation}")


# ------------------------------------------------------------------ probe
TARGETS = {"Reasoner": ("value", "computed", "depth"), "ACT": ("parity", "halts"), "Warp": ("params",)}


def _target_names(model) -> list[str]:
    """The probe targets a model's family offers (WARP: 'params' or one physical parameter)."""
    family = type(model).__name__
    if family != "Warp":
        return list(TARGETS[family])
    from workbench.tasks import dynamics as dy

    system = dy.SYSTEMS.get(model.cfg.task.get("system"))
    return ["params", *(system.param_names if system else ())]


def add_probe_args(p: argparse.ArgumentParser, argv: list[str]) -> None:
    _common(p, "out/analysis")
    p.add_argument("--n", type=positive_int, default=2000, help="problems / sequences")
    p.add_argument("--per-problem", type=positive_int, default=4, help="reasoner: defining positions kept per problem")
    p.add_argument("--sites", nargs="+", type=_pattern, default=["steps.*.blocks.*.hook_resid_post"],
                   help="reasoner: hook names or globs (ACT: ponder states; WARP: theta_t every 8 steps)")
    p.add_argument("--targets", nargs="+", default=None,
                   help="reasoner: value computed depth; ACT: parity halts; WARP: params or one physical parameter "
                        "(default: all)")
    p.add_argument("--control-types", choices=["none", "variable"], default="none",
                   help="control task: relabel each sample ('none') or each variable name ('variable', Hewitt & Liang)")
    p.add_argument("--batch-size", type=positive_int, default=64)


def _activations(model, args):
    """(activations, {target name: target or (target, fit kwargs)}, fit kwargs) for the model's family."""
    import numpy as np

    from workbench.sites import Sites

    family = type(model).__name__
    if family == "ACT":
        from probes import act

        acts = act.collect_states(model, args.n, seed=args.seed)
        return acts, {"parity": "parity", "halts": (act.halts(acts.rows), {"sites": "time.*.ponder.*"})}, {}
    if family == "Warp":
        from probes import warp

        acts = warp.collect_thetas(model, args.n, seed=args.seed)
        params = [c for c in acts.rows.columns if c != "item"]
        return acts, {p: p for p in params}, {}
    from probes import reasoner as pr
    from workbench.tasks import graph_arith as ga

    problems = ga.sample(pr.task_of(model, n_nodes=args.nodes), args.n, np.random.default_rng(args.seed))
    steps = model.cfg.steps_for_depth(max(p.depth for p in problems))
    acts = pr.collect(model, problems, Sites(args.sites), batch_size=args.batch_size, per_problem=args.per_problem,
                      steps=steps, seed=args.seed, progress=True)
    types = None if args.control_types == "none" else "variable"
    targets = {"value": "value", "computed": pr.computed(acts.rows), "depth": "depth"}
    return acts, targets, {"types": types, "groups": "problem"}


def probe(args: argparse.Namespace) -> None:
    import pandas as pd

    import probes
    from workbench.results import Result

    model = _start(args)
    family = type(model).__name__
    # checked before the activations are collected
    check_names(args.targets or (), _target_names(model), "--targets")
    if family == "Reasoner":
        _check_sites(model, args.sites)
    acts, targets, kwargs = _activations(model, args)
    wanted = args.targets or list(TARGETS[family])
    if family == "Warp" and "params" in wanted:
        wanted = [t for t in wanted if t != "params"] + [t for t in targets if t not in wanted]
    bad = [t for t in wanted if t not in targets]
    if bad:
        raise ValueError(f"unknown target(s) {bad} for {family}; allowed: {list(targets)}")
    print(f"collected {acts}")
    results = []
    for target in wanted:
        y, extra = targets[target] if isinstance(targets[target], tuple) else (targets[target], {})
        res = probes.fit(acts, y, target_name=target, seed=args.seed, progress=True, **kwargs, **extra)
        print(f"{target}: {res.summary(5)}")
        _write(res, args.out, f"probe_{target}")
        results.append(res.df)
    both = Result("probe", pd.concat(results, ignore_index=True), "selectivity")
    both.to_csv(Path(args.out) / "probe.csv")


# --------------------------------------------------------------- codebook
def add_codebook_args(p: argparse.ArgumentParser, argv: list[str]) -> None:
    _common(p, "out/analysis")
    p.add_argument("--n", type=positive_int, default=256, help="problems / sequences")
    p.add_argument("--k", type=positive_int, default=8, help="ACT / WARP: clusters of the post-hoc (k-means) codebook")


def codebook(args: argparse.Namespace) -> None:
    import numpy as np

    model = _start(args)
    family = type(model).__name__
    if family == "Reasoner":
        from probes.reasoner import codebook_report, task_of
        from workbench.tasks import graph_arith as ga

        problems = ga.sample(task_of(model, n_nodes=args.nodes), args.n, np.random.default_rng(args.seed))
        rep = codebook_report(model, problems, seed=args.seed)
    else:
        from probes import act, warp

        rep = (act if family == "ACT" else warp).codebook_report(model, n=args.n, k=args.k, seed=args.seed)
    cols = [c for c in ("step", "time", "used", "dead", "perplexity", "accuracy", "nmi", "relative_distance")
            if c in rep.df]
    print(rep.df[cols].round(3).to_string(index=False))
    if "repair" in rep.meta:
        print(f"one-step repair rate: {rep.meta['repair']['repair_rate']:.3f} "
              f"({rep.meta['repair']['corrupted']} corrupted slots)")
    _write(rep, args.out, "codebook")
    for which in ("accuracy", "confusion", "pca", "fourier", "drift"):
        if which in rep.tables:
            rep.to_html(Path(args.out) / f"codebook_{which}.html", which=which)


# ---------------------------------------------------------------- module entry
COMMANDS = {"patch": (add_patch_args, patch), "attribute": (add_attribute_args, attribute),
            "probe": (add_probe_args, probe), "codebook": (add_codebook_args, codebook)}


def build_parser(argv: list[str]) -> argparse.ArgumentParser:
    from apps.cli import Parser

    parser = Parser(prog="python -m apps.commands.analysis", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (add, run) in COMMANDS.items():
        p = sub.add_parser(name)
        add(p, argv)
        p.set_defaults(func=run)
    return parser


def main(argv: list[str] | None = None) -> int:
    """``python -m apps.commands.analysis <patch|attribute|probe|codebook> <model> ...``"""
    from apps.cli import run

    return run(build_parser, list(sys.argv[1:] if argv is None else argv), prog="python -m apps.commands.analysis")


if __name__ == "__main__":
    sys.exit(main())
