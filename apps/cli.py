"""The ``workbench`` command line: ``workbench <command> [<family>] [options]``.

    workbench list
    workbench train reasoner --preset quick --out runs/quick
    workbench eval reasoner --seed 1 --out out/ood
    workbench patch reasoner --positions each
    workbench probe act-parity --targets parity
    workbench dynamics reasoner --analysis convergence
    workbench seeds act-addition --runs runs/seeds/act-addition-s1,runs/seeds/act-addition-s2

``train`` and ``eval`` take a model family (one module per family in apps/commands/, each
offering ``add_<command>_args(parser, argv)`` and ``<command>(args)``); the analyses ``patch``,
``attribute``, ``probe`` and ``codebook`` take any zoo model or checkpoint folder
(apps/commands/analysis.py); ``dynamics`` runs the loop-dynamics lab on one
(apps/commands/dynamics.py); ``seeds`` compares a zoo model with its seed runs (apps/commands/seeds.py).

Only the parser that the command line selects is built, so ``workbench --help`` and
``workbench list`` import neither torch nor any model. Every expected failure (a bad option
value, a missing or corrupt checkpoint, an existing run, an unwritable folder) ends with one
line ``workbench: error: ...`` on stderr and exit status 2; Ctrl-C ends with status 130.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import pkgutil
import re
import sys
from pathlib import Path
from typing import Callable

import apps.commands
from apps.options import HelpFormatter

COMMANDS = ("train", "eval")
ANALYSES = ("patch", "attribute", "probe", "codebook")
_HELP = {
    "train": "train a model of one family and write a checkpoint folder with its card",
    "eval": "evaluate the checkpoints of one family and write CSV and HTML",
    "patch": "activation patching over every loop step of a zoo model or checkpoint",
    "attribute": "attribution patching (gradient x activation difference) of a zoo model or checkpoint",
    "probe": "linear probes on cached activations of a zoo model or checkpoint",
    "codebook": "codebook / discrete-state analysis of a zoo model or checkpoint",
    "dynamics": "loop dynamics (iteration lens, convergence, probe transfer, basins, fixed points) of a zoo model "
                "or checkpoint",
    "seeds": "a zoo model's headline metric over its training seeds, every checkpoint on the same fresh inputs",
}
# commands with a module of their own in apps/commands/ (not a model family)
OWN_MODULES = ("analysis", "dynamics", "seeds")


class UsageError(Exception):
    """A command line that does not parse (reported in one line, exit status 2)."""


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are raised (and reported by ``run``) instead of printing usage."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str):
        raise UsageError(f"{message} (see '{self.prog} --help')")


# ---------------------------------------------------------------- families
def _source(name: str) -> str:
    folder = Path(apps.commands.__path__[0])
    path = folder / name / "__init__.py" if (folder / name).is_dir() else folder / f"{name}.py"
    return path.read_text()


def families(command: str | None = None) -> dict[str, str]:
    """Family name -> its command module, for the families that offer ``command``.

    Found from the files in apps/commands/ without importing them: a family module is imported
    only when its command runs or its own ``--help`` is asked for.
    """
    found = {}
    for m in sorted(pkgutil.iter_modules(apps.commands.__path__), key=lambda m: m.name):
        if m.name.startswith("_") or m.name in OWN_MODULES:
            continue
        if command is None or re.search(rf"^def add_{command}_args\(", _source(m.name), re.M):
            found[m.name.replace("_", "-")] = f"apps.commands.{m.name}"
    return found


def _selected(argv: list[str]) -> tuple[str | None, str | None]:
    """(command, family) named by the command line: its first two words that are not options."""
    words = [a for a in argv if not a.startswith("-")]
    command = words[0] if words else None
    family = words[1] if command in COMMANDS and len(words) > 1 else None
    return command, family


def _sentence(text: str) -> str:
    return text[0].upper() + text[1:] + "."


def build_parser(argv: list[str]) -> argparse.ArgumentParser:
    """The parser of ``workbench``; only the subcommand that ``argv`` selects gets its options."""
    selected, family = _selected(argv)
    parser = Parser(prog="workbench", description="Mechanistic-interpretability workbench for looped models.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", title="commands")
    sub.add_parser("list", help="list the shipped checkpoints", description="List the shipped checkpoints.") \
        .set_defaults(func=_list)
    for command in COMMANDS:
        found = families(command)
        cmd = sub.add_parser(command, help=f"{_HELP[command]} ({', '.join(found)})",
                             description=f"{_sentence(_HELP[command])}\nOptions of a family: "
                                         f"workbench {command} <family> --help")
        fam = cmd.add_subparsers(dest="family", required=True, metavar="FAMILY", title="families")
        for name, module_name in found.items():
            p = fam.add_parser(name, help=f"options: workbench {command} {name} --help")
            if selected == command and family == name:
                module = importlib.import_module(module_name)
                getattr(module, f"add_{command}_args")(p, argv)
                p.set_defaults(func=getattr(module, command))
    for command in ANALYSES:
        p = sub.add_parser(command, help=_HELP[command], description=_sentence(_HELP[command]))
        if selected == command:
            analysis = importlib.import_module("apps.commands.analysis")
            getattr(analysis, f"add_{command}_args")(p, argv)
            p.set_defaults(func=getattr(analysis, command))
    for command in ("dynamics", "seeds"):  # one module each in apps/commands/
        p = sub.add_parser(command, help=_HELP[command], description=_sentence(_HELP[command]))
        if selected == command:
            module = importlib.import_module(f"apps.commands.{command}")
            getattr(module, f"add_{command}_args")(p, argv)
            p.set_defaults(func=getattr(module, command))
    return parser


# ------------------------------------------------------------------- list
def _list(args: argparse.Namespace) -> None:
    import models  # reads the zoo without importing torch

    print(models.available() or "(the zoo is empty)")


# --------------------------------------------------------------- running
def error_message(e: BaseException) -> str | None:
    """The one-line report of an expected failure; None for anything else (a bug: keep the traceback)."""
    training_error = getattr(sys.modules.get("workbench.train"), "TrainingError", ())
    if isinstance(e, KeyError):
        text = str(e.args[0]) if e.args else "KeyError"
    elif isinstance(e, (UsageError, ValueError, OSError)) or (training_error and isinstance(e, training_error)):
        text = str(e) or type(e).__name__
    elif isinstance(e, MemoryError) or (isinstance(e, RuntimeError) and re.search(
            r"out of memory|can't allocate memory|not enough memory", str(e), re.I)):
        text = f"out of memory ({str(e).strip() or 'MemoryError'}); try smaller sizes, batches or --n"
    else:
        return None
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return "; ".join(lines) or type(e).__name__


def run(build: Callable[[list[str]], argparse.ArgumentParser], argv: list[str], prog: str = "workbench") -> int:
    """Parse ``argv`` with ``build(argv)`` and run the selected command; expected failures -> one line, 2."""
    try:
        try:
            args = build(argv).parse_args(argv)
        except SystemExit as e:  # --help
            return e.code if isinstance(e.code, int) else 0
        if getattr(args, "argv", None) is None:
            args.argv = list(argv)  # the command as given (for model cards)
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 - expected failures become one line; others propagate
        message = error_message(e)
        if message is None:
            raise
        print(f"{prog}: error: {message}", file=sys.stderr)
        return 2


def main(argv: list[str] | None = None) -> int:
    return run(build_parser, list(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    sys.exit(main())
