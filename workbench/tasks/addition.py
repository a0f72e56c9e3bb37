"""Running sums of decimal numbers (Graves 2016, section 3.3).

A problem is a sequence of L ~ U{min_numbers..max_numbers} numbers, one per input step;
each has d ~ U{1..max_digits} digits (no leading zeros, so d is the number's length).
The target at every step is the sum of the numbers so far. Models see a number as
``max_digits`` one-hot groups of 10 (least significant digit first; groups beyond the
number's length are all zero) and answer with ``out_digits`` classes per step: a digit
0-9, or ``BLANK`` (10) for places beyond the sum's length. Difficulty: the number of
digits of the number added at a step, and the step's position.

Text format: the numbers separated by ``+``::

    512 + 7 + 86          # running sums 512, 519, 605

``parse`` names the character position of a malformed number (a non-digit, a leading
zero, too many digits) or of a missing one, and rejects more numbers than allowed. The
solver (``solve``) adds Python integers and shares no code with any model.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from .text import show

BLANK = 10  # output class for places beyond the sum's length
N_CLASSES = 11


@dataclass(frozen=True)
class AdditionConfig:
    max_digits: int = 3  # digits per number (the paper uses 5)
    min_numbers: int = 1
    max_numbers: int = 5  # numbers per sequence (input steps)

    def __post_init__(self):
        if not 1 <= self.max_digits <= 9:
            raise ValueError(f"max_digits={self.max_digits} is out of range; allowed 1..9")
        if not 1 <= self.min_numbers <= self.max_numbers <= 64:
            raise ValueError(
                f"need 1 <= min_numbers <= max_numbers <= 64; got {self.min_numbers}, {self.max_numbers}"
            )

    @property
    def out_digits(self) -> int:
        """Output places: enough for the largest possible sum."""
        return len(str(self.max_numbers * (10**self.max_digits - 1)))

    @property
    def input_size(self) -> int:
        return 10 * self.max_digits


@dataclass(frozen=True)
class AdditionProblem:
    numbers: tuple[int, ...]
    sums: tuple[int, ...]  # running sums (the targets, one per step)
    digits: tuple[int, ...]  # digits of each number (difficulty per step)


def solve(numbers: Sequence[int]) -> tuple[int, ...]:
    """Running sums: ``[512, 7, 86]`` -> ``(512, 519, 605)``."""
    out, total = [], 0
    for x in numbers:
        total += int(x)
        out.append(total)
    return tuple(out)


def make_problem(numbers: Sequence[int], config: AdditionConfig | None = None) -> AdditionProblem:
    numbers = tuple(int(x) for x in numbers)
    if not numbers:
        raise ValueError("a problem needs at least one number")
    if config is not None:
        check_numbers(numbers, config)
    return AdditionProblem(numbers, solve(numbers), tuple(len(str(x)) for x in numbers))


def check_numbers(numbers: Sequence[int], config: AdditionConfig) -> None:
    """Raise ``ValueError`` unless every number fits the config (and their count does)."""
    if not config.min_numbers <= len(numbers) <= config.max_numbers:
        raise ValueError(f"{len(numbers)} numbers; allowed {config.min_numbers}..{config.max_numbers}")
    for i, x in enumerate(numbers):
        if not 0 <= x < 10**config.max_digits:
            raise ValueError(f"number {i} is {x}; allowed 0..{10**config.max_digits - 1} "
                             f"(at most {config.max_digits} digits)")


def sample(config: AdditionConfig, n: int, seed: int | Sequence[int] | np.random.Generator) -> list[AdditionProblem]:
    """``n`` random problems; the same seed gives the same problems."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        length = int(rng.integers(config.min_numbers, config.max_numbers + 1))
        digits = rng.integers(1, config.max_digits + 1, size=length)
        lo = np.where(digits == 1, 0, 10 ** (digits - 1))
        numbers = rng.integers(lo, 10**digits)
        out.append(make_problem(numbers.tolist()))
    return out


# ----------------------------------------------------------------- text format
def format_problem(problem: AdditionProblem) -> str:
    return " + ".join(str(x) for x in problem.numbers)


# Token kinds; ``bad`` takes any other single character, so the matches tile the text and
# reading is linear (no backtracking).
_TOKEN = re.compile(r"(?P<space>[ \t\r\n]+)|(?P<num>[0-9]+)|(?P<plus>\+)|(?P<bad>.)", re.DOTALL)
_FORMAT = "numbers are written with 0-9 and separated by '+'"



def _not_a_digit(ch: str, pos: int) -> ValueError:
    what = "is a non-ASCII digit" if ch.isdigit() else "is not a digit"
    return ValueError(f"character {pos}: {ch!r} {what}; {_FORMAT}")


def _number(tok: str, pos: int, config: AdditionConfig) -> int:
    """A number token's value; the length check comes first (no huge conversions)."""
    if len(tok) > 1 and tok[0] == "0":
        raise ValueError(f"character {pos}: {show(tok)} has a leading zero; write numbers without one")
    if len(tok) > config.max_digits:
        raise ValueError(f"character {pos}: {show(tok)} has {len(tok)} digits; at most {config.max_digits} allowed")
    return int(tok)


def parse(text: str, config: AdditionConfig | None = None) -> AdditionProblem:
    """Parse ``"512 + 7 + 86"``; ``config`` (default ``AdditionConfig()``) bounds the input.

    Rules: numbers separated by ``+``; a number is 1..max_digits ASCII digits 0-9 with no
    leading zero (``0`` itself is fine); spaces, tabs and newlines around numbers are
    ignored but not inside one; min_numbers..max_numbers numbers. A broken rule raises
    ``ValueError`` naming the character offset, the rule and what is allowed. Linear time:
    reading stops at the first broken rule.
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be a str; got {type(text).__name__}")
    config = config or AdditionConfig()
    numbers: list[int] = []
    want_number = True  # else a '+' or the end is due
    for m in _TOKEN.finditer(text):
        kind, pos = m.lastgroup, m.start()
        if kind == "space":
            continue
        if kind == "bad":
            raise _not_a_digit(m.group(), pos)
        if kind == "plus" and want_number:
            raise ValueError(f"character {pos}: missing number before '+'; expected digits like '512 + 7'")
        if kind == "num" and not want_number:
            raise ValueError(f"character {pos}: whitespace inside a number (or a missing '+' before "
                             f"{show(m.group())}); {_FORMAT}")
        if kind == "num":
            numbers.append(_number(m.group(), pos, config))
            if len(numbers) > config.max_numbers:
                raise ValueError(f"character {pos}: more than {config.max_numbers} numbers; "
                                 f"allowed {config.min_numbers}..{config.max_numbers}")
        want_number = kind == "plus"
    if want_number:
        where = " at the end" if numbers else ""
        raise ValueError(f"character {len(text)}: missing number{where}; expected digits like '512 + 7'")
    if len(numbers) < config.min_numbers:
        raise ValueError(f"character {len(text)}: {len(numbers)} numbers; at least {config.min_numbers} needed")
    return make_problem(numbers)


# ------------------------------------------------------------ model encoding
def digits_of(x: int, places: int) -> list[int]:
    """Least significant digit first, ``BLANK`` beyond the number's length: 605 -> [5, 0, 6, 10]."""
    s = str(x)[::-1]
    if len(s) > places:
        raise ValueError(f"{x} has more than {places} digits")
    return [int(c) for c in s] + [BLANK] * (places - len(s))


def encode(problems: Sequence[AdditionProblem], config: AdditionConfig) -> dict[str, np.ndarray]:
    """Arrays for a batch, padded to the longest sequence.

    Returns ``inputs`` [B, T, 10 * max_digits] float32 (one-hot digit groups),
    ``targets`` [B, T, out_digits] int64 (classes 0..10), ``mask`` [B, T] bool (real
    steps), ``digits`` [B, T] int64 (digits of the number at each step, 0 on padding).
    """
    B, T, D, K = len(problems), max(len(p.numbers) for p in problems), config.max_digits, config.out_digits
    inputs = np.zeros((B, T, D, 10), dtype=np.float32)
    targets = np.full((B, T, K), BLANK, dtype=np.int64)
    mask = np.zeros((B, T), dtype=bool)
    digits = np.zeros((B, T), dtype=np.int64)
    for i, p in enumerate(problems):
        check_numbers(p.numbers, config)
        for t, (x, s) in enumerate(zip(p.numbers, p.sums)):
            for place, d in enumerate(digits_of(x, D)):
                if d != BLANK:
                    inputs[i, t, place, d] = 1.0
            targets[i, t] = digits_of(s, K)
            mask[i, t] = True
            digits[i, t] = len(str(x))
    return {"inputs": inputs.reshape(B, T, D * 10), "targets": targets, "mask": mask, "digits": digits}


def decode_sum(classes: Sequence[int]) -> int | None:
    """Output classes (least significant first) -> the number, or None if malformed.

    Well formed: digits, then only ``BLANK`` places; no leading zero unless the sum is 0.
    """
    classes = [int(c) for c in classes]
    n = next((i for i, c in enumerate(classes) if c == BLANK), len(classes))
    if n == 0 or any(c != BLANK for c in classes[n:]) or (n > 1 and classes[n - 1] == 0):
        return None
    return int("".join(str(c) for c in reversed(classes[:n])))
