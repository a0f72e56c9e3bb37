"""A hooked GRU: the baseline WARP is compared with on the dynamical systems.

h_t = GRUCell(u_t, h_{t-1}) with h_{-1} = 0, prediction of u_{t+1} = W h_t + b. It takes
the same inputs, feed masks and batches as ``models.warp.Warp`` (``forward(x, context=...,
horizon=..., feed=...)``, ``loss(batch)``) and is trained by the same command with
``--arch gru``. "Same size" means about the same number of trainable parameters as the
WARP model it is compared with (``hidden`` is chosen for that; see the model cards).

Hook names (``t`` = time step)::

    time.{t}.hook_input     u_t fed at step t (truth or own prediction)   [batch, d_in]
    time.{t}.hook_hidden    h_t                                           [batch, hidden]
    time.{t}.hook_output    prediction of u_{t+1}                         [batch, d_in]

>>> model = GRU(GRUConfig(d_in=2, hidden=96, seq_len=128))
>>> out = model(x[:, :32], context=32, horizon=96)     # out.mean[:, 31:] is the forecast
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Optional

import torch
from torch import Tensor, nn

from workbench.hooks import HookedRecurrentModule, HookPoint, hook_list
from workbench.inputs import MAX_ELEMENTS, MAX_STEPS, bool_field, check_budget, check_int, int_field, type_field

from .warp import MODES
from .warp_io import WarpOutput, check_sequence, rollout_plan, sequence_loss


@dataclass
class GRUConfig:
    d_in: int = 1
    hidden: int = 64
    seq_len: int = 128  # hook points exist for this many steps
    task: dict = field(default_factory=dict)

    # the loss shared with WARP reads these
    regress: bool = True
    n_classes: int = 0

    def __post_init__(self):
        int_field(self, "d_in", 1)
        int_field(self, "hidden", 1)
        int_field(self, "seq_len", 2, MAX_STEPS)
        int_field(self, "n_classes", 0)
        bool_field(self, "regress")
        type_field(self, "task", dict, "a dict (the task trained on)")
        if not self.regress or self.n_classes:
            raise ValueError("the GRU baseline is a forecaster: regress=True, n_classes=0")
        h = self.hidden
        check_budget(self, "parameters (3 * hidden * (d_in + hidden + 2) + readout)",
                     3 * h * (self.d_in + h + 2) + (h + 1) * self.d_in, MAX_ELEMENTS, "hidden or d_in")


class StepHooks(nn.Module):
    def __init__(self):
        super().__init__()
        self.hook_input, self.hook_hidden, self.hook_output = HookPoint(), HookPoint(), HookPoint()


class GRU(HookedRecurrentModule):
    def __init__(self, cfg: GRUConfig):
        super().__init__()
        self.cfg = cfg
        self.cell = nn.GRUCell(cfg.d_in, cfg.hidden)
        self.readout = nn.Linear(cfg.hidden, cfg.d_in)
        self.time = hook_list(cfg.seq_len, StepHooks)
        self.setup()

    def forward(self, x: Tensor, mode: str = "recurrent", context: Optional[int] = None,
                horizon: Optional[int] = None, feed: Optional[Tensor] = None) -> WarpOutput:
        """Same arguments as ``Warp.forward``; a GRU has only the recurrent mode
        (``mode="parallel"`` is accepted for teacher-forced runs and steps through time too).
        ``out.thetas`` holds the hidden states [batch, n, hidden]. Inputs are checked as
        WARP's are (``check_sequence``): floating [batch, T, d_in], cast to the model's dtype."""
        if not isinstance(mode, str) or mode not in MODES:
            raise ValueError(f"mode={mode!r}; allowed: {MODES}")
        x = check_sequence(x, self.cfg.d_in, self.cfg.seq_len if context is None else 10**9,
                           dtype=self.readout.weight.dtype)
        x, feed = rollout_plan(x, context, horizon, feed, self.cfg.seq_len)
        h = x.new_zeros(x.shape[0], self.cfg.hidden)
        hiddens, inputs, means = [], [], []
        for t in range(x.shape[1]):
            hooks = self.time[t]
            u = x[:, t]
            if feed is not None and t > 0:
                u = torch.where(feed[:, t, None], u, means[-1])
            u = hooks.hook_input(u)
            h = hooks.hook_hidden(self.cell(u, h))
            means.append(hooks.hook_output(self.readout(h)))
            hiddens.append(h)
            inputs.append(u)
        return WarpOutput(thetas=torch.stack(hiddens, 1), inputs=torch.stack(inputs, 1), mean=torch.stack(means, 1))

    @torch.no_grad()
    def generate(self, prefix: Tensor, horizon: int) -> Tensor:
        """Forecast ``horizon`` values after ``prefix`` [batch, C, d_in]: [batch, horizon, d_in]."""
        prefix = check_sequence(prefix, self.cfg.d_in, self.cfg.seq_len, "prefix", dtype=self.readout.weight.dtype)
        check_int(horizon, "horizon", 1, None, " (values to generate after the prefix)")
        out = self(prefix, context=prefix.shape[1], horizon=horizon)
        return out.mean[:, prefix.shape[1] - 1:]

    def loss(self, batch: dict) -> tuple[Tensor, dict]:
        return sequence_loss(self.cfg, self(batch["x"], feed=batch.get("feed")), batch)

    def config_dict(self) -> dict:
        return asdict(self.cfg)

    @classmethod
    def from_config(cls, config: dict) -> "GRU":
        return cls(GRUConfig(**config))


def hidden_for_params(n_params: int, d_in: int) -> int:
    """The GRU hidden size whose parameter count is closest to ``n_params``."""
    def count(h: int) -> int:
        return 3 * (h * d_in + h * h + 2 * h) + h * d_in + d_in

    return min(range(1, 2048), key=lambda h: abs(count(h) - n_params))
