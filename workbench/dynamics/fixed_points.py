"""Fixed points of a cell h -> F(h), found by minimising ||F(h) - h||, with their stability."""

from __future__ import annotations

from collections.abc import Callable
from typing import Optional

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from workbench.dynamics.result import DynamicsResult


def _probe_dtype(step_fn, dim: int) -> torch.dtype:
    for dtype in (torch.float32, torch.float64):
        try:
            with torch.no_grad():
                out = step_fn(torch.zeros(2, dim, dtype=dtype))
        except RuntimeError:
            continue
        if isinstance(out, Tensor) and out.shape == (2, dim):
            return out.dtype if torch.is_floating_point(out) else dtype
        raise ValueError(f"step_fn must map [n, {dim}] states to [n, {dim}]; it returned "
                         f"{list(out.shape) if isinstance(out, Tensor) else type(out).__name__}")
    raise ValueError(f"step_fn fails on float32 and float64 states of shape [n, {dim}]; pass starts= in its dtype")


def _stability(eig: Tensor, kind: str, margin: float) -> tuple[str, float, int]:
    """(label, spectral radius or max real part, eigenvalues on the unstable side)."""
    if kind == "map":
        mag = eig.abs()
        big, small = mag > 1 + margin, mag < 1 - margin
        top = float(mag.max())
    else:
        re_ = eig.real
        big, small = re_ > margin, re_ < -margin
        top = float(re_.max())
    if bool(small.all()):
        label = "stable"
    elif bool(big.all()):
        label = "unstable"
    elif bool(big.any()):
        label = "saddle"
    else:
        label = "marginal"
    return label, top, int(big.sum())


def fixed_points(
    step_fn: Callable[[Tensor], Tensor],
    *,
    dim: Optional[int] = None,
    starts: Optional[Tensor] = None,
    n_starts: int = 64,
    scale: float = 1.0,
    kind: str = "map",
    tol: Optional[float] = None,
    dedup: float = 1e-3,
    max_iter: int = 100,
    margin: float = 1e-6,
    seed: int = 0,
    dtype: Optional[torch.dtype] = None,
) -> DynamicsResult:
    """Fixed points of a recurrent cell F (h = F(h)), each with its Jacobian's eigenvalues.

    Minimises q(h) = ½||F(h) - h||² (``kind="flow"``: ½||F(h)||², the zeros of a vector field
    dh/dt = F(h)) from many starts at once, each start on its own, by damped Gauss-Newton
    (Levenberg-Marquardt) steps h <- h - (JᵀJ + λ s I)^-1 Jᵀ r with r = F(h) - h, J = dF/dh - I
    from torch autograd, λ shrinking after a step that lowers q and growing after one that does
    not (gradient descent far from a fixed point, Newton's method near one; at most ``max_iter``
    steps). Converged candidates, with ||F(h) - h|| <= tol * max(1, ||h||) (``tol`` defaults to
    1e-6 for float32 states, 1e-9 for float64: about ten times the rounding of F(h) - h), are
    merged when closer than ``dedup * max(1, ||h||)``; each fixed point gets the Jacobian of F
    there (``torch.autograd.functional.jacobian``), its eigenvalues and a label: for a map,
    "stable" (every |lambda| < 1), "unstable" (every |lambda| > 1), "saddle" (some of each), else
    "marginal" (some |lambda| within ``margin`` of 1); for a flow the same with Re lambda vs 0.

    Args:
        step_fn: F, mapping a batch of states [n, d] to [n, d], each row on its own (e.g. ACT's
            cell at a fixed input: ``lambda s: model.cell_step(x.expand(len(s), -1), s)``; the gain
            circuit's Euler step). Its parameters are not changed and get no gradient.
        dim / starts: the state size with random starts (``n_starts`` of them, N(0, scale²)), or
            the starts themselves [n, d] (e.g. states visited in a rollout).
        dtype: of the random starts (default: float32, or float64 when F only takes that).

    A cell with a slow manifold (a saturated GRU gate: F(h) ~ h far from the data) has many
    near-fixed points there; start from states the model visits (``starts=rollout_states(...)``
    flattened to [n, d]) to find the ones that matter. ``meta["start_residuals"]`` keeps
    ||F(h) - h|| of every start after optimisation (slow points have small, nonzero values).

    Returns:
        ``DynamicsResult``: one row per fixed point: ``residual`` (||F(h) - h||), ``norm``, ``starts``
        (how many starts converged to it), ``spectral_radius`` (map) or ``max_real`` (flow),
        ``unstable_directions``, ``stability``. ``tables["eigenvalues"]`` one row per eigenvalue;
        ``meta["points"]`` [k, d] and ``meta["jacobians"]`` [k, d, d] (numpy).
    """
    if kind not in ("map", "flow"):
        raise ValueError(f"kind={kind!r}; allowed: 'map' (h = F(h)) or 'flow' (F(h) = 0)")
    if starts is None:
        if dim is None:
            raise ValueError("give dim (the state size) or starts [n, d]")
        dtype = dtype or _probe_dtype(step_fn, dim)
        gen = torch.Generator().manual_seed(seed)
        starts = scale * torch.randn(n_starts, dim, generator=gen, dtype=torch.float64).to(dtype)
    else:
        starts = torch.as_tensor(starts)
        if starts.ndim != 2:
            raise ValueError(f"starts must be [n, d]; got {list(starts.shape)}")
        if not torch.is_floating_point(starts):
            starts = starts.to(dtype or torch.get_default_dtype())
    n, d = starts.shape

    def residual(h: Tensor) -> Tensor:
        out = step_fn(h)
        if out.shape != h.shape:
            raise ValueError(f"step_fn must map [n, {d}] to [n, {d}]; got {list(out.shape)}")
        return out - h if kind == "map" else out

    if tol is None:  # about the precision F can be evaluated to
        tol = 1e-6 if starts.dtype in (torch.float32, torch.float16, torch.bfloat16) else 1e-9
    eye = torch.eye(d, dtype=starts.dtype)
    with torch.no_grad():
        h = starts.detach().clone()
        r = residual(h)
    cost = r.pow(2).sum(-1)
    lam = torch.full((n,), 1e-3, dtype=torch.float64)
    J = torch.zeros(n, d, d, dtype=h.dtype)
    stale = torch.ones(n, dtype=torch.bool)  # rows whose Jacobian must be (re)computed
    done = lambda: torch.isfinite(cost) & (cost.sqrt() <= tol * h.norm(dim=-1).clamp_min(1.0))  # noqa: E731
    for _ in range(max_iter):
        active = ~done() & (lam < 1e12) & torch.isfinite(cost)
        if not bool(active.any()):
            break
        idx = active.nonzero()[:, 0]
        fresh = idx[stale[idx]]
        if len(fresh):
            Jf = _row_jacobians(step_fn, h[fresh])
            J[fresh] = Jf - eye if kind == "map" else Jf
            stale[fresh] = False
        Ja, ra = J[idx], r[idx]
        Jt = Ja.transpose(1, 2)
        H, g = Jt @ Ja, (Jt @ ra[..., None])[..., 0]
        scale_ = H.diagonal(dim1=1, dim2=2).mean(-1).clamp_min(1e-12)
        damped = H + (lam[idx].to(H.dtype) * scale_)[:, None, None] * eye
        try:
            step = torch.linalg.solve(damped, g[..., None])[..., 0]
        except RuntimeError:  # a singular row: least squares for this round
            step = torch.linalg.lstsq(damped, g[..., None]).solution[..., 0]
        new = h[idx] - step
        with torch.no_grad():
            r_new = residual(new)
        c_new = r_new.pow(2).sum(-1)
        ok = torch.isfinite(c_new) & (c_new < cost[idx])
        acc = idx[ok]
        h[acc], r[acc], cost[acc] = new[ok], r_new[ok], c_new[ok]
        stale[acc] = True
        lam[idx] = torch.where(ok, (lam[idx] / 3).clamp_min(1e-12), lam[idx] * 4)
    res = cost.sqrt()
    ok = done()
    order = torch.argsort(torch.where(ok, res, torch.full_like(res, float("inf"))))
    points, counts, resid = [], [], []
    for i in order.tolist():
        if not bool(ok[i]):
            break
        for j, p in enumerate(points):
            if float((h[i] - p).norm()) <= dedup * max(1.0, float(p.norm())):
                counts[j] += 1
                break
        else:
            points.append(h[i])
            counts.append(1)
            resid.append(float(res[i]))
    rows, eig_rows, jacobians = [], [], []
    if points:
        P_ = torch.stack(points)
        J = _row_jacobians(step_fn, P_)
        for k, (p, c, r) in enumerate(zip(points, counts, resid)):
            eig = torch.linalg.eigvals(J[k].double())
            label, top, n_bad = _stability(eig, kind, margin)
            rows.append({"point": k, "residual": r, "norm": float(p.norm()), "starts": c,
                         ("spectral_radius" if kind == "map" else "max_real"): top,
                         "unstable_directions": n_bad, "stability": label, "status": "ok"})
            for i, lam in enumerate(eig.tolist()):
                eig_rows.append({"point": k, "index": i, "real": lam.real, "imag": lam.imag, "abs": abs(lam),
                                 "stability": label})
            jacobians.append(J[k].numpy())
    cols = ["point", "residual", "norm", "starts", "spectral_radius" if kind == "map" else "max_real",
            "unstable_directions", "stability", "status"]
    df = pd.DataFrame(rows, columns=cols)
    meta = {"kind": kind, "starts": int(n), "converged": int(ok.sum()), "tol": tol, "dedup": dedup,
            "points": (torch.stack(points).numpy() if points else np.zeros((0, d))),
            "jacobians": np.stack(jacobians) if jacobians else np.zeros((0, d, d)),
            "start_residuals": res.numpy()}
    eig_cols = ["point", "index", "real", "imag", "abs", "stability"]
    return DynamicsResult("fixed_points", df, "residual", meta,
                          {"eigenvalues": pd.DataFrame(eig_rows, columns=eig_cols)})


def _row_jacobians(step_fn, h: Tensor) -> Tensor:
    """[n, d, d]: the Jacobian of F at every row of h, from one Jacobian of sum_i F(h)_i."""
    from torch.autograd.functional import jacobian

    f = lambda x: step_fn(x).sum(0)  # noqa: E731
    try:  # all d output rows in one batched backward
        J = jacobian(f, h.detach(), vectorize=True)  # [d_out, n, d_in]
    except RuntimeError:  # a step function that vmap cannot batch: one backward per output row
        J = jacobian(f, h.detach())
    return J.permute(1, 0, 2).detach()
