"""Stimulus distributions over grating orientation (the gain circuit's adaptation task).

Orientation is 180-degree periodic; this module writes it in degrees in [-90, 90), as the
V1 adaptation experiments do (adapter at 0). Two kinds of distribution:

* ``uniform``: every orientation equally likely;
* ``biased``: a uniform background plus an over-represented *adapter*: with probability
  ``weight`` the orientation is drawn near ``adapter`` (exactly at it when ``width=0``,
  else from a von Mises bump of standard deviation about ``width`` degrees), otherwise
  uniformly.

Text format, one line, ``kind`` then ``key=value`` pairs (the formatter writes every key;
the parser accepts any subset and fills the defaults)::

    uniform
    biased adapter=0 weight=0.5 width=0

``parse`` and ``format_distribution`` round-trip; malformed text raises ``ValueError``
naming the character position and the rule broken.

The exact side of the task is ``density(dist, grid)``: the probability of each orientation of a
grid (a point-mass adapter sits on the grid point nearest to it), computed in closed form
with no sampling and sharing no code with any model. Expectations over p(s) in the gain
model are sums over this grid.

>>> dist = parse("biased adapter=0 weight=0.5 width=0")
>>> stimuli = sample(dist, 1000, seed=0)       # list[Stimulus] with metadata
>>> p = density(dist, grid(180))               # [180] probabilities, sum 1
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, fields

import numpy as np

from .text import show

KINDS = ("uniform", "biased")
PERIOD = 180.0  # orientation is periodic with 180 degrees
MIN_WIDTH = 0.01  # degrees; narrower bumps are point masses (width=0)


def wrap(theta):
    """Orientation(s) in degrees mapped into [-90, 90)."""
    return (np.asarray(theta, dtype=float) + 90.0) % PERIOD - 90.0


def circular_distance(a, b):
    """Signed orientation difference a - b in degrees, in [-90, 90)."""
    return wrap(np.asarray(a, dtype=float) - np.asarray(b, dtype=float))


def grid(k: int) -> np.ndarray:
    """``k`` evenly spaced orientations -90, -90 + 180/k, ..., in degrees: [k]."""
    if k < 2:
        raise ValueError(f"grid needs at least 2 orientations; got k={k}")
    return -90.0 + PERIOD * np.arange(k) / k


# ------------------------------------------------------------- distributions
@dataclass(frozen=True)
class OrientationDistribution:
    kind: str = "uniform"
    adapter: float = 0.0  # degrees, in [-90, 90); biased only
    weight: float = 0.0  # probability of drawing near the adapter; biased only, in (0, 1)
    width: float = 0.0  # spread of the adapter bump in degrees: 0 (a point mass) or 0.01 .. 45

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"kind={self.kind!r}; allowed: {', '.join(KINDS)}")
        for name in ("adapter", "weight", "width"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"{name}={value!r} must be a finite number")
            object.__setattr__(self, name, float(value))
        if self.kind == "uniform":
            if (self.adapter, self.weight, self.width) != (0.0, 0.0, 0.0):
                raise ValueError("a uniform distribution takes no adapter, weight or width")
            return
        if not -90.0 <= self.adapter < 90.0:
            raise ValueError(f"adapter={self.adapter} must be in [-90, 90) degrees (orientation is 180-periodic)")
        if not 0.0 < self.weight < 1.0:
            raise ValueError(f"weight={self.weight} must be in (0, 1): the adapter's extra probability")
        if not (self.width == 0.0 or MIN_WIDTH <= self.width < 45.0):
            raise ValueError(f"width={self.width} must be 0 (a point mass) or in [{MIN_WIDTH}, 45) degrees")

    @property
    def kappa(self) -> float:
        """Von Mises concentration of the adapter bump on the doubled angle (inf = point mass)."""
        return math.inf if self.width == 0 else 1.0 / (2.0 * math.radians(self.width)) ** 2


UNIFORM = OrientationDistribution()


def biased(adapter: float = 0.0, weight: float = 0.5, width: float = 0.0) -> OrientationDistribution:
    return OrientationDistribution("biased", adapter, weight, width)


def density(dist: OrientationDistribution, orientations: np.ndarray) -> np.ndarray:
    """Probability of each orientation of an evenly spaced grid (``grid(k)``): [k], sums to 1.

    The uniform part gives every grid point 1/k; the adapter bump is a von Mises on the
    doubled angle normalised over the grid, or, for ``width=0``, all its mass on the grid
    point nearest to the adapter.
    """
    s = np.asarray(orientations, dtype=float)
    k = len(s)
    p = np.full(k, 1.0 / k)
    if dist.kind == "uniform":
        return p
    if dist.width == 0:
        bump = np.zeros(k)
        bump[int(np.argmin(np.abs(circular_distance(s, dist.adapter))))] = 1.0
    else:
        # log-domain normalisation: a bump much narrower than the grid spacing stays finite
        # and puts its mass on the grid points nearest to the adapter
        logit = dist.kappa * np.cos(np.deg2rad(2.0 * (s - dist.adapter)))
        bump = np.exp(logit - logit.max())
        bump /= bump.sum()
    return (1.0 - dist.weight) * p + dist.weight * bump


# ------------------------------------------------------------------ sampling
@dataclass(frozen=True)
class Stimulus:
    orientation: float  # degrees in [-90, 90)
    from_adapter: bool  # drawn from the adapter component (False for uniform draws)
    distance: float  # signed distance to the adapter (orientation - adapter), degrees; 0 for uniform p


def sample(dist: OrientationDistribution, n: int, seed: int | np.random.Generator) -> list[Stimulus]:
    """``n`` stimuli drawn from ``dist``; the same seed gives the same stimuli."""
    if n < 0:
        raise ValueError(f"n={n} must be >= 0")
    rng = np.random.default_rng(seed)
    from_adapter = rng.random(n) < (dist.weight if dist.kind == "biased" else 0.0)
    theta = rng.uniform(-90.0, 90.0, size=n)
    if from_adapter.any():
        if dist.width == 0:
            bump = np.full(int(from_adapter.sum()), dist.adapter)
        else:  # von Mises on the doubled angle, halved back to orientation
            bump = dist.adapter + np.rad2deg(rng.vonmises(0.0, dist.kappa, size=int(from_adapter.sum()))) / 2.0
        theta[from_adapter] = bump
    theta = wrap(theta)
    ref = dist.adapter if dist.kind == "biased" else None
    return [
        Stimulus(float(t), bool(a), float(circular_distance(t, ref)) if ref is not None else 0.0)
        for t, a in zip(theta, from_adapter)
    ]


# --------------------------------------------------------------- text format
_KEYS = {"uniform": (), "biased": ("adapter", "weight", "width")}


def _num(x: float) -> str:
    return repr(float(x)).removesuffix(".0") if float(x) != 0 else "0"


def format_distribution(dist: OrientationDistribution) -> str:
    """One line: ``uniform`` or ``biased adapter=0 weight=0.5 width=0``."""
    return " ".join([dist.kind] + [f"{k}={_num(getattr(dist, k))}" for k in _KEYS[dist.kind]])


_TOKEN = re.compile(r"\S+")
_PAIR = re.compile(r"(?P<key>[A-Za-z_]+)=(?P<value>.*)", re.DOTALL)
# a decimal number written with ASCII digits (``\d`` would let other scripts' digits in)
_FLOAT = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_NUMBER = "write a finite decimal number with 0-9, e.g. -12.5 or 0.25 (no nan or inf)"



def _value(key: str, value: str, at: int) -> float:
    """The number of ``key=value`` (the value starts at character ``at``)."""
    if not _FLOAT.fullmatch(value):
        raise ValueError(f"character {at}: {key}={show(value)} is not a number; {_NUMBER}")
    x = float(value)
    if not math.isfinite(x):
        raise ValueError(f"character {at}: {key}={show(value)} overflows to infinity; {_NUMBER}")
    return x


def parse(text: str) -> OrientationDistribution:
    """Parse the text format; ``ValueError`` names the character position and the rule broken.

    Rules: tokens are separated by whitespace; the first is the kind (``uniform`` or
    ``biased``), each further one is ``key=value`` with a key of that kind, given at most
    once, and a finite decimal value written with the ASCII digits 0-9; the values must
    satisfy ``OrientationDistribution`` (missing keys take its defaults, weight 0.5 for
    ``biased``). Linear time: reading stops at the first broken rule.
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be a str; got {type(text).__name__}")
    tokens = _TOKEN.finditer(text)  # lazy: a long text is read only up to its first error
    first = next(tokens, None)
    if first is None:
        raise ValueError("character 0: empty distribution; expected 'uniform' or 'biased adapter=0 weight=0.5 width=0'")
    kind, at = first.group(), first.start()
    if kind not in KINDS:
        raise ValueError(f"character {at}: unknown distribution kind {show(kind)}; allowed: {', '.join(KINDS)}")
    values: dict[str, float] = {}
    where: dict[str, int] = {}
    for t in tokens:
        tok, at = t.group(), t.start()
        m = _PAIR.fullmatch(tok)
        if not m:
            allowed = ", ".join(_KEYS[kind]) or "none"
            raise ValueError(f"character {at}: expected key=value, got {show(tok)}; allowed keys: {allowed}")
        key, value = m.group("key"), m.group("value")
        if key not in _KEYS[kind]:
            allowed = ", ".join(_KEYS[kind]) or "none"
            raise ValueError(f"character {at}: unknown key {show(key)} for {kind!r}; allowed keys: {allowed}")
        if key in values:
            raise ValueError(f"character {at}: key {key!r} given twice (first at character {where[key]})")
        values[key], where[key] = _value(key, value, at + len(key) + 1), at
    if kind == "biased":
        values.setdefault("weight", 0.5)
    try:
        return OrientationDistribution(kind, **values)
    except ValueError as e:  # a rule on the values: point at the offending key
        name = next((f.name for f in fields(OrientationDistribution) if str(e).startswith(f.name + "=")), None)
        raise ValueError(f"character {where.get(name, 0)}: {e}") from None
