"""Command-line options: typed values checked while parsing, and options generated from config
dataclasses, so every field is settable.

Every ``type=`` function here raises ``argparse.ArgumentTypeError`` with the allowed range, so
``--batch-size 0`` stops at parse time with ``argument --batch-size: expected a whole number
>= 1, got '0'`` instead of failing somewhere inside a run.

    p.add_argument("--n", type=positive_int, default=None, help="problems (default: 8)")
    add_dataclass_args(p, TrainConfig, types=TRAIN_TYPES, title="training")
    cfg = models.recipes.from_args(TrainConfig, args)   # a ValueError of the dataclass names the flag: --steps=-5 ...

The way back from options to configs (``from_args``), ``preset_of`` and ``check_writable`` live
with the training recipes (``models.recipes``), which build every family's configs from these options.
"""

from __future__ import annotations

import argparse
import copy
import math
import shlex
import sys
import typing
from dataclasses import MISSING, fields
from typing import Callable, Iterable, Mapping

from models.recipes import check_writable, preset_of  # noqa: F401 - check_writable: for the commands' --out


# ------------------------------------------------------------------ value types
def whole(lo: int | None = None, hi: int | None = None, what: str = "a whole number") -> Callable[[str], int]:
    """An argparse type: an integer in [lo, hi] (no bound where None)."""
    if lo is not None and hi is not None:
        rule = f" in {lo}..{hi}"
    elif lo is not None:
        rule = f" >= {lo}"
    else:
        rule = f" <= {hi}" if hi is not None else ""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or (lo is not None and value < lo) or (hi is not None and value > hi):
            raise argparse.ArgumentTypeError(f"expected {what}{rule}, got {text!r}")
        return value

    return parse


def real(lo: float = -math.inf, hi: float = math.inf, lo_open: bool = False, hi_open: bool = False,
         what: str = "a number") -> Callable[[str], float]:
    """An argparse type: a finite float in [lo, hi] (``lo_open``/``hi_open``: excluding that end)."""
    left = "(" if lo_open else "["
    right = ")" if hi_open else "]"
    if lo == -math.inf and hi == math.inf:
        rule = " (finite)"
    elif hi == math.inf:
        rule = f" {'>' if lo_open else '>='} {lo:g}"
    elif lo == -math.inf:
        rule = f" {'<' if hi_open else '<='} {hi:g}"
    else:
        rule = f" in {left}{lo:g}, {hi:g}{right}"

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}{rule}, got {text!r}") from None
        above = value > lo if lo_open else value >= lo
        below = value < hi if hi_open else value <= hi
        if not (math.isfinite(value) and above and below):
            raise argparse.ArgumentTypeError(f"expected {what}{rule}, got {text!r}")
        return value

    return parse


positive_int = whole(1)
non_negative_int = whole(0)
seed = whole(0, 2**32 - 1, what="a seed")
threads = whole(1, 1024, what="a number of threads")
finite_float = real()
positive_float = real(0.0, lo_open=True)
non_negative_float = real(0.0)
probability = real(0.0, 1.0, what="a probability")


def folder(text: str) -> str:
    """An argparse type: a non-empty path (``--out ''`` names no folder)."""
    if not str(text).strip():
        raise argparse.ArgumentTypeError("expected a folder, got an empty path")
    return text


def name_list(text: str) -> list[str]:
    """An argparse type: comma-separated names, none of them empty."""
    names = [n.strip() for n in str(text).split(",")]
    if not all(names):
        raise argparse.ArgumentTypeError(f"expected comma-separated names, got {text!r}")
    return names


def list_of(item: Callable[[str], object]) -> Callable[[str], list]:
    """An argparse type: comma-separated values, each checked by ``item``."""

    def parse(text: str) -> list:
        try:
            return [item(v) for v in str(text).split(",")]
        except argparse.ArgumentTypeError as e:
            raise argparse.ArgumentTypeError(f"{text!r}: {e}") from None

    return parse


# ------------------------------------------------------------------ help text
class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Each option's default once: appended unless the help text already states one.

    A default of ``None`` means "not set": the help text says what happens then.
    """

    def _format_action(self, action: argparse.Action) -> str:
        if not action.help and action.option_strings and not _unset(action.default):
            action = copy.copy(action)
            action.help = "default: %(default)s"
        return super()._format_action(action)

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if action.default is None:
            text = text.replace("%(default)s", "not set")
        if "%(default)" in text or "default" in text.lower() or _unset(action.default) or not action.option_strings:
            return text
        return f"{text} (default: %(default)s)"


def _unset(default) -> bool:
    """No default worth printing: None, a store_true flag's False, or suppressed."""
    return default is None or default is False or default is argparse.SUPPRESS


# ----------------------------------------------------------- dataclass options
def _base_type(hint):
    """(python type, is_tuple, is_optional) for int, float, str, bool, Optional[...] and tuple[str, ...]."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        typ, is_tuple, _ = _base_type(args[0])
        return typ, is_tuple, len(args) < len(typing.get_args(hint))
    if origin is tuple:
        return typing.get_args(hint)[0], True, False
    return hint, False, False


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _default_type(typ, optional: bool):
    """Counts and seeds are never negative; a field whose None means "not set" takes no 0 either."""
    if typ is int:
        return positive_int if optional else non_negative_int
    if typ is float:
        return positive_float if optional else finite_float
    return typ


def add_dataclass_args(parser: argparse.ArgumentParser, cls, skip: tuple[str, ...] = (), title: str | None = None,
                       types: Mapping[str, Callable[[str], object]] | None = None):
    """One option per field of ``cls`` (``--batch-size`` for ``batch_size``).

    ``types`` overrides the checked type of a field (e.g. ``{"steps": positive_int}``); without one,
    ints must be >= 0 (>= 1 for an ``Optional`` field, whose None means "not set") and floats finite.
    """
    group = parser.add_argument_group(title or cls.__name__)
    hints = typing.get_type_hints(cls)
    types = dict(types or {})
    for f in fields(cls):
        if f.name in skip:
            continue
        typ, is_tuple, optional = _base_type(hints[f.name])
        if typ not in (int, float, str, bool):
            continue
        default = f.default if f.default is not MISSING else f.default_factory()  # type: ignore[misc]
        flag = _flag(f.name)
        if typ is bool:
            action = group.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=default)
        elif is_tuple:
            action = group.add_argument(flag, dest=f.name, type=types.get(f.name, typ), nargs="+",
                                        default=list(default), metavar="X")
        else:
            action = group.add_argument(flag, dest=f.name, type=types.get(f.name, _default_type(typ, optional)),
                                        default=default, metavar=typ.__name__.upper())
        action.help = "default: %(default)s"  # after any preset's set_defaults


# --------------------------------------------------------- shared option sets
# The trainer's options (workbench.train.TrainConfig), checked while parsing.
TRAIN_TYPES: dict[str, Callable[[str], object]] = {
    "steps": positive_int, "batch_size": positive_int, "eval_every": positive_int,
    "checkpoint_every": positive_int, "warmup": non_negative_int, "data_workers": non_negative_int,
    "lr": real(0.0, 1.0, lo_open=True), "weight_decay": real(0.0, 10.0), "min_lr_frac": probability,
    "grad_clip": real(0.0, 1e6), "seed": seed, "threads": threads, "time_limit_min": positive_float,
    "out": folder,
}


def default_out(family: str, preset: str | None) -> str:
    """Where a training run goes without ``--out``: one folder per family and preset."""
    return f"runs/{family}-{preset or 'custom'}"


def add_preset_arg(parser: argparse.ArgumentParser, presets: Mapping[str, dict], argv: list[str],
                   what: str = "variant") -> str | None:
    """``--preset`` (one of ``presets``, a recipe's PRESETS); returns the preset that ``argv`` names.

    Its defaults are set by ``add_train_args``, after every option exists.
    """
    parser.add_argument("--preset", choices=sorted(presets), help=f"defaults for a shipped {what}; flags override")
    return preset_of(argv)


def add_train_args(parser: argparse.ArgumentParser, family: str, preset: str | None,
                   presets: Mapping[str, dict] | None = None) -> None:
    """The trainer's options (``--steps``, ``--out``, ``--resume``, ``--overwrite`` ...), then the
    defaults of ``preset`` (an entry of ``presets``) over every option's own."""
    from workbench.train import TrainConfig  # here: `workbench --help` builds no family's options and needs no torch

    add_dataclass_args(parser, TrainConfig, title="training", types=TRAIN_TYPES)
    parser.set_defaults(out=default_out(family, preset))
    if presets and preset in presets:
        parser.set_defaults(**presets[preset]["args"])


# ------------------------------------------------------------------ the command
def command_line(args: argparse.Namespace | None = None) -> str:
    """The command as typed (for model cards): the arguments ``apps.cli.main`` was given, else sys.argv."""
    argv = getattr(args, "argv", None) if args is not None else None
    return "workbench " + shlex.join(argv if argv is not None else sys.argv[1:])


def check_names(given: Iterable[str], allowed: Iterable[str], flag: str) -> None:
    """Raise ``ValueError`` naming the flag and the allowed values for names not in ``allowed``."""
    allowed = list(allowed)
    bad = [g for g in given if g not in allowed]
    if bad:
        raise ValueError(f"{flag}: unknown {', '.join(map(repr, bad))}; allowed: {', '.join(allowed)}")
