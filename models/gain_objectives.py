"""The objectives the gains of ``models.gain.GainCircuit`` minimise (see that module's docstring):
the fidelity objective (the error of the best affine decoder of the stimulus from noisy responses,
plus an activity cost) and the homeostatic one (mean rates only), as functions of responses."""

from __future__ import annotations

import math

import torch
from torch import Tensor


def stimulus_code(orientations: Tensor) -> Tensor:
    """x(s) = (cos 2s, sin 2s), the stimulus on the circle (orientation is 180-periodic): [K] deg -> [K, 2]."""
    t = torch.deg2rad(2.0 * orientations)
    return torch.stack([torch.cos(t), torch.sin(t)], -1)


def weighted_cov(a: Tensor, b: Tensor, p: Tensor) -> Tensor:
    """Covariance of the columns of ``a`` [K, d] and ``b`` [K, e] under probabilities ``p`` [K]: [d, e]."""
    return (a - p @ a).T @ ((b - p @ b) * p[:, None])


def decoding_error(R: Tensor, p: Tensor, x: Tensor, noise_cov: Tensor) -> Tensor:
    """Mean squared error of the best affine decoder of ``x`` from noisy responses ``R`` + noise.

    R: [K, n] noise-free responses to K stimuli of probabilities ``p`` [K]; x: [K, d] the target;
    noise_cov: [n, n] covariance of zero-mean response noise, independent of the stimulus.
    Returns tr[C_xx - C_xr (C_rr + noise_cov)^{-1} C_rx] (a scalar tensor): tr C_xx for a response
    that does not vary with the stimulus, less the more the responses say about x.
    """
    Cxx, Cxr, Crr = weighted_cov(x, x, p), weighted_cov(x, R, p), weighted_cov(R, R, p)
    return torch.trace(Cxx) - torch.trace(Cxr @ torch.linalg.solve(Crr + noise_cov, Cxr.T))


def fidelity_loss(R: Tensor, p: Tensor, x: Tensor, noise_cov: Tensor, alpha: float) -> Tensor:
    """The fidelity objective of responses ``R`` [K, n]: decoding_error + alpha * E_p[sum_i r_i^2]."""
    return decoding_error(R, p, x, noise_cov) + alpha * (p @ R.pow(2)).sum()


def homeostatic_loss(R: Tensor, p: Tensor, alpha: float, energy: float = 0.0) -> Tensor:
    """The homeostatic objective of responses ``R`` [K, n]: alpha sum rbar - sum log rbar (+ energy/2 E sum r^2).

    It sees the mean rates rbar = p @ R only; +inf if one is <= 0.
    """
    rbar = p @ R
    if (rbar <= 0).any():
        return torch.tensor(math.inf, dtype=R.dtype)
    loss = alpha * rbar.sum() - torch.log(rbar).sum()
    if energy:
        loss = loss + 0.5 * energy * (p @ R.pow(2)).sum()
    return loss
