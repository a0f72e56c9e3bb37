"""Trajectories of three dynamical systems with random physical parameters (WARP's tasks).

Every sample is generated offline by our own fixed-step fourth-order Runge-Kutta
integrator (``integrate``, ``substeps`` RK4 steps per observed step) and carries its
physical parameters and initial state as metadata, for probing:

* ``sine``: x(tau) = sin(2 pi f tau + phi) on tau in [0, 1], integrated as the harmonic
  oscillator x'' = -(2 pi f)^2 x. Parameters: phase ``phi``, frequency ``f``. State (x,);
  the velocity is integrated but not observed.
* ``msd``: mass-spring-damper m x'' + c x' + k x = 0. Parameters ``m``, ``c``, ``k``;
  observed state (x, v); random initial position and velocity.
* ``lv``: Lotka-Volterra predator-prey, prey' = alpha prey - beta prey pred,
  pred' = delta prey pred - gamma pred. Parameters ``alpha``, ``beta``, ``gamma``,
  ``delta``; observed state (prey, pred).

The forecasting protocol of the workbench: the first ``context`` states are given, the
model predicts the remaining ``length - context`` states autoregressively, and the score
is the mean squared error over those (``forecast_mse``).

Text format (one trajectory; floats are written with ``repr`` so text round-trips
exactly)::

    system msd
    dt 0.015625
    params m=1.02 c=0.31 k=4.7
    states x v
    1.1 -0.3
    1.09 -0.42
    ...

The exact solver ``solve`` shares no code with the integrator or any model: closed forms
for ``sine`` and ``msd``, and scipy's DOP853 at tight tolerances for ``lv`` (which has no
closed form).

>>> cfg = DynamicsConfig(system="msd")
>>> trajs = sample(cfg, 4, seed=0)
>>> trajs[0].params, trajs[0].states.shape          # ({'m': ..., 'c': ..., 'k': ...}, (128, 2))
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np

from .text import show, trim


# ------------------------------------------------------------------- systems
@dataclass(frozen=True)
class System:
    """A family of ODEs: names, parameter ranges and defaults of the protocol."""

    name: str
    state_names: tuple[str, ...]  # observed state
    param_names: tuple[str, ...]
    param_ranges: tuple[tuple[float, float], ...]
    length: int  # default number of observed steps T
    context: int  # default prefix given to a forecaster
    dt: float  # default time between observed steps
    description: str


SYSTEMS: dict[str, System] = {
    "sine": System("sine", ("x",), ("phi", "f"), ((0.0, 2 * math.pi), (1.0, 2.0)), length=64, context=16,
                   dt=1 / 63, description="sin(2 pi f tau + phi), tau in [0, 1]"),
    "msd": System("msd", ("x", "v"), ("m", "c", "k"), ((0.5, 1.5), (0.05, 0.5), (2.0, 8.0)), length=128,
                  context=32, dt=1 / 64, description="m x'' + c x' + k x = 0"),
    "lv": System("lv", ("prey", "pred"), ("alpha", "beta", "gamma", "delta"),
                 ((0.8, 1.6), (0.8, 1.6), (0.8, 1.6), (0.8, 1.6)), length=128, context=32, dt=0.1,
                 description="prey' = alpha prey - beta prey pred; pred' = delta prey pred - gamma pred"),
}

# initial states: msd position |x0| in [0.5, 1.5] with a random sign, v0 in [-1, 1];
# lv (prey, pred) in [0.5, 1.5] each; sine starts on its curve.
_MSD_X0, _MSD_V0, _LV_0 = (0.5, 1.5), (-1.0, 1.0), (0.5, 1.5)


@dataclass(frozen=True)
class DynamicsConfig:
    """Which system, how long, and how it is observed. ``None`` = the system's default."""

    system: str = "msd"
    length: Optional[int] = None  # observed steps T
    context: Optional[int] = None  # steps given before forecasting
    dt: Optional[float] = None  # time between observed steps
    substeps: int = 8  # RK4 steps per observed step
    noise: float = 0.0  # std of Gaussian observation noise (metadata stays exact)

    def __post_init__(self):
        if self.system not in SYSTEMS:
            raise ValueError(f"system={self.system!r}; allowed: {tuple(SYSTEMS)}")
        spec = SYSTEMS[self.system]
        for name in ("length", "context", "dt"):
            if getattr(self, name) is None:
                object.__setattr__(self, name, getattr(spec, name))
        if self.length < 2:
            raise ValueError(f"length={self.length} must be >= 2")
        if not 1 <= self.context < self.length:
            raise ValueError(f"context={self.context} must be in 1..length-1={self.length - 1}")
        if not (self.dt > 0 and math.isfinite(self.dt)):
            raise ValueError(f"dt={self.dt} must be a positive number")
        if self.substeps < 1:
            raise ValueError(f"substeps={self.substeps} must be >= 1")
        if self.noise < 0:
            raise ValueError(f"noise={self.noise} must be >= 0")

    @property
    def spec(self) -> System:
        return SYSTEMS[self.system]

    @property
    def d_state(self) -> int:
        return len(self.spec.state_names)


@dataclass(eq=False)
class Trajectory:
    """One sampled trajectory with its physical parameters (exact, noise-free)."""

    system: str
    params: dict[str, float]
    dt: float
    states: np.ndarray  # [T, d] observed states (with noise, if any)

    @property
    def times(self) -> np.ndarray:
        return np.arange(len(self.states)) * self.dt

    @property
    def initial(self) -> np.ndarray:
        return self.states[0]

    def __eq__(self, other) -> bool:
        return (isinstance(other, Trajectory) and self.system == other.system and self.params == other.params
                and self.dt == other.dt and np.array_equal(self.states, other.states))


# ---------------------------------------------------------------- integrator
def _rhs(system: str, p: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    """Vectorised right-hand side for n systems at once: state [n, k] -> derivative [n, k]."""
    if system == "sine":  # integrated in units of tau; state (x, dx/dtau)
        w2 = (2 * math.pi * p[:, 1]) ** 2
        return lambda s: np.stack([s[:, 1], -w2 * s[:, 0]], axis=1)
    if system == "msd":
        m, c, k = p[:, 0], p[:, 1], p[:, 2]
        return lambda s: np.stack([s[:, 1], -(c * s[:, 1] + k * s[:, 0]) / m], axis=1)
    if system == "lv":
        a, b, g, d = p.T
        return lambda s: np.stack([a * s[:, 0] - b * s[:, 0] * s[:, 1], d * s[:, 0] * s[:, 1] - g * s[:, 1]], axis=1)
    raise ValueError(f"unknown system {system!r}; allowed: {tuple(SYSTEMS)}")


def integrate(system: str, params: np.ndarray, state0: np.ndarray, dt: float, steps: int,
              substeps: int = 8) -> np.ndarray:
    """Fixed-step RK4 for n systems at once.

    Args:
        params: [n, p] physical parameters (in ``SYSTEMS[system].param_names`` order).
        state0: [n, k] full initial state (for ``sine``: x and dx/dtau).
        dt: time between returned states; ``substeps`` RK4 steps are taken in between.
    Returns:
        [n, steps, k] states at times 0, dt, ..., (steps - 1) dt.
    """
    f = _rhs(system, np.asarray(params, dtype=np.float64))
    s = np.asarray(state0, dtype=np.float64).copy()
    h = dt / substeps
    out = np.empty((s.shape[0], steps, s.shape[1]))
    out[:, 0] = s
    for i in range(1, steps):
        for _ in range(substeps):
            k1 = f(s)
            k2 = f(s + 0.5 * h * k1)
            k3 = f(s + 0.5 * h * k2)
            k4 = f(s + h * k3)
            s = s + (h / 6) * (k1 + 2 * k2 + 2 * k3 + k4)
        out[:, i] = s
    return out


# ------------------------------------------------------------------ sampling
def sample(config: DynamicsConfig, n: int, seed: int | np.random.Generator) -> list[Trajectory]:
    """``n`` trajectories with parameters uniform in the system's ranges; same seed, same data."""
    rng = np.random.default_rng(seed)
    spec = config.spec
    lo, hi = np.array(spec.param_ranges).T
    params = rng.uniform(lo, hi, size=(n, len(lo)))
    if config.system == "sine":
        phi, f = params[:, 0], params[:, 1]
        state0 = np.stack([np.sin(phi), 2 * math.pi * f * np.cos(phi)], axis=1)
    elif config.system == "msd":
        x0 = rng.uniform(*_MSD_X0, size=n) * rng.choice([-1.0, 1.0], size=n)
        state0 = np.stack([x0, rng.uniform(*_MSD_V0, size=n)], axis=1)
    else:
        state0 = rng.uniform(*_LV_0, size=(n, 2))
    states = integrate(config.system, params, state0, config.dt, config.length, config.substeps)
    states = states[..., : config.d_state]
    if config.noise:
        states = states + config.noise * rng.standard_normal(states.shape)
    return [Trajectory(config.system, {k: float(v) for k, v in zip(spec.param_names, row)}, float(config.dt),
                       states[i]) for i, row in enumerate(params)]


def stack(trajectories: list[Trajectory]) -> np.ndarray:
    """States of equally long trajectories: [n, T, d]."""
    if not trajectories:
        raise ValueError("no trajectories to stack")
    lengths = {len(t.states) for t in trajectories}
    if len(lengths) > 1:
        raise ValueError(f"trajectories have different lengths {sorted(lengths)}; cannot stack")
    return np.stack([t.states for t in trajectories])


def param_array(trajectories: list[Trajectory]) -> np.ndarray:
    """Physical parameters: [n, p] in ``SYSTEMS[system].param_names`` order."""
    names = SYSTEMS[trajectories[0].system].param_names
    return np.array([[t.params[k] for k in names] for t in trajectories])


def forecast_mse(truth: np.ndarray, forecast: np.ndarray, context: int) -> float:
    """Mean squared error over the forecast part: truth [n, T, d], forecast [n, T - context, d]."""
    future = truth[:, context:]
    if forecast.shape != future.shape:
        raise ValueError(f"forecast has shape {forecast.shape}; expected {future.shape} (steps {context}..T-1)")
    return float(np.mean((future - forecast) ** 2))


# -------------------------------------------------------------- exact solver
def solve(system: str, params: dict[str, float], initial, times: np.ndarray) -> np.ndarray:
    """The exact observed trajectory at ``times`` (from 0), independent of ``integrate``.

    ``initial`` is the observed initial state, except for ``sine`` where the parameters
    alone fix the curve. Returns [len(times), d].
    """
    t = np.asarray(times, dtype=np.float64)
    if system == "sine":
        tau = t  # sine trajectories use tau as their time
        return np.sin(2 * math.pi * params["f"] * tau + params["phi"])[:, None]
    if system == "msd":
        # characteristic roots of m r^2 + c r + k = 0; x = a e^{r1 t} + b e^{r2 t}
        m, c, k = params["m"], params["c"], params["k"]
        disc = complex(c * c - 4 * m * k) ** 0.5
        r1, r2 = (-c + disc) / (2 * m), (-c - disc) / (2 * m)
        x0, v0 = float(initial[0]), float(initial[1])
        if abs(r1 - r2) < 1e-12:  # critically damped
            r = r1
            x = (x0 + (v0 - r * x0) * t) * np.exp(r * t)
            v = (v0 + r * (v0 - r * x0) * t) * np.exp(r * t)
        else:
            b = (v0 - r1 * x0) / (r2 - r1)
            a = x0 - b
            x = a * np.exp(r1 * t) + b * np.exp(r2 * t)
            v = a * r1 * np.exp(r1 * t) + b * r2 * np.exp(r2 * t)
        return np.stack([x.real, v.real], axis=1)
    if system == "lv":
        from scipy.integrate import solve_ivp

        a, b, g, d = (params[k] for k in ("alpha", "beta", "gamma", "delta"))
        sol = solve_ivp(lambda _, y: [a * y[0] - b * y[0] * y[1], d * y[0] * y[1] - g * y[1]],
                        (0.0, float(t[-1])), [float(initial[0]), float(initial[1])], method="DOP853",
                        t_eval=t, rtol=1e-12, atol=1e-12)
        return sol.y.T
    raise ValueError(f"unknown system {system!r}; allowed: {tuple(SYSTEMS)}")


def lv_invariant(states: np.ndarray, params: dict[str, float]) -> np.ndarray:
    """The conserved quantity of Lotka-Volterra: delta x - gamma ln x + beta y - alpha ln y."""
    x, y = states[..., 0], states[..., 1]
    return params["delta"] * x - params["gamma"] * np.log(x) + params["beta"] * y - params["alpha"] * np.log(y)


# ------------------------------------------------------------------ text format
def format_trajectory(traj: Trajectory) -> str:
    spec = SYSTEMS[traj.system]
    lines = [f"system {traj.system}", f"dt {traj.dt!r}",
             "params " + " ".join(f"{k}={traj.params[k]!r}" for k in spec.param_names),
             "states " + " ".join(spec.state_names)]
    lines += [" ".join(repr(float(v)) for v in row) for row in traj.states]
    return "\n".join(lines) + "\n"


_HEADER = ("system", "dt", "params", "states")
# a finite decimal number as ``repr`` writes it: ASCII digits only, no nan/inf spellings
_NUM = r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?"
_FLOAT = re.compile(_NUM)
# a state row of d values; a number has no space, so matching is linear (no backtracking
# across values)
_ROW = {d: re.compile(rf"{_NUM}(?: {_NUM}){{{d - 1}}}") for d in {len(s.state_names) for s in SYSTEMS.values()}}
_RULE = "allowed: a finite decimal number written with 0-9, e.g. -1.25 or 3e-05 (no nan or inf)"



def _not_finite(text: str, line: int, col: int) -> ValueError:
    note = next((f" (non-ASCII digit {c!r})" for c in text[:64] if c.isdigit() and not c.isascii()), "")
    if _FLOAT.fullmatch(text):
        note = " (it overflows to infinity)"
    return ValueError(f"line {line}, column {col}: {show(text)} is not a finite number{note}; {_RULE}")


def _number(text: str, line: int, col: int) -> float:
    if not _FLOAT.fullmatch(text):
        raise _not_finite(text, line, col)
    value = float(text)
    if not math.isfinite(value):
        raise _not_finite(text, line, col)
    return value



def _value(line: str, key: str) -> tuple[str, int]:
    """The value of a header line ``key value`` without surrounding whitespace, and its column."""
    rest = line[len(key) + 1:]
    return rest.strip(), len(key) + 2 + len(rest) - len(rest.lstrip())


def _floats(parts: list[str]) -> tuple[np.ndarray, int | None]:
    """Well-formed numbers -> (floats, index of the first that overflows or None)."""
    values = np.fromiter(map(float, parts), dtype=np.float64, count=len(parts))
    bad = np.flatnonzero(~np.isfinite(values))
    return values, (int(bad[0]) if len(bad) else None)


def _row_error(row: str, line: int, names: list[str]) -> ValueError:
    """Why a state row is malformed: a bad value among its first d, else its count."""
    d = len(names)
    parts, col = row.split(" ", d), 1  # d + 1 parts at most: the rest is never read
    for part in parts[:d]:
        _number(part, line, col)
        col += len(part) + 1
    return ValueError(f"line {line}, column 1: {row.count(' ') + 1} values; expected {d} ({' '.join(names)}) "
                      "separated by single spaces")


def _states(block: str, names: list[str]) -> np.ndarray:
    """The state rows (line 5 on, trailing blank lines removed) -> [T, d]; errors in text order."""
    d = len(names)
    rows = block.split("\n")
    bad = next((i for i, m in enumerate(map(_ROW[d].fullmatch, rows)) if m is None), None)
    values, k = _floats((block if bad is None else "\n".join(rows[:bad])).split())
    if k is not None:  # a well-formed value that overflows, e.g. 1e999: its row names it
        raise _row_error(rows[k // d], 5 + k // d, names)
    if bad is not None:
        raise _row_error(rows[bad], 5 + bad, names)
    return values.reshape(-1, d)


def parse_trajectory(text: str, max_length: int | None = None) -> Trajectory:
    """Parse the text format; ``ValueError`` names the line, column and the rule broken.

    Rules: lines end with ``\\n`` (or ``\\r\\n``); trailing blank lines are ignored. Lines 1-4 are
    ``system <name>`` (one of ``SYSTEMS``), ``dt <number>`` (positive), ``params
    name=value ...`` (every parameter of the system once, separated by spaces) and
    ``states <names>`` (the system's state names in order); whitespace around a header
    value is ignored. Then at least one state row (at most ``max_length`` when given):
    exactly one value per state name, separated by single spaces. Every number is a
    finite decimal written with the ASCII digits 0-9 (``nan``, ``inf``, non-ASCII digits
    and values that overflow, such as ``1e999``, are rejected). Linear time in the text.
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be a str; got {type(text).__name__}")
    # CRLF line ends: dropping the CR leaves every line number and column unchanged
    body = trim(text.replace("\r\n", "\n"))
    lines = body.split("\n", 4) if body else []
    if len(lines) < 5:
        raise ValueError(f"line {len(lines) + 1}, column 1: too short; expected the header lines "
                         f"{', '.join(_HEADER)} and at least one state row")
    for i, key in enumerate(_HEADER):
        word = lines[i].split(" ", 1)[0]
        if word != key:
            raise ValueError(f"line {i + 1}, column 1: expected '{key} ...', found {show(word)}")
    system, col = _value(lines[0], "system")
    if system not in SYSTEMS:
        raise ValueError(f"line 1, column {col}: unknown system {show(system)}; allowed: {', '.join(SYSTEMS)}")
    spec = SYSTEMS[system]
    dt_text, dt_col = _value(lines[1], "dt")
    dt = _number(dt_text, 2, dt_col)
    if not dt > 0:
        raise ValueError(f"line 2, column {dt_col}: dt={dt} must be positive")
    params = _params(lines[2], spec)
    names = lines[3].split()[1:]
    if tuple(names) != spec.state_names:
        raise ValueError(f"line 4, column 8: state columns {show(' '.join(names))}; "
                         f"{system} has {' '.join(spec.state_names)}")
    states = _states(lines[4], names)
    if max_length is not None and len(states) > max_length:
        raise ValueError(f"line {4 + max_length + 1}, column 1: {len(states)} states; at most {max_length} allowed")
    return Trajectory(system, {k: params[k] for k in spec.param_names}, dt, states)


def _params(line: str, spec: System) -> dict[str, float]:
    """``params name=value ...`` (line 3): every parameter of ``spec`` exactly once."""
    params: dict[str, float] = {}
    for m in re.finditer(r"[^ ]+", line[len("params "):]):
        item, col = m.group(), m.start() + len("params ") + 1
        name, eq, value = item.partition("=")
        if not eq:
            raise ValueError(f"line 3, column {col}: expected name=value, found {show(item)}")
        if name not in spec.param_names:
            raise ValueError(f"line 3, column {col}: unknown parameter {show(name)} for {spec.name}; "
                             f"allowed: {', '.join(spec.param_names)}")
        if name in params:
            raise ValueError(f"line 3, column {col}: parameter {name!r} given twice")
        params[name] = _number(value, 3, col + len(name) + 1)
    missing = [k for k in spec.param_names if k not in params]
    if missing:
        raise ValueError(f"line 3, column {len(line) + 1}: missing parameters {missing} for {spec.name}")
    return params
