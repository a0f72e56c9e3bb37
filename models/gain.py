"""A gain-controlled recurrent cortical circuit: fixed recurrent weights, adaptive single-neuron gains.

After "Adaptive coding efficiency in recurrent cortical circuits via gain control" (Duong,
Bredenberg, Heeger, Simoncelli; arXiv 2305.19869). That paper's full text was not available
to us: the equations below are **our formulation** of its idea (neurons adapt only their
gains; propagated through a fixed recurrent network, the gain changes reproduce V1
adaptation effects), not a transcription of the paper.

Circuit
-------
n neurons with preferred orientations theta_i = -90 + 180 i / n (degrees; orientation is
180-periodic). Feedforward drive, von Mises in the doubled angle::

    f_i(s) = baseline + amplitude * exp(kappa * (cos 2(s - theta_i) - 1))

Fixed recurrent weights (local excitation, broad inhibition; symmetric, circulant)::

    W_ij = (w_exc * exp(w_exc_kappa * (cos 2(theta_i - theta_j) - 1)) - w_inh) / n

Diagonal gains G = diag(g), g_i >= 0, scale each neuron's total input. Dynamics and steady
state::

    tau dr/dt = -r + G (f(s) + W r)          r*(s) = (I - G W)^{-1} G f(s)

The steady state exists and the dynamics converge to it when the spectral radius of G W is
below 1; every forward checks this and raises ``UnstableCircuitError`` otherwise. The
dynamics are integrated with forward Euler (dt/tau <= 1, which keeps Euler stable for any
stable G W since its eigenvalues then lie in (-1, 1)); Euler's fixed point is r* exactly.

Gain objective (ours)
---------------------
Given a stimulus distribution p(s), gains minimise activity minus representational capacity::

    L(g) = alpha * sum_i rbar_i  -  sum_i log rbar_i  [ + energy/2 * E_s sum_i r*_i(s)^2 ]
    rbar = E_{s~p}[ r*(s; g) ]         (the mean response of each neuron under p)

* ``alpha * sum_i rbar_i`` is the total activity of the network averaged over p(s).
* ``log rbar_i`` is the fidelity term: among non-negative responses with mean rbar_i the
  exponential distribution has the largest entropy, 1 + log rbar_i, so ``sum_i log rbar_i``
  bounds, neuron by neuron, how much the population's responses can tell about s at the
  activity it spends. It rewards every neuron taking part in the code; the activity term
  punishes neurons that p(s) drives often. (It is a capacity bound, not the Fisher
  information; with an over-represented adapter it is the adapter-tuned neurons whose mean
  drive rises, so they are the ones that turn their gain down.)
* ``energy`` (default 0) adds a quadratic activity cost; it has no closed form and is
  solved by gradient descent only.

Analytic optimum (energy = 0). The steady state is linear in f, so its mean under p is the
steady state of the mean drive m = E_p[f(s)]: rbar = G (m + W rbar). For fixed W and m the
map g -> rbar is one-to-one on stable gains with positive net drive, with inverse
g_i = rbar_i / (m_i + (W rbar)_i). In rbar, L is separable and strictly convex:
dL/drbar_i = alpha - 1/rbar_i = 0, so rbar_i = 1/alpha for every neuron (the population's
time-averaged responses are equalised: homeostasis). Mapping back::

    g_i* = 1 / (alpha * m_i + (W 1)_i)

Because grad_g L = (d rbar/d g)^T grad_rbar L with d rbar/d g = (I - G W)^{-1} diag(m + W rbar)
invertible, this is the only stationary point over stable gains, and gradient descent on
L(g) through the recurrent steady state (``gradient_gains``) must find it; a test checks
the two agree. The optimum exists only when every alpha*m_i + (W 1)_i > 0 and the gains
it gives are stable; ``analytic_gains`` raises a ``ValueError`` saying which failed.

Hook names (``t`` = Euler step, rates after step t are r((t+1) dt))::

    hook_feedforward                     f(s)                      [batch, n]
    hook_gains                           g (one row per stimulus)  [batch, n]
    steady.hook_recurrent_drive          W r*                      [batch, n]
    steady.hook_rates                    r* = G (f + W r*)         [batch, n]
    time.{t}.hook_recurrent_drive        W r(t dt)                 [batch, n]
    time.{t}.hook_input                  G (f + W r(t dt))         [batch, n]
    time.{t}.hook_rates                  r((t+1) dt)               [batch, n]

Patching ``hook_gains`` changes the gains of the run (stability is checked after the
hook), so ``run_with_hooks`` can silence or scale a subpopulation and the tuning curves of
every other neuron move through W. Patching ``steady.hook_recurrent_drive`` replaces W r*
in r* = G (f + W r*) without re-equilibrating.

>>> model = GainCircuit(GainConfig())
>>> s = torch.linspace(-90, 90, 181)[:-1]
>>> r = model(s, gains="uniform")                      # [180, n] steady-state rates
>>> r_t = model(s, gains="biased", steps=200)          # after 200 Euler steps
>>> _, cache = model.run_with_cache(s, steps=50)       # time.{t}.hook_rates for t < 50
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Optional, Union

import numpy as np
import torch
from torch import Tensor, nn

from workbench.hooks import HookedRecurrentModule, HookPoint, hook_list
from workbench.inputs import (MAX_ELEMENTS, MAX_STEPS, MAX_WIDTH, InputTypeError, check_budget, check_tensor,
                              describe, float_field, int_field, type_field)
from workbench.tasks import orientation as ori

GAIN_SETS = ("uniform", "biased")
DTYPE = torch.float64  # a tiny circuit: exact linear algebra is cheap, and the solvers compare to 1e-6
MAX_NEURONS = 1024  # every forward computes the eigenvalues of G W (n^3): ~2 s at this size


class UnstableCircuitError(ValueError):
    """The spectral radius of G W is >= 1: no steady state, the dynamics diverge."""


# ---------------------------------------------------------------------- config
@dataclass
class GainConfig:
    n_neurons: int = 36
    # feedforward tuning
    kappa: float = 4.0  # von Mises concentration (doubled angle)
    amplitude: float = 1.0
    baseline: float = 0.1
    # fixed recurrent weights
    w_exc: float = 6.0
    w_exc_kappa: float = 2.0
    w_inh: float = 0.5
    # dynamics
    tau: float = 10.0  # ms
    dt: float = 2.5  # ms; dt/tau <= 1
    max_steps: int = 400  # hook points are built for this many Euler steps
    # gain objective
    alpha: float = 1.0  # weight of the total activity
    energy: float = 0.0  # weight of the quadratic activity cost (0: closed-form optimum)
    grid: int = 180  # orientations used for expectations over p(s) and for tuning curves
    uniform: str = "uniform"  # distribution of the gain set 'uniform'
    biased: str = "biased adapter=0 weight=0.5 width=0"  # distribution of the gain set 'biased'

    def __post_init__(self):
        int_field(self, "n_neurons", 3, MAX_NEURONS)
        int_field(self, "max_steps", 1, MAX_STEPS)
        int_field(self, "grid", 8, MAX_WIDTH)
        for name in ("kappa", "w_exc_kappa", "tau", "dt", "alpha", "amplitude"):
            float_field(self, name, 0.0, lo_open=True)
        for name in ("baseline", "w_exc", "w_inh", "energy"):
            float_field(self, name, 0.0)
        for name in GAIN_SETS:
            type_field(self, name, str, "a distribution such as 'uniform' or 'biased adapter=0 weight=0.5 width=0'")
        if self.dt > self.tau:
            raise ValueError(f"dt={self.dt} > tau={self.tau}: forward Euler needs dt/tau <= 1")
        check_budget(self, "elements of W and of the expectation grid (n_neurons^2 + grid * n_neurons)",
                     self.n_neurons ** 2 + self.grid * self.n_neurons, MAX_ELEMENTS, "grid or n_neurons")
        self.distribution("uniform"), self.distribution("biased")  # parse errors surface here

    def distribution(self, name: str) -> ori.OrientationDistribution:
        if name not in GAIN_SETS:
            raise ValueError(f"unknown gain set {name!r}; allowed: {', '.join(GAIN_SETS)}")
        try:
            return ori.parse(getattr(self, name))
        except ValueError as e:
            raise ValueError(f"{name}={getattr(self, name)!r}: {e}") from None


# ------------------------------------------------------------- per-step hooks
class SteadyHooks(nn.Module):
    def __init__(self):
        super().__init__()
        self.hook_recurrent_drive, self.hook_rates = HookPoint(), HookPoint()


class TimeHooks(nn.Module):
    def __init__(self):
        super().__init__()
        self.hook_recurrent_drive, self.hook_input, self.hook_rates = HookPoint(), HookPoint(), HookPoint()


Gains = Union[None, str, Tensor]


def _as_tensor(value, name: str, dims: str) -> Tensor:
    """A tensor as is; an array or list of reals as a tensor (floating values in float64, so no precision is lost)."""
    if isinstance(value, Tensor):
        return value
    try:
        arr = np.asarray(value)
        return torch.as_tensor(arr, dtype=DTYPE) if arr.dtype.kind == "f" else torch.as_tensor(arr)
    except (TypeError, ValueError, RuntimeError):
        raise InputTypeError(f"{name} must be a float tensor {dims} (or an array of real numbers); "
                             f"got {describe(value)}") from None


# ----------------------------------------------------------------------- model
class GainCircuit(HookedRecurrentModule):
    """Orientation-tuned recurrent population with per-neuron gains (see the module docstring).

    Buffers: ``preferred`` [n] (degrees), ``W`` [n, n], ``gains`` [n] (the active set, used
    when a forward names none), ``gains_uniform`` and ``gains_biased`` [n] (optimised for
    the config's two distributions; a fresh model holds their closed-form optimum).
    """

    def __init__(self, cfg: GainConfig):
        super().__init__()
        self.cfg = cfg
        n = cfg.n_neurons
        preferred = torch.tensor(ori.grid(n), dtype=DTYPE)
        delta = torch.deg2rad(2.0 * (preferred[:, None] - preferred[None, :]))
        W = (cfg.w_exc * torch.exp(cfg.w_exc_kappa * (torch.cos(delta) - 1.0)) - cfg.w_inh) / n
        self.register_buffer("preferred", preferred)
        self.register_buffer("W", W)
        self.register_buffer("gains", torch.ones(n, dtype=DTYPE))
        self.register_buffer("gains_uniform", torch.ones(n, dtype=DTYPE))
        self.register_buffer("gains_biased", torch.ones(n, dtype=DTYPE))
        self.hook_feedforward, self.hook_gains = HookPoint(), HookPoint()
        self.steady = SteadyHooks()
        self.time = hook_list(cfg.max_steps, TimeHooks)
        self.setup()
        # A fresh circuit holds the closed-form optimum of the energy-free objective for both
        # sets (with energy > 0 it is the start of gradient descent); unstable configs fail here.
        for name in GAIN_SETS:
            self.set_gains(name, analytic_gains(self, cfg.distribution(name), closed_form=True))
        self.gains.copy_(self.gains_uniform)

    # --- inputs -------------------------------------------------------------
    @property
    def n(self) -> int:
        return self.cfg.n_neurons

    def feedforward(self, orientations: Tensor) -> Tensor:
        """Von Mises feedforward drive f(s): [batch] degrees -> [batch, n].

        ``orientations``: a floating tensor (or array / list of real numbers) [batch], batch >= 1,
        finite; any float dtype is cast to float64, the circuit's dtype. Integers, NaN / inf and
        other shapes raise a ``ValueError`` (``InputTypeError`` for a wrong type or dtype).
        """
        s = _as_tensor(orientations, "orientations", "[batch] of degrees").to(self.W.device)
        s = check_tensor(s, "orientations", ("batch",), dtype=DTYPE, note=" of degrees")
        c = self.cfg
        delta = torch.deg2rad(2.0 * (s[:, None] - self.preferred[None, :]))
        return c.baseline + c.amplitude * torch.exp(c.kappa * (torch.cos(delta) - 1.0))

    def gain_set(self, gains: Gains = None) -> Tensor:
        """Resolve ``None`` (the active set), a set name, or a tensor [n] / [batch, n]."""
        if gains is None:
            return self.gains
        if isinstance(gains, str):
            if gains not in GAIN_SETS:
                raise ValueError(f"unknown gain set {gains!r}; allowed: {', '.join(GAIN_SETS)} or a tensor [n]")
            return getattr(self, f"gains_{gains}")
        g = torch.as_tensor(gains, device=self.W.device)
        if g.shape[-1:] != (self.n,) or g.ndim > 2:
            raise ValueError(f"gains must have shape [n] or [batch, n] with n={self.n}; got {tuple(g.shape)}")
        return g.to(DTYPE)

    def set_gains(self, name: str, gains: Tensor) -> None:
        """Store a gain set (``'uniform'``, ``'biased'`` or ``'active'``) after checking stability."""
        g = self.gain_set(torch.as_tensor(gains)).detach()
        self.check_stable(g)
        target = self.gains if name == "active" else getattr(self, f"gains_{name}", None)
        if target is None:
            raise ValueError(f"unknown gain set {name!r}; allowed: active, {', '.join(GAIN_SETS)}")
        target.copy_(g)

    def use_gains(self, name: str) -> None:
        """Make a stored set the active one: ``model.use_gains('biased')``."""
        self.gains.copy_(self.gain_set(name))

    # --- stability --------------------------------------------------------------
    def spectral_radius(self, gains: Gains = None) -> Tensor:
        """Spectral radius of G W for every distinct row of gains: [rows]."""
        g = self.gain_set(gains).detach()
        rows = torch.unique(g.reshape(-1, self.n), dim=0)
        return torch.linalg.eigvals(rows[:, :, None] * self.W).abs().amax(-1)

    def check_stable(self, gains: Gains = None) -> None:
        g = self.gain_set(gains).detach().reshape(-1, self.n)
        bad = ~torch.isfinite(g) | (g < 0)
        if bad.any():
            row, i = (int(x) for x in torch.nonzero(bad)[0])
            raise ValueError(f"gains must be finite and >= 0; neuron {i} has gain {float(g[row, i])}")
        rho = float(self.spectral_radius(g).max())
        if rho >= 1.0:
            raise UnstableCircuitError(
                f"unstable circuit: the spectral radius of G W is {rho:.4f} >= 1, so there is no steady state and "
                f"the dynamics diverge. Allowed: gains with spectral radius of G W below 1 (largest gain now "
                f"{float(g.max()):.4g}; spectral radius of W alone {float(self.spectral_radius(torch.ones(self.n)).max()):.4g}); "
                "lower the gains or the recurrent weights (w_exc, w_inh)."
            )

    # --- the circuit ----------------------------------------------------------
    def forward(self, orientations: Tensor, gains: Gains = None, steps: Optional[int] = None,
                r0: Optional[Tensor] = None) -> Tensor:
        """Rates of the circuit for a batch of stimuli.

        Args:
            orientations: [batch] stimulus orientations in degrees.
            gains: ``None`` (the active set), ``'uniform'``, ``'biased'``, or a tensor [n] / [batch, n].
            steps: ``None`` for the steady state r*; else the number of Euler steps of
                tau dr/dt = -r + G (f + W r) from ``r0`` (default zeros), 1..max_steps.
            r0: start rates [n] or [batch, n] (finite; only with ``steps``).
        Returns:
            [batch, n] rates (steady state, or after ``steps`` steps).
        """
        if steps is not None:
            self.check_steps(steps, loop="time", param="steps")
        elif r0 is not None:
            raise ValueError("r0 is the start of the Euler dynamics: give steps too (the steady state has no start)")
        f = self.hook_feedforward(self.feedforward(orientations))
        B = f.shape[0]
        g = self.gain_set(gains)
        if g.ndim == 2 and g.shape[0] not in (1, B):
            raise ValueError(f"gains of shape {tuple(g.shape)} do not match {B} stimuli; give [n], [1, n] or [{B}, n]")
        if r0 is not None:
            r0 = _as_tensor(r0, "r0", "[n] or [batch, n]").to(self.W.device)
            rows = {1: (), 2: (("batch", B if r0.shape[0] != 1 else 1),)}.get(r0.ndim, ("batch",))
            r0 = check_tensor(r0, "r0", (*rows, ("n", self.n)), dtype=DTYPE,
                              note=f" = [{self.n}], [1, {self.n}] or [{B}, {self.n}] (start rates)")
        g = self.hook_gains(g.expand(B, self.n).clone())  # a copy: patching it never edits a stored set
        self.check_stable(g)
        if steps is None:
            return self._steady(f, g)
        return self._integrate(f, g, steps, r0)

    def _steady(self, f: Tensor, g: Tensor) -> Tensor:
        """r* = (I - G W)^{-1} G f, one solve when every stimulus shares the gains."""
        eye = torch.eye(self.n, dtype=DTYPE, device=f.device)
        if bool((g == g[:1]).all()):
            r = torch.linalg.solve(eye - g[0, :, None] * self.W, (g * f).T).T
        else:
            r = torch.linalg.solve(eye - g[:, :, None] * self.W, g * f)
        drive = self.steady.hook_recurrent_drive(r @ self.W.T)
        return self.steady.hook_rates(g * (f + drive))

    def _integrate(self, f: Tensor, g: Tensor, steps: int, r0: Optional[Tensor]) -> Tensor:
        r = torch.zeros_like(f) if r0 is None else torch.as_tensor(r0, dtype=DTYPE).expand_as(f)
        k = self.cfg.dt / self.cfg.tau
        for t in range(steps):
            hooks = self.time[t]
            drive = hooks.hook_recurrent_drive(r @ self.W.T)
            total = hooks.hook_input(g * (f + drive))
            r = hooks.hook_rates(r + k * (total - r))
        return r

    # --- the gain objective -----------------------------------------------------
    def expectation_grid(self, dist: ori.OrientationDistribution) -> tuple[Tensor, Tensor]:
        """(orientations [K], probabilities [K]) of the grid that expectations over p(s) use."""
        s = ori.grid(self.cfg.grid)
        return torch.tensor(s, dtype=DTYPE), torch.tensor(ori.density(dist, s), dtype=DTYPE)

    def objective(self, gains: Tensor, dist: ori.OrientationDistribution) -> Tensor:
        """L(g) of the module docstring (differentiable in ``gains`` [n]); +inf if a mean rate is <= 0."""
        s, p = self.expectation_grid(dist)
        R = self(s, gains=gains)  # [K, n]
        rbar = p @ R
        if (rbar <= 0).any():
            return torch.tensor(math.inf, dtype=DTYPE)
        loss = self.cfg.alpha * rbar.sum() - torch.log(rbar).sum()
        if self.cfg.energy:
            loss = loss + 0.5 * self.cfg.energy * (p @ R.pow(2)).sum()
        return loss

    # --- config round trip ------------------------------------------------------
    def config_dict(self) -> dict:
        return asdict(self.cfg)

    @classmethod
    def from_config(cls, config: dict) -> "GainCircuit":
        return cls(GainConfig(**config))


# ----------------------------------------------------------------- gain solvers
def analytic_gains(model: GainCircuit, dist: ori.OrientationDistribution, closed_form: bool = False) -> Tensor:
    """Closed-form optimum g_i = 1 / (alpha m_i + (W 1)_i), m = E_p[f(s)]: [n].

    Exact for energy = 0; with energy > 0 it raises unless ``closed_form=True`` asks for the
    optimum of the energy-free objective (the gradient solver's starting point).
    """
    if model.cfg.energy and not closed_form:
        raise ValueError(f"energy={model.cfg.energy}: the objective has no closed form; use the gradient solver "
                         "(gradient_gains, or --solver gradient)")
    s, p = model.expectation_grid(dist)
    m = p @ model.feedforward(s)
    denom = model.cfg.alpha * m + model.W.sum(1)
    if (denom <= 0).any():
        i = int(torch.argmin(denom))
        raise ValueError(
            f"no optimum with positive gains: alpha*m_i + (W 1)_i = {float(denom[i]):.4g} <= 0 at neuron {i} "
            f"(preferred {float(model.preferred[i]):.1f} deg); the inhibition (w_inh) outweighs the mean drive. "
            "Allowed: alpha * E_p[f_i] + sum_j W_ij > 0 for every neuron; raise alpha or lower w_inh."
        )
    g = 1.0 / denom
    rho = float(model.spectral_radius(g).max())
    if rho >= 1.0:
        raise UnstableCircuitError(
            f"the optimal gains for {ori.format_distribution(dist)!r} make the circuit unstable (spectral radius "
            f"of G W = {rho:.4f} >= 1); allowed: a stable optimum. Raise alpha or lower w_exc."
        )
    return g


@dataclass
class GradientResult:
    gains: Tensor  # [n]
    loss: float
    grad_norm: float  # max |dL/dlog g| at the end
    iterations: int
    converged: bool


def gradient_gains(model: GainCircuit, dist: ori.OrientationDistribution, init: Optional[Tensor] = None,
                   tol: float = 1e-7, max_iter: int = 5000) -> GradientResult:
    """Minimise L(g) by gradient descent on log g through the recurrent steady state.

    Steepest descent with a backtracking (Armijo) step: a step that lowers L is taken and
    the next one tried twice as long; one that raises L, or leaves the stable region
    (spectral radius of G W >= 1), is halved. Deterministic. Starts from ``init`` (default:
    every gain at half the stability limit, 0.5 / spectral radius of W, which knows nothing of
    the closed form) and stops when max |dL/dlog g| < tol (about the float64 floor of this loss).
    """
    if init is None:
        init = torch.full((model.n,), 0.5, dtype=DTYPE) / model.spectral_radius(torch.ones(model.n, dtype=DTYPE)).max()
    u = torch.log(model.gain_set(init).detach().clone())

    def value_and_grad(u: Tensor) -> tuple[float, Tensor]:
        u = u.detach().requires_grad_(True)
        try:
            loss = model.objective(torch.exp(u), dist)
        except UnstableCircuitError:
            return math.inf, torch.zeros_like(u)
        if not torch.isfinite(loss):
            return math.inf, torch.zeros_like(u)
        (grad,) = torch.autograd.grad(loss, u)
        return float(loss.detach()), grad

    loss, grad = value_and_grad(u)
    if not math.isfinite(loss):
        raise ValueError("gradient_gains: the starting gains are unstable or give a non-positive mean rate")
    step, it = 1.0, 0
    for it in range(1, max_iter + 1):
        if float(grad.abs().max()) < tol:
            break
        while step > 1e-16:
            new_u = u - step * grad
            new_loss, new_grad = value_and_grad(new_u)
            if new_loss <= loss - 1e-4 * step * float(grad.pow(2).sum()):
                u, loss, grad = new_u, new_loss, new_grad
                step *= 2.0
                break
            step *= 0.5
        else:
            break  # no descent step left: at the optimum to machine precision
    g = torch.exp(u).detach()
    gnorm = float(grad.abs().max())
    return GradientResult(g, loss, gnorm, it, gnorm < tol)


def optimise_gains(model: GainCircuit, solver: str = "analytic") -> dict:
    """Solve both gain sets of the config with ``solver`` ('analytic' or 'gradient') and store them.

    Returns a summary per set: the objective value, the spectral radius, and for the gradient
    solver its iterations and final gradient.
    """
    if solver not in ("analytic", "gradient"):
        raise ValueError(f"solver={solver!r}; allowed: analytic, gradient")
    out = {}
    for name in GAIN_SETS:
        dist = model.cfg.distribution(name)
        if solver == "analytic":
            g, extra = analytic_gains(model, dist), {}
        else:
            res = gradient_gains(model, dist)
            g, extra = res.gains, {"iterations": res.iterations, "grad_norm": res.grad_norm, "converged": res.converged}
        model.set_gains(name, g)
        with torch.no_grad():
            loss = float(model.objective(g, dist))
        out[name] = {"distribution": ori.format_distribution(dist), "objective": loss,
                     "spectral_radius": float(model.spectral_radius(g).max()), **extra}
    model.use_gains("uniform")
    return out

