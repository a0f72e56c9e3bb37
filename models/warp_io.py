"""What WARP (``models.warp``) and its GRU baseline (``models.gru``) share about sequences: the
run's output, the checks of an input batch, the plan of a rollout (given context, generated
horizon, or a teacher-forcing mask) and the training loss."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from workbench.inputs import check_int, check_tensor


@dataclass
class WarpOutput:
    """A run over n steps. Step t read ``inputs[:, t]`` and predicts the input of step t + 1."""

    thetas: Tensor  # [batch, n, D]
    inputs: Tensor  # [batch, n, d_in] what was fed (truth or own predictions)
    mean: Optional[Tensor] = None  # [batch, n, d_in]
    std: Optional[Tensor] = None  # [batch, n, d_in]
    logits: Optional[Tensor] = None  # [batch, n, n_classes]; only the last step is trained
    phys: Optional[Tensor] = None  # [batch, n, p] physical parameters (WARP-Phys)

    @property
    def steps(self) -> int:
        return self.thetas.shape[1]


def check_sequence(x: Tensor, d_in: int, seq_len: int, name: str = "x", dtype: Optional[torch.dtype] = None) -> Tensor:
    """Refuse a bad sequence batch and return it in ``dtype`` (``workbench.inputs.check_tensor``).

    Allowed: a floating tensor [batch, time, d_in] (any float dtype, cast to ``dtype``: the
    model's), batch >= 1, 1 <= time <= seq_len, no NaN / inf.
    """
    x = check_tensor(x, name, ("batch", "time", (f"d_in={d_in}", d_in)), dtype=dtype)
    if x.shape[1] > seq_len:
        raise ValueError(f"{name} has {x.shape[1]} time steps; this model supports at most seq_len={seq_len}")
    return x


def rollout_plan(x: Tensor, context: Optional[int], horizon: Optional[int], feed: Optional[Tensor],
                 seq_len: int) -> tuple[Tensor, Optional[Tensor]]:
    """Inputs [batch, n, d] and feed mask [batch, n] (True = feed the truth) of a rollout.

    ``context`` C with ``horizon`` H: the first C inputs are given, H values are
    generated (n = C + H - 1 steps). ``feed``: an explicit mask over x's steps (step 0 is
    always fed the truth).
    """
    if context is not None and feed is not None:
        raise ValueError("give either context (with horizon) or feed, not both")
    if context is None:
        if horizon is not None:
            raise ValueError("horizon needs a context")
        if feed is not None:
            B, T = x.shape[:2]
            check_tensor(feed, "feed", (("batch", B), ("time", T)), kind="bool", note=f" = {(B, T)}")
        return x, feed
    C = check_int(context, "context", 1, x.shape[1], " (the time steps of x)")
    H = x.shape[1] - C if horizon is None else check_int(horizon, "horizon", 1, None,
                                                          " (values to generate after the context)")
    if H < 1:
        raise ValueError(f"horizon={H} must be >= 1 (values to generate after the context)")
    n = C + H - 1
    if n > seq_len:
        raise ValueError(f"context={C} + horizon={H} - 1 = {n} steps; this model supports at most seq_len={seq_len}")
    given = x[:, :C]
    pad = given.new_zeros(x.shape[0], n - C, x.shape[2])
    mask = torch.zeros(x.shape[0], n, dtype=torch.bool, device=x.device)
    mask[:, :C] = True
    return torch.cat([given, pad], dim=1), mask


def sequence_loss(cfg, out, batch: dict) -> tuple[Tensor, dict]:
    """Next-step regression on every step and/or cross-entropy on the last step.

    Shared by WARP and the GRU baseline (``cfg`` needs ``regress``, ``n_classes``, and
    for the NLL ``gaussian``; ``cls_weight`` weighs the classification term).
    """
    x = batch["x"]
    total, stats = 0.0, {}
    if cfg.regress:
        target, mean = x[:, 1:], out.mean[:, :-1]
        mse = ((mean - target) ** 2).mean()
        stats["mse"] = mse.item()
        if getattr(cfg, "gaussian", False):
            std = out.std[:, :-1]
            nll = (0.5 * ((target - mean) / std) ** 2 + torch.log(std)).mean()
            stats["nll"] = nll.item()
            total = total + nll
        else:
            total = total + mse
    if cfg.n_classes:
        label = batch["label"]
        logits = out.logits[:, -1]
        ce = F.cross_entropy(logits, label)
        stats["ce"] = ce.item()
        stats["acc"] = float((logits.argmax(-1) == label).float().mean())
        total = total + getattr(cfg, "cls_weight", 1.0) * ce
    return total, stats
