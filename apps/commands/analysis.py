"""``workbench patch|attribute|probe|codebook <model> ...``: the analyses from the shell.

``<model>`` is a zoo name or a checkpoint folder. Each command writes a CSV (one row per
site) and an HTML figure to ``--out`` and prints the top rows. The same commands run as
``python -m apps.commands.analysis patch <model> ...``.

    workbench patch reasoner --sites 'steps.*.blocks.*.hook_resid_pre' --positions each
    workbench attribute reasoner --sites 'steps.*.blocks.*.hook_resid_pre' --positions each
    workbench probe reasoner --n 2000 --targets value computed depth
    workbench codebook reasoner --n 256
    workbench patch act-parity            # ACT: every ponder step's state

Inputs, metrics, probe targets and codebooks are family specific and come from the family's
study in ``probes`` (``probes.study.Study``), which the model registry (``models.registry``)
names: ``probes.reasoner`` (a problem, the same problem with one leaf changed, the logit
difference of the deepest node's answer; probe targets value / computed / depth), ``probes.act``
(parity vectors with the sign of one nonzero entry flipped, the signed output; targets parity /
halts) and ``probes.warp`` (trajectories with other physical parameters, the one-step error;
targets the physical parameters). A model of a family without a study is refused.
"""

from __future__ import annotations

import argparse
import fnmatch
import sys
from pathlib import Path

from apps.options import check_names, check_writable, folder, positive_float, positive_int, seed, threads

# torch, numpy, the models and probes are imported when a command runs, so that parsing (and
# rejecting) a command line stays fast; the analyses of a model come from its family's study


def _load(name: str):
    """(model, its family's study); a model of a family the analyses do not cover is refused."""
    import models
    from probes import study

    model = models.load(name)
    try:
        return model, study.need(model)
    except ValueError as e:
        raise ValueError(f"{name!r}: {e}") from None


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
                   help="problems in the batch (default: the family's: 1 for the reasoner, 8 for ACT, 4 for WARP)")
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


def _options(study, model, analysis: str, args) -> dict:
    """The study's options of ``analysis`` that the command line sets (``--nodes``, ``--k``, ...)."""
    given = {o.name: getattr(args, o.flag, None) for o in study.options(model, analysis)}
    return study.checked(model, analysis, {k: v for k, v in given.items() if v is not None})


def _setup(args):
    from workbench.sites import Sites

    model, study = _start(args)
    _check_sites(model, args.sites)
    study.check(model)
    setup = study.patching(model, args.n, args.seed, **_options(study, model, "patch", args))
    if args.sites:
        positions = _axis(args.positions) if args.positions else _axis(study.positions)
        sites = Sites(args.sites, positions=positions, heads=_axis(args.heads))
    elif args.positions or args.heads != "none":
        sites = Sites(setup.sites.matches, positions=_axis(args.positions or "none"), heads=_axis(args.heads))
    else:
        sites = setup.sites
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
def add_probe_args(p: argparse.ArgumentParser, argv: list[str]) -> None:
    _common(p, "out/analysis")
    p.add_argument("--n", type=positive_int, default=2000, help="problems / sequences")
    p.add_argument("--per-problem", type=positive_int, default=4, help="reasoner: defining positions kept per problem")
    p.add_argument("--sites", nargs="+", type=_pattern, default=["steps.*.blocks.*.hook_resid_post"],
                   help="reasoner: hook names or globs (ACT: ponder states; WARP: theta_t every 8 steps)")
    p.add_argument("--targets", nargs="+", default=None,
                   help=f"probe targets, or 'params' for every physical parameter of WARP (default, by family: "
                        f"{_default_targets()})")
    p.add_argument("--control-types", choices=["none", "variable"], default="none",
                   help="control task: relabel each sample ('none') or each variable name ('variable', Hewitt & Liang; "
                        "the reasoner)")
    p.add_argument("--batch-size", type=positive_int, default=None, help="forward batch (default: the family's)")


def _default_targets() -> str:
    from models import registry  # no torch: the registry names its families' parts by module path

    return "; ".join(f"{f.label}: {' '.join(f.targets)}" for f in registry.families().values() if f.analysed)


def probe(args: argparse.Namespace) -> None:
    import pandas as pd

    from models import registry
    from workbench.results import Result

    model, study = _start(args)
    study.check(model)
    # checked before the activations are collected
    check_names(args.targets or (), study.target_names(model), "--targets")
    if args.control_types not in study.controls:
        raise ValueError(f"--control-types: {args.control_types!r}; allowed for this model: "
                         f"{', '.join(study.controls)}")
    options = _options(study, model, "probe", args)
    if "sites" in options:
        _check_sites(model, options["sites"])
    wanted = study.expand(model, args.targets or registry.family_of(model).targets)
    acts = study.collect(model, args.n, args.seed, batch_size=args.batch_size, progress=True, **options)
    print(f"collected {acts}")
    results = []
    for target in wanted:
        res = study.fit(model, acts, target, args.control_types, seed=args.seed, progress=True)
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
    model, study = _start(args)
    study.check(model)
    rep = study.codebook(model, args.n, args.seed, **_options(study, model, "codebook", args))
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
