"""A gain-controlled recurrent cortical circuit: fixed recurrent weights, adaptive single-neuron gains.

After "Adaptive coding efficiency in recurrent cortical circuits via gain control" (Duong,
Bredenberg, Heeger, Simoncelli; arXiv 2305.19869). What follows the paper: neurons adapt only
their gains; the gains trade the fidelity of the stimulus representation against the total
activity of the network under the current stimulus statistics; propagated through a fixed
recurrent network, the gain changes give the V1 adaptation effects. The paper's full text
was not available to us, so the equations below (the circuit, the noise, the fidelity
measure, the activity cost and their solutions) are **our formulation** of that idea, not a
transcription of the paper.

Circuit
-------
n neurons with preferred orientations theta_i = -90 + 180 i / n (degrees; orientation is
180-periodic). Feedforward drive, von Mises in the doubled angle::

    f_i(s) = baseline + amplitude * exp(kappa * (cos 2(s - theta_i) - 1))

Fixed recurrent weights (local excitation, broad inhibition; symmetric, circulant)::

    W_ij = (w_exc * exp(w_exc_kappa * (cos 2(theta_i - theta_j) - 1)) - w_inh) / n

Diagonal gains G = diag(g), g_i >= 0, scale each neuron's total input. Dynamics and steady
state::

    tau dr/dt = -r + G (f(s) + W r)          r*(s) = (I - G W)^{-1} G f(s) = A(g) f(s)

The steady state exists and the dynamics converge to it when the spectral radius of G W is
below 1; every forward checks this and raises ``UnstableCircuitError`` otherwise. The
dynamics are integrated with forward Euler (dt/tau <= 1, which keeps Euler stable for any
stable G W since its eigenvalues then lie in (-1, 1)); Euler's fixed point is r* exactly.

Gain objectives (ours). ``GainConfig.objective`` selects one; both are expectations over
the stimulus distribution p(s) of a gain set, computed by exact quadrature on the config's
orientation grid.

``objective="fidelity"`` (default): coding fidelity traded against activity
--------------------------------------------------------------------------------
The responses are noisy: input noise xi ~ N(0, noise_in^2 I) enters with the feedforward
drive (so gains and recurrence amplify it like the signal) and output noise
eta ~ N(0, noise_out^2 I) is added to the rates::

    r = A(g) (f(s) + xi) + eta,     noise covariance N(g) = noise_in^2 A A^T + noise_out^2 I

The stimulus is represented on the circle, x(s) = (cos 2s, sin 2s). Fidelity is the error of
the best affine decoder x_hat = D r + b (D, b chosen for p(s) and the noise)::

    E(g) = E_{s~p, noise} ||x(s) - x_hat(r)||^2 = tr[ C_xx - C_xr (C_rr + N(g))^{-1} C_rx ]

with C_xx, C_xr = C_xf A^T, C_rr = A C_ff A^T the signal covariances of x and r* under p(s).
The activity cost is the mean squared steady-state rate, and the gains minimise::

    L(g) = E(g) + alpha * E_{s~p}[ sum_i r*_i(s)^2 ]

E depends on the tuning, not just on mean rates: a flat response with the same means decodes
nothing (E = tr C_xx, its largest value), so this objective is not homeostatic by
construction. The cost is squared rather than linear: with E ~ g^2 for a weak neuron, a
linear cost makes every g_i = 0 a local minimum and the optimum silences neurons near an
over-represented adapter. Without output noise the fidelity would not depend on the gains;
without input noise a neuron's signal-to-noise ratio grows without bound with its gain.

Closed form where the formulation allows: for a uniform p(s) on a grid of K orientations with
K a multiple of n, shifting the stimulus by 180/n deg permutes the neurons, so C_ff, W and A
for equal gains are circulant and share the Fourier modes; x(s) lives in mode 1. For equal
gains g, with eigenvalues w_k of W, lambda_k of C_ff, a_k = g / (1 - g w_k)::

    L(g) = tr C_xx - ||C_xf||_F^2 a_1^2 / (a_1^2 (lambda_1 + noise_in^2) + noise_out^2)
           + alpha * (sum_k a_k^2 lambda_k + n mbar^2 a_0^2)

By the symmetry the gradient at equal gains is along the all-ones vector, so the minimiser of
this one-variable function (``analytic_gains``: grid search, then bisection on dL/dg) is a
stationary point of L over all gains; that it is the minimum is checked by gradient descent
from unequal starts. For a biased p(s) there is no closed form: ``gradient_gains``.

``objective="homeostatic"`` (the ablation): activity against a capacity term
----------------------------------------------------------------------------------
::

    L(g) = alpha * sum_i rbar_i  -  sum_i log rbar_i  [ + energy/2 * E_s sum_i r*_i(s)^2 ]
    rbar = E_{s~p}[ r*(s; g) ]         (the mean response of each neuron under p)

It depends on the mean rates only, so any response with the same means scores the same,
flat or tuned. Closed form (energy = 0): r* is linear in f, so rbar = G (m + W rbar) with
m = E_p[f(s)]; for fixed W and m the map g -> rbar is one-to-one on stable gains with positive
net drive, with inverse g_i = rbar_i / (m_i + (W rbar)_i). In rbar, L is separable and strictly
convex: dL/drbar_i = alpha - 1/rbar_i = 0, so rbar_i = 1/alpha for every neuron (mean
responses equalised: homeostasis), and::

    g_i* = 1 / (alpha * m_i + (W 1)_i)

Because grad_g L = (d rbar/d g)^T grad_rbar L with d rbar/d g = (I - G W)^{-1} diag(m + W rbar)
invertible, this is the only stationary point over stable gains. The optimum exists only when
every alpha*m_i + (W 1)_i > 0 and the gains it gives are stable; ``analytic_gains`` raises a
``ValueError`` saying which failed. ``energy`` > 0 has no closed form (gradient only).

The objectives are functions of responses in ``models.gain_objectives`` (``decoding_error``,
``fidelity_loss``, ``homeostatic_loss``). Solvers, in ``models.gain_solvers``: ``analytic_gains``
(closed form where it exists), ``gradient_gains`` (BFGS on log g, gradient by autograd through
the circuit's steady state), ``optimise_gains`` (both sets, the closed form where there is one). A fresh ``GainCircuit(cfg)`` holds the optimum of its
objective for both sets; ``GainCircuit.from_config`` (used to load a checkpoint, whose stored
gains replace them) does not solve and starts every gain at 0.5 / spectral radius of W.

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
in r* = G (f + W r*) without re-equilibrating. The noise of the fidelity objective is part of
the objective only: the forward returns the noise-free rates.

>>> model = GainCircuit(GainConfig())
>>> s = torch.linspace(-90, 90, 181)[:-1]
>>> r = model(s, gains="uniform")                      # [180, n] steady-state rates
>>> r_t = model(s, gains="biased", steps=200)          # after 200 Euler steps
>>> _, cache = model.run_with_cache(s, steps=50)       # time.{t}.hook_rates for t < 50
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Optional, Union

import numpy as np
import torch
from torch import Tensor, nn

from models.gain_objectives import decoding_error, fidelity_loss, homeostatic_loss, stimulus_code
from workbench.hooks import HookedRecurrentModule, HookPoint, hook_list
from workbench.inputs import (MAX_ELEMENTS, MAX_STEPS, MAX_WIDTH, InputTypeError, check_budget, check_tensor,
                              choice_field, describe, float_field, int_field, type_field)
from workbench.tasks import orientation as ori

GAIN_SETS = ("uniform", "biased")
OBJECTIVES = ("fidelity", "homeostatic")
DEFAULT_ALPHA = {"fidelity": 0.005, "homeostatic": 1.0}  # the weight of the activity cost when alpha is not given
DTYPE = torch.float64  # a tiny circuit: exact linear algebra is cheap, and the solvers are compared closely
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
    objective: str = "fidelity"  # 'fidelity' (decoding error + activity) or 'homeostatic' (the ablation)
    alpha: Optional[float] = None  # weight of the activity cost; None: 0.005 (fidelity) or 1.0 (homeostatic)
    noise_in: float = 0.1  # fidelity: s.d. of the input noise (amplified by gains and recurrence)
    noise_out: float = 0.2  # fidelity: s.d. of the output noise added to the rates
    energy: float = 0.0  # homeostatic: weight of an extra quadratic activity cost (0: closed-form optimum)
    grid: int = 180  # orientations used for expectations over p(s) and for tuning curves
    uniform: str = "uniform"  # distribution of the gain set 'uniform'
    biased: str = "biased adapter=0 weight=0.5 width=0"  # distribution of the gain set 'biased'

    def __post_init__(self):
        int_field(self, "n_neurons", 3, MAX_NEURONS)
        int_field(self, "max_steps", 1, MAX_STEPS)
        int_field(self, "grid", 8, MAX_WIDTH)
        choice_field(self, "objective", OBJECTIVES)
        if self.alpha is None:
            self.alpha = DEFAULT_ALPHA[self.objective]
        for name in ("kappa", "w_exc_kappa", "tau", "dt", "alpha", "amplitude", "noise_out"):
            float_field(self, name, 0.0, lo_open=True)
        for name in ("baseline", "w_exc", "w_inh", "energy", "noise_in"):
            float_field(self, name, 0.0)
        for name in GAIN_SETS:
            type_field(self, name, str, "a distribution such as 'uniform' or 'biased adapter=0 weight=0.5 width=0'")
        if self.dt > self.tau:
            raise ValueError(f"dt={self.dt} > tau={self.tau}: forward Euler needs dt/tau <= 1")
        if self.objective == "fidelity" and self.energy:
            raise ValueError(f"energy={self.energy} is the homeostatic objective's extra quadratic cost; the fidelity "
                             "objective's activity cost is already quadratic (weighted by alpha). Allowed: energy=0 "
                             "with objective='fidelity', or objective='homeostatic'")
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
    the config's two distributions under its objective, ``cfg.objective``).

    ``GainCircuit(cfg)`` solves both sets (``optimise_gains``: the closed form where there is
    one, else gradient descent); ``solve=False`` skips that and starts every gain at
    ``start_gains`` (what ``from_config`` does before a checkpoint's gains are loaded).
    """

    def __init__(self, cfg: GainConfig, solve: bool = True):
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
        start = start_gains(self)
        for name in ("active", *GAIN_SETS):
            self.set_gains(name, start)
        if solve:  # configs whose optimum is unstable or has no positive gains fail here
            from models.gain_solvers import optimise_gains  # imported here: that module imports this one

            optimise_gains(self)

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
        g = self.gain_set(gains).detach().reshape(-1, self.n)
        rows = g[:1] if bool((g == g[:1]).all()) else torch.unique(g, dim=0)
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
        return torch.tensor(s, dtype=DTYPE, device=self.W.device), torch.tensor(ori.density(dist, s), dtype=DTYPE,
                                                                                device=self.W.device)

    def transfer(self, gains: Gains = None) -> Tensor:
        """A(g) = (I - G W)^{-1} G, the steady-state map r* = A f: [n, n] (gains [n])."""
        g = self.gain_set(gains)
        if g.ndim != 1:
            raise ValueError(f"transfer needs one gain vector [n]; got {tuple(g.shape)}")
        eye = torch.eye(self.n, dtype=DTYPE, device=self.W.device)
        return torch.linalg.solve(eye - g[:, None] * self.W, torch.diag(g))

    def noise_covariance(self, gains: Gains = None) -> Tensor:
        """Covariance of the response noise of the fidelity objective: noise_in^2 A A^T + noise_out^2 I, [n, n]."""
        A = self.transfer(gains)
        eye = torch.eye(self.n, dtype=DTYPE, device=self.W.device)
        return self.cfg.noise_in ** 2 * A @ A.T + self.cfg.noise_out ** 2 * eye

    def objective(self, gains: Tensor, dist: ori.OrientationDistribution) -> Tensor:
        """L(g) of the config's objective (differentiable in ``gains`` [n]); the homeostatic one is +inf if a
        mean rate is <= 0. The rates come from the circuit's forward (hooks included)."""
        s, p = self.expectation_grid(dist)
        R = self(s, gains=gains)  # [K, n]
        c = self.cfg
        if c.objective == "fidelity":
            return fidelity_loss(R, p, stimulus_code(s), self.noise_covariance(gains), c.alpha)
        return homeostatic_loss(R, p, c.alpha, c.energy)

    @torch.no_grad()
    def objective_terms(self, gains: Gains, dist: ori.OrientationDistribution) -> dict:
        """One gain set under p(s), whatever the config's objective, as floats.

        ``decoding_error`` E(g) of the fidelity objective (noise from the config), ``activity``
        E_p[sum_i r*_i^2], ``rate_spread`` std/mean of the mean rates, ``objective`` the config's L(g).
        """
        g = self.gain_set(gains)
        s, p = self.expectation_grid(dist)
        R = self(s, gains=g)
        rbar = p @ R
        return {"decoding_error": float(decoding_error(R, p, stimulus_code(s), self.noise_covariance(g))),
                "activity": float((p @ R.pow(2)).sum()), "rate_spread": float(rbar.std(correction=0) / rbar.mean()),
                "objective": float(self.objective(g, dist))}

    # --- config round trip ------------------------------------------------------
    def config_dict(self) -> dict:
        return asdict(self.cfg)

    @classmethod
    def from_config(cls, config: dict) -> "GainCircuit":
        """The circuit of a stored config without solving its gains (a checkpoint's buffers replace them)."""
        return cls(GainConfig(**config), solve=False)


def start_gains(model: GainCircuit) -> Tensor:
    """Every gain at half the stability limit, 0.5 / spectral radius of W (1 without recurrence): [n]."""
    rho = float(model.spectral_radius(torch.ones(model.n, dtype=DTYPE)).max())
    return torch.full((model.n,), 0.5 / rho if rho > 0 else 1.0, dtype=DTYPE, device=model.W.device)
