"""Command-line options generated from config dataclasses, so every field is settable."""

from __future__ import annotations

import argparse
import shlex
import sys
import typing
from dataclasses import MISSING, fields


def _base_type(hint):
    """(python type, is_tuple) for int, float, str, bool, Optional[...] and tuple[str, ...]."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        return _base_type(args[0])
    if origin is tuple:
        return typing.get_args(hint)[0], True
    return hint, False


def add_dataclass_args(parser: argparse.ArgumentParser, cls, skip: tuple[str, ...] = (), title: str | None = None):
    group = parser.add_argument_group(title or cls.__name__)
    hints = typing.get_type_hints(cls)
    for f in fields(cls):
        if f.name in skip:
            continue
        typ, is_tuple = _base_type(hints[f.name])
        if typ not in (int, float, str, bool):
            continue
        default = f.default if f.default is not MISSING else f.default_factory()  # type: ignore[misc]
        flag = "--" + f.name.replace("_", "-")
        if typ is bool:
            group.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=default)
        elif is_tuple:
            group.add_argument(flag, dest=f.name, type=str, nargs="+", default=list(default), metavar="X")
        else:
            group.add_argument(flag, dest=f.name, type=typ, default=default, metavar=typ.__name__.upper())


def from_args(cls, args: argparse.Namespace, skip: tuple[str, ...] = (), **overrides):
    values = {f.name: getattr(args, f.name) for f in fields(cls) if f.name not in skip and hasattr(args, f.name)}
    values.update(overrides)
    return cls(**values)


def command_line() -> str:
    """The command as typed (for model cards)."""
    return "workbench " + " ".join(shlex.quote(a) for a in sys.argv[1:])
