"""The ``workbench`` command line: ``workbench <command> <family> [options]``.

    workbench train reasoner --preset quick --out runs/quick
    workbench eval reasoner --seed 1 --out out/ood
    workbench patch reasoner --positions each
    workbench list
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

import apps.commands

# `train` and `eval` go through one module per model family in apps/commands/ (each offers
# add_<command>_args(parser, argv) and <command>(args)); the analyses take any model, so they
# come straight from apps/commands/analysis.py: `workbench patch <model> ...`.
COMMANDS = ("train", "eval")
ANALYSES = ("patch", "attribute", "probe", "codebook")


def families() -> dict:
    names = sorted(m.name for m in pkgutil.iter_modules(apps.commands.__path__)
                   if not m.name.startswith("_") and m.name != "analysis")
    return {name.replace("_", "-"): importlib.import_module(f"apps.commands.{name}") for name in names}


def build_parser(argv: list[str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="workbench", description="Mechanistic-interpretability workbench for looped models.")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="list the shipped checkpoints").set_defaults(func=_list)
    found = families()
    for command in COMMANDS:
        supported = {n: m for n, m in found.items() if hasattr(m, f"add_{command}_args")}
        if not supported:
            continue
        cmd = sub.add_parser(command, help=f"{command} ({', '.join(supported)})")
        fam = cmd.add_subparsers(dest="family", required=True)
        for name, module in supported.items():
            p = fam.add_parser(name, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
            getattr(module, f"add_{command}_args")(p, argv)
            p.set_defaults(func=getattr(module, command))
    analysis = importlib.import_module("apps.commands.analysis")
    for command in ANALYSES:
        p = sub.add_parser(command, help=f"{command} any zoo model or checkpoint",
                           formatter_class=argparse.ArgumentDefaultsHelpFormatter)
        getattr(analysis, f"add_{command}_args")(p, argv)
        p.set_defaults(func=getattr(analysis, command))
    return parser


def _list(args: argparse.Namespace) -> None:
    import models

    print(models.available() or "(the zoo is empty)")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser(argv).parse_args(argv)
    try:
        result = args.func(args)
    except (ValueError, KeyError, FileNotFoundError) as e:
        print(f"workbench: error: {e}", file=sys.stderr)
        return 2
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
