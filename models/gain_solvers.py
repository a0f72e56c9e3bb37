"""Solvers of the gains of ``models.gain.GainCircuit`` (see that module's docstring for when each
applies): ``analytic_gains`` (the closed form of a uniform stimulus distribution),
``gradient_gains`` (descent on log g through the recurrent steady state) and ``optimise_gains``
(both of a circuit's gain sets, with the default solver of each)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch
from torch import Tensor

from models.gain import DTYPE, GAIN_SETS, GainCircuit, UnstableCircuitError, start_gains
from models.gain_objectives import stimulus_code, weighted_cov
from workbench.tasks import orientation as ori


def has_closed_form(model: GainCircuit, dist: ori.OrientationDistribution) -> bool:
    """Whether ``analytic_gains`` can solve ``dist`` for this circuit's objective (see the module docstring)."""
    c = model.cfg
    if c.objective == "homeostatic":
        return not c.energy
    p = ori.density(dist, ori.grid(c.grid))
    return c.grid % c.n_neurons == 0 and bool(np.all(p == p[0]))


def default_solver(model: GainCircuit, dist: ori.OrientationDistribution) -> str:
    """'analytic' where there is a closed form for ``dist``, else 'gradient'."""
    return "analytic" if has_closed_form(model, dist) else "gradient"


def analytic_gains(model: GainCircuit, dist: ori.OrientationDistribution, closed_form: bool = False) -> Tensor:
    """The closed-form optimum of the config's objective for ``dist``: [n].

    homeostatic: g_i = 1 / (alpha m_i + (W 1)_i), m = E_p[f(s)]; with energy > 0 it raises unless
    ``closed_form=True`` asks for the optimum of the energy-free objective.
    fidelity: the equal gains minimising the spectral form of L (uniform p(s), grid a multiple of
    n); any other case raises a ``ValueError`` naming the gradient solver.
    """
    if model.cfg.objective == "fidelity":
        return _fidelity_symmetric_gains(model, dist)
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
    _check_optimum_stable(model, g, dist)
    return g


def _check_optimum_stable(model: GainCircuit, g: Tensor, dist: ori.OrientationDistribution) -> None:
    rho = float(model.spectral_radius(g).max())
    if rho >= 1.0:
        raise UnstableCircuitError(
            f"the optimal gains for {ori.format_distribution(dist)!r} make the circuit unstable (spectral radius "
            f"of G W = {rho:.4f} >= 1); allowed: a stable optimum. Raise alpha or lower w_exc."
        )


def _circulant_spectrum(M: Tensor) -> Tensor:
    """Eigenvalues of a symmetric circulant matrix by Fourier mode k = 0..n-1: sum_j M_0j cos(2 pi j k / n)."""
    n = M.shape[0]
    k = torch.arange(n, dtype=DTYPE, device=M.device)
    return torch.cos(2 * math.pi * k[:, None] * k[None, :] / n) @ M[0]


@torch.no_grad()
def _fidelity_symmetric_gains(model: GainCircuit, dist: ori.OrientationDistribution) -> Tensor:
    c, n = model.cfg, model.n
    if not has_closed_form(model, dist):
        raise ValueError(
            f"the fidelity objective has a closed form only for a uniform p(s) on a grid that is a multiple of "
            f"n_neurons (here {ori.format_distribution(dist)!r}, grid={c.grid}, n_neurons={n}); use the gradient "
            "solver (gradient_gains, solver='gradient' or --solver gradient)")
    s, p = model.expectation_grid(dist)
    F, x = model.feedforward(s), stimulus_code(s)
    w = _circulant_spectrum(model.W)  # W's eigenvalues by Fourier mode
    lam = _circulant_spectrum(weighted_cov(F, F, p))  # C_ff's
    cxf2 = float(weighted_cov(x, F, p).pow(2).sum())  # ||C_xf||_F^2, all of it in mode 1
    trxx = float(torch.trace(weighted_cov(x, x, p)))
    nu = lam.clone()
    nu[0] += n * float((p @ F).mean()) ** 2  # E_p sum r*^2 = sum_k a_k^2 nu_k (the mean drive is mode 0)
    mu1, so2, alpha = float(lam[1]) + c.noise_in ** 2, c.noise_out ** 2, c.alpha

    def loss(g: Tensor) -> Tensor:  # g [m] -> L [m]
        a = g[:, None] / (1.0 - g[:, None] * w[None, :])
        a1 = a[:, 1]
        return trxx - cxf2 * a1 ** 2 / (a1 ** 2 * mu1 + so2) + alpha * (a ** 2 * nu[None, :]).sum(1)

    def slope(g: float) -> float:  # dL/dg
        d = 1.0 - g * w
        a, da = g / d, 1.0 / d ** 2
        a1 = float(a[1])
        fid = -cxf2 * 2 * a1 * so2 / (a1 ** 2 * mu1 + so2) ** 2 * float(da[1])
        return fid + alpha * float((2 * a * nu * da).sum())

    if float(w.abs().max()) > 0:
        g_max = 1.0 / float(w.abs().max())  # the stability limit of equal gains
    else:  # no recurrence: no limit; search up to where L rises
        g_max = 1.0
        for _ in range(60):
            if slope(g_max) > 0:
                break
            g_max *= 2.0
    grid = torch.linspace(0.0, g_max, 4001, dtype=DTYPE)[1:-1]
    j = int(torch.argmin(loss(grid)))
    if j == len(grid) - 1:
        raise UnstableCircuitError(f"the fidelity optimum for {ori.format_distribution(dist)!r} lies at the stability "
                                   "limit of the equal gains; allowed: a stable optimum. Raise alpha or lower w_exc.")
    lo = float(grid[j - 1]) if j > 0 else 0.0
    hi = float(grid[j + 1])
    if j == 0 and slope(float(grid[0])) >= 0:
        raise ValueError(f"the fidelity optimum for {ori.format_distribution(dist)!r} has all gains at 0: the activity "
                         "cost outweighs what any response can tell about the stimulus; lower alpha or noise_out")
    for _ in range(200):  # bisection on dL/dg between a falling and a rising point
        mid = 0.5 * (lo + hi)
        if mid in (lo, hi):
            break
        lo, hi = (mid, hi) if slope(mid) < 0 else (lo, mid)
    g = torch.full((n,), 0.5 * (lo + hi), dtype=DTYPE, device=model.W.device)
    _check_optimum_stable(model, g, dist)
    return g


@dataclass
class GradientResult:
    gains: Tensor  # [n]
    loss: float
    grad_norm: float  # max |dL/dlog g| at the end
    iterations: int
    converged: bool


# max |dL/dlog g| at which descent stops, well above the level where float64 rounding of L stalls the line
# search on the shipped circuit (about 2e-10 for the fidelity objective, L ~ 0.07; 3e-13 for the homeostatic one)
DEFAULT_TOL = {"fidelity": 1e-8, "homeostatic": 1e-7}


def gradient_gains(model: GainCircuit, dist: ori.OrientationDistribution, init: Optional[Tensor] = None,
                   tol: Optional[float] = None, max_iter: int = 3000) -> GradientResult:
    """Minimise the config's L(g) by gradient-based descent on log g through the recurrent steady state.

    BFGS (quasi-Newton) on u = log g with a backtracking (Armijo) line search; the gradient is
    autograd's, through the circuit's forward. A step that raises L, or leaves the stable region
    (spectral radius of G W >= 1), is halved. Deterministic. Starts from ``init`` (default
    ``start_gains``: equal gains at half the stability limit, which know nothing of any closed
    form) and stops when max |dL/dlog g| < ``tol`` (default ``DEFAULT_TOL`` of the objective) or
    when no step lowers L any more (the float64 floor).
    """
    tol = DEFAULT_TOL[model.cfg.objective] if tol is None else tol
    u = torch.log(model.gain_set(start_gains(model) if init is None else init).detach().clone())

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
    H = torch.eye(model.n, dtype=DTYPE, device=u.device)  # inverse-Hessian estimate
    it = 0
    for it in range(1, max_iter + 1):
        if float(grad.abs().max()) < tol:
            break
        d = -H @ grad
        slope = float(d @ grad)
        if slope >= 0:  # not a descent direction: restart from steepest descent
            H = torch.eye(model.n, dtype=DTYPE, device=u.device)
            d, slope = -grad, -float(grad @ grad)
        step = 1.0
        for _ in range(40):
            new_u = u + step * d
            new_loss, new_grad = value_and_grad(new_u)
            if new_loss <= loss + 1e-4 * step * slope:
                break
            step *= 0.5
        else:
            break  # no step lowers L: at the optimum to float64 precision
        sv, yv = new_u - u, new_grad - grad
        sy = float(sv @ yv)
        if sy > 0:
            if it == 1:
                H = H * (sy / float(yv @ yv))  # scale the first estimate to the objective's curvature
            rho = 1.0 / sy
            V = torch.eye(model.n, dtype=DTYPE, device=u.device) - rho * torch.outer(sv, yv)
            H = V @ H @ V.T + rho * torch.outer(sv, sv)
        u, loss, grad = new_u, new_loss, new_grad
    g = torch.exp(u).detach()
    gnorm = float(grad.abs().max())
    return GradientResult(g, loss, gnorm, it, gnorm < tol)


def optimise_gains(model: GainCircuit, solver: str = "auto") -> dict:
    """Solve both gain sets of the config and store them.

    ``solver``: 'auto' (the closed form where there is one, else gradient descent), 'analytic'
    (raises where there is no closed form) or 'gradient'. Returns a summary per set: the solver
    used, the objective value, the spectral radius, and for gradient descent its iterations and
    final gradient.
    """
    if solver not in ("auto", "analytic", "gradient"):
        raise ValueError(f"solver={solver!r}; allowed: auto, analytic, gradient")
    out = {}
    for name in GAIN_SETS:
        dist = model.cfg.distribution(name)
        used = default_solver(model, dist) if solver == "auto" else solver
        if used == "analytic":
            g, extra = analytic_gains(model, dist), {}
        else:
            res = gradient_gains(model, dist)
            g, extra = res.gains, {"iterations": res.iterations, "grad_norm": res.grad_norm, "converged": res.converged}
        model.set_gains(name, g)
        with torch.no_grad():
            loss = float(model.objective(g, dist))
        out[name] = {"distribution": ori.format_distribution(dist), "solver": used, "objective": loss,
                     "spectral_radius": float(model.spectral_radius(g).max()), **extra}
    model.use_gains("uniform")
    return out
