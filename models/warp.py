"""WARP: a weight-space linear RNN whose hidden state is the weights of a small MLP.

Method, as in "Weight-Space Linear Recurrent Neural Networks" (arXiv 2506.01153):

1. **State = weights.** theta_t in R^D is the flattened weights and biases of a small
   "root" MLP (``root_depth`` hidden layers of ``root_width`` units).
2. **Linear recurrence on input differences.** theta_t = A theta_{t-1} + B (u_t - u_{t-1}),
   with A (D x D) initialised to the identity and B (D x d_in) to zero, so at
   initialisation theta stays at theta_0. theta_0 = phi(u_0) from a small hypernetwork
   (``init="hyper"``) or a learned vector (``init="learned"``). A = I + a_scale * A_raw,
   divided by its largest singular value whenever that exceeds 1 (``a_stable``; our
   addition: a free A grew past spectral radius 1 in training and rollouts diverged).
3. **Self-decoding.** Step t runs the root MLP with weights theta_t at the coordinate
   tau = (t + 1) / (seq_len - 1) of the value it predicts (u_{t+1}; classifiers use
   tau = t / (seq_len - 1)), optionally with a sinusoidal encoding of tau
   (``tau_freqs``) and the current input u_t (``root_takes_x``). Heads: a regression
   mean (optionally mean + std, Gaussian NLL) and classification logits (cross-entropy on
   the last step only).
4. **Two execution modes, the same numbers.** ``mode="parallel"`` unrolls the linear
   recurrence into a convolution: theta_t = A^t theta_0 + sum_s A^(t-s) B du_s. The
   kernel A^k [W_phi | b_phi | B] does not depend on the batch (built by doubling: log2 T
   matrix products), the sum over s is an FFT convolution, and all theta_t are decoded
   at once. ``mode="recurrent"`` steps through time one position at a time, so it can
   feed its own predictions back (autoregressive forecasting / completion) and every step
   has its own hook points.
5. **WARP-Phys** (``physics``): the root's output is replaced by a physical formula whose
   parameters come from theta_t. ``"sine"``: u = sin(2 pi tau + phi_hat(tau)).
   ``"msd"``: the root outputs (m, c, k), each within e^(+-phys_bound) of ``phys_scales``,
   and the prediction is one explicit Euler step of m x'' + c x' + k x = 0 from the
   current state u_t = (x, v) with step ``dt``.
6. **Autoregressive training with scheduled teacher forcing**: ``loss(batch)`` with a
   ``feed`` mask feeds the truth where the mask is True and the model's own prediction
   elsewhere (``models.warp_data`` draws the mask; the truth is fed with a probability
   that decays from 1 to ``forcing_min``).

Hook names (recurrent mode; ``t`` = time step, ``l`` = hidden layer of the root)::

    time.{t}.hook_input          u_t fed at step t (truth or own prediction) [batch, d_in]
    time.{t}.hook_dx             u_t - u_{t-1} (0 at t = 0)                   [batch, d_in]
    time.{t}.hook_theta          theta_t, the root's weights                  [batch, D]
    time.{t}.root.hook_in        root input (tau features, u_t)               [batch, n_in]
    time.{t}.root.layers.{l}.hook_pre / hook_post   root hidden layer l, before / after
                                 the activation                                [batch, width]
    time.{t}.root.hook_out       raw root output                               [batch, n_out]
    time.{t}.hook_phys           physical parameters (phi_hat, or m, c, k)     [batch, p]
    time.{t}.hook_output         prediction of u_{t+1} (fed back when generating) [batch, d_in]
    time.{t}.hook_std / hook_logits                                           [batch, d_in / classes]

Parallel mode has the same names under ``parallel.`` with the time axis second, e.g.
``parallel.hook_theta`` [batch, T, D]. Patching ``time.{t}.hook_theta`` in recurrent mode
changes theta_{t+1}, theta_{t+2}, ... through A (and, when generating, every later input):
the **total** effect of theta_t. Patching ``parallel.hook_theta`` changes only the outputs
decoded from the patched steps, since the trajectory was already computed: the
**direct** effect.

The root MLP (its hooks, heads and ``RootNetwork``) is in ``models.warp_root``; the output,
input checks, rollout plan and loss shared with the GRU baseline are in ``models.warp_io``.

>>> model = Warp(WarpConfig(d_in=2, physics="msd", seq_len=128))
>>> out = model(x)                                   # x: [batch, T, 2]; recurrent mode
>>> out.mean.shape, out.thetas.shape                 # [batch, T, 2], [batch, T, D]
>>> gen = model(x[:, :32], context=32, horizon=96)   # forecast 96 steps from 32
>>> f = model.root_at(40, x)                         # root MLP at step 40: f(tau, u) -> u_next
>>> model.decode_theta(out.thetas[:, 40], 127, x[:, 127])["mean"]   # theta_40's forecast at step 127
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Optional

import torch
from torch import Tensor, nn

from models.warp_io import WarpOutput, check_sequence, rollout_plan, sequence_loss
from models.warp_join import JoinedOutput
from models.warp_root import ACTIVATIONS, RootHooks, RootNetwork, StepHooks, head, root_init, tau_features
from workbench.hooks import HookedRecurrentModule, LoopState, hook_list, joining_rows
from workbench.inputs import (MAX_ELEMENTS, MAX_HOOKS, MAX_STEPS, InputTypeError, bool_field, check_budget, check_int,
                              choice_field, describe, float_field, int_field, type_field)

PHYSICS = ("none", "sine", "msd")
PHYS_PARAMS = {"none": (), "sine": ("phi",), "msd": ("m", "c", "k")}
INITS = ("hyper", "learned")
MODES = ("recurrent", "parallel")


# ---------------------------------------------------------------------- config
@dataclass
class WarpConfig:
    d_in: int = 1  # dimensions of the input / predicted value
    regress: bool = True  # predict the next input (forecasting, completion)
    n_classes: int = 0  # > 0: classification logits (trained on the last step)
    gaussian: bool = False  # regression mean + std, trained with the Gaussian NLL
    # the root MLP whose weights are the state
    root_width: int = 16
    root_depth: int = 2  # hidden layers
    root_act: str = "tanh"
    tau_freqs: int = 0  # sin/cos(2 pi k tau), k = 1..tau_freqs, added to the root input
    root_takes_x: bool = False  # the root also reads the current input u_t
    # theta_0
    init: str = "hyper"  # "hyper": phi(u_0); "learned": one vector
    hyper_hidden: int = 0  # hidden units of phi (0: theta_0 is affine in u_0)
    # WARP-Phys
    physics: str = "none"
    dt: float = 1 / 64  # Euler step of physics="msd"
    phys_scales: tuple[float, ...] = ()  # typical size of each physical parameter (msd: m, c, k)
    phys_bound: float = 1.5  # each physical parameter stays within scale * e^(+-phys_bound)
    a_scale: float = 0.1  # A = I + a_scale * A_raw: the step size of A relative to lr
    a_stable: bool = True  # divide A by its largest singular value when that exceeds 1
    # sequence length: tau = t / (seq_len - 1); hook points exist for seq_len steps
    seq_len: int = 128
    std_min: float = 1e-3
    cls_weight: float = 1.0  # weight of the classification loss when both heads train
    task: dict = field(default_factory=dict)  # the task trained on

    def __post_init__(self):
        for name in ("d_in", "root_width"):
            int_field(self, name, 1)
        for name in ("n_classes", "tau_freqs", "hyper_hidden"):
            int_field(self, name, 0)
        int_field(self, "root_depth", 0, MAX_STEPS)
        int_field(self, "seq_len", 2, MAX_STEPS)
        for name in ("regress", "gaussian", "root_takes_x", "a_stable"):
            bool_field(self, name)
        for name in ("dt", "phys_bound", "a_scale", "std_min"):
            float_field(self, name, 0.0, lo_open=True)
        float_field(self, "cls_weight", 0.0)
        type_field(self, "task", dict, "a dict (the task trained on)")
        if isinstance(self.phys_scales, (str, bytes)) or not isinstance(self.phys_scales, (tuple, list)) or not all(
                isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v) and v > 0
                for v in self.phys_scales):
            raise InputTypeError(f"WarpConfig.phys_scales={self.phys_scales!r}; allowed: a list of positive finite "
                                 "numbers (msd: m, c, k)")
        self.phys_scales = tuple(float(s) for s in self.phys_scales)
        choice_field(self, "root_act", tuple(ACTIVATIONS))
        choice_field(self, "physics", PHYSICS)
        choice_field(self, "init", INITS)
        if not (self.regress or self.n_classes):
            raise ValueError("the model needs a head: regress=True and/or n_classes > 0")
        if self.physics != "none":
            need = {"sine": 1, "msd": 2}[self.physics]
            if self.d_in != need or not self.regress or self.n_classes:
                raise ValueError(f"physics={self.physics!r} predicts a state of {need} dims: needs d_in={need}, "
                                 f"regress=True, n_classes=0 (got d_in={self.d_in}, regress={self.regress}, "
                                 f"n_classes={self.n_classes})")
        if self.physics == "msd":
            if not self.phys_scales:
                self.phys_scales = (1.0, 1.0, 1.0)
            if len(self.phys_scales) != 3 or min(self.phys_scales) <= 0:
                raise ValueError(f"phys_scales={self.phys_scales}: physics='msd' needs 3 positive scales (m, c, k)")
        # the transition A is D x D (and its largest singular value is computed on every forward)
        D, n_feat = self.d_theta, self.hyper_hidden or self.d_in
        params = 2 * D * D + D * (self.d_in + n_feat + 1) + self.hyper_hidden * (self.d_in + 1)
        check_budget(self, f"parameters (2 * D^2 + ... with D = d_theta = {D:,}, the root's weights)", params,
                     MAX_ELEMENTS, "root_width, root_depth, tau_freqs, d_in or n_classes")
        check_budget(self, "hook points ((seq_len + 1) * (2 * root_depth + 9))",
                     (self.seq_len + 1) * (2 * self.root_depth + 9), MAX_HOOKS, "seq_len or root_depth")

    @property
    def n_root_in(self) -> int:
        return 1 + 2 * self.tau_freqs + (self.d_in if self.root_takes_x else 0)

    @property
    def n_root_out(self) -> int:
        if self.physics == "sine":
            return 1 + self.gaussian
        if self.physics == "msd":
            return 3 + 2 * self.gaussian
        return (self.d_in * (1 + self.gaussian) if self.regress else 0) + self.n_classes

    @property
    def layer_sizes(self) -> list[tuple[int, int]]:
        """(out, in) of every root layer."""
        dims = [self.n_root_in] + [self.root_width] * self.root_depth + [self.n_root_out]
        return [(o, i) for i, o in zip(dims[:-1], dims[1:])]

    @property
    def d_theta(self) -> int:
        """D, the size of the state: every weight and bias of the root."""
        return sum(o * i + o for o, i in self.layer_sizes)

    @property
    def tau_shift(self) -> int:
        """Regression outputs are decoded at the coordinate of the value they predict."""
        return 1 if self.regress else 0


def causal_conv(K: Tensor, e: Tensor) -> Tensor:
    """sum_{s <= t} K[t - s] @ e[:, s] by FFT: K [n, D, r], e [batch, n, r] -> [batch, n, D].

    The transforms run over the last (contiguous) axis; zero padding to 2n makes the
    convolution linear rather than circular.
    """
    n, L = e.shape[1], 2 * e.shape[1]
    Kf = torch.fft.rfft(K.permute(1, 2, 0), n=L)  # [D, r, F]
    Xf = torch.fft.rfft(e.transpose(1, 2), n=L)  # [batch, r, F]
    out = torch.fft.irfft(torch.einsum("Ddf,bdf->bDf", Kf, Xf), n=L)[..., :n]  # [batch, D, n]
    return out.transpose(1, 2).contiguous()  # one copy, so the decoder reads contiguous weights


# ----------------------------------------------------------------------- model
class Warp(HookedRecurrentModule):
    """WARP with per-step hook points; see the module docstring."""

    def __init__(self, cfg: WarpConfig):
        super().__init__()
        self.cfg = cfg
        D, d = cfg.d_theta, cfg.d_in
        self.layout = []  # (start, out, in) of each root layer inside theta
        at = 0
        for o, i in cfg.layer_sizes:
            self.layout.append((at, o, i))
            at += o * i + o
        self.split_sizes = [n for o, i in cfg.layer_sizes for n in (o * i, o)]
        # A = I + a_scale * A_raw with A_raw = 0 at init. Adam moves each entry of A_raw by
        # about lr per step; a_scale keeps A's steps small (a D x D matrix whose entries all
        # move by lr shifts eigenvalues by up to lr * D, and theta_t sees A^t).
        self.A_raw = nn.Parameter(torch.zeros(D, D))
        self.register_buffer("eye", torch.eye(D), persistent=False)
        self.B = nn.Parameter(torch.zeros(D, d))
        if cfg.init == "learned":
            self.theta0 = nn.Parameter(root_init(cfg))
        else:
            n_feat = cfg.hyper_hidden or d
            self.hyper_in = nn.Linear(d, cfg.hyper_hidden) if cfg.hyper_hidden else None
            self.hyper_W = nn.Parameter(torch.randn(D, n_feat) * 0.01)
            self.hyper_b = nn.Parameter(root_init(cfg))
        self.time = hook_list(cfg.seq_len, lambda: StepHooks(cfg.root_depth))
        self.parallel = StepHooks(cfg.root_depth)
        self.setup()

    # --- pieces ---------------------------------------------------------------
    @property
    def A(self) -> Tensor:
        """The transition matrix [D, D]: M = I + a_scale * A_raw, divided by its largest singular
        value sigma when sigma > 1 (``a_stable``), so that theta_t cannot grow geometrically.

        Without gradients it is computed once per value of ``A_raw`` (its eigendecomposition costs
        as much as a fifth of a short run) and kept while A_raw holds the same numbers, compared
        exactly on every call: any change (an optimiser step, a loaded state dict, a write
        through ``.data``) recomputes it.
        """
        if torch.is_grad_enabled():  # (a kept tensor could not be saved for a backward through it)
            return self._transition()
        raw, settings = self.A_raw.detach(), (self.cfg.a_scale, self.cfg.a_stable)
        kept = self.__dict__.get("_A_kept")  # (A_raw's numbers, settings, A)
        if kept is None or kept[1] != settings or kept[0].dtype != raw.dtype or kept[0].device != raw.device \
                or not torch.equal(kept[0], raw):
            kept = self.__dict__["_A_kept"] = (raw.clone(), settings, self._transition())
        return kept[2]

    def _transition(self) -> Tensor:
        M = self.eye + self.cfg.a_scale * self.A_raw
        if not self.cfg.a_stable:
            return M
        # the exact largest singular value (a power iteration would not separate the many
        # singular values near 1 of a matrix near I; an SVD may fail to converge on them)
        sigma = torch.linalg.eigvalsh(M.T @ M)[-1].sqrt()
        if sigma <= 1 + 1e-6:  # (the identity at initialisation stays exactly the identity)
            return M
        return M / sigma

    def tau(self, t: Tensor | int) -> Tensor:
        """Decoding coordinate of step t."""
        return (torch.as_tensor(t, dtype=self.B.dtype) + self.cfg.tau_shift) / (self.cfg.seq_len - 1)

    def _hyper_features(self, u0: Tensor) -> Tensor:
        return torch.tanh(self.hyper_in(u0)) if self.hyper_in is not None else u0

    def theta_init(self, u0: Tensor) -> Tensor:
        """theta_0 for inputs u0 [batch, d_in]: [batch, D]."""
        if self.cfg.init == "learned":
            return self.theta0.expand(u0.shape[0], -1)
        return self._hyper_features(u0) @ self.hyper_W.T + self.hyper_b

    def _root(self, theta: Tensor, h: Tensor, hooks: Optional[RootHooks] = None) -> Tensor:
        """Run the root MLP whose weights are theta [..., D] on inputs h [..., n_in] (hooks: none when None)."""
        h = hooks.hook_in(h) if hooks is not None else h
        act = ACTIVATIONS[self.cfg.root_act]
        last = len(self.layout) - 1
        lead = h.shape[:-1]
        # one split (not a slice per tensor): its backward writes one gradient, not one per piece
        pieces = theta.split(self.split_sizes, dim=-1)
        points = hooks.points() if hooks is not None else None
        for l, (_, o, i) in enumerate(self.layout):
            # b + W h for every row at once: one batched product on views of theta (a small step's
            # cost is its operator calls, and matmul would add broadcasting and reshapes around it)
            W, b = pieces[2 * l].reshape(-1, o, i), pieces[2 * l + 1].reshape(-1, o, 1)
            h = torch.baddbmm(b, W, h.reshape(-1, i, 1)).view(*lead, o)
            if l < last:
                h = act(h) if points is None else points[l][1](act(points[l][0](h)))
        return hooks.hook_out(h) if hooks is not None else h

    def _decode(self, theta: Tensor, tau: Tensor, u: Tensor, hooks: StepHooks) -> dict:
        h = tau_features(self.cfg, tau)
        if self.cfg.root_takes_x:
            h = torch.cat([h, u], dim=-1)
        return head(self.cfg, self._root(theta, h, hooks.root), tau, u, hooks)

    def kernel(self, n: int) -> Tensor:
        """K_k = A^k M for k = 0..n-1 with M = [theta_0 part | B]: [n, D, r], independent of the batch.

        Computed by doubling (K_{m..2m-1} = A^m K_{0..m-1}, A^m by squaring): log2(n) large
        matrix products instead of n matrix-vector products, which also backpropagates faster.
        """
        if self.cfg.init == "learned":
            M = torch.cat([self.theta0[:, None], self.B], dim=1)
        else:
            M = torch.cat([self.hyper_W, self.hyper_b[:, None], self.B], dim=1)
        D, r = M.shape
        K, power = M[None], self.A
        while K.shape[0] < n:
            m = K.shape[0]
            nxt = (power @ K.permute(1, 0, 2).reshape(D, m * r)).reshape(D, m, r).permute(1, 0, 2)
            K = torch.cat([K, nxt])
            if K.shape[0] < n:
                power = power @ power
        return K[:n]

    def decode_theta(self, theta: Tensor, t: int, u: Optional[Tensor] = None) -> dict:
        """Every head of the root networks with weights theta [batch, D], read at step t's coordinate
        tau(t) on the inputs u [batch, d_in]: ``{"mean": [batch, d_in], "logits": [batch, classes], ...}``.

        Batched and without hooks (the iteration lens decodes every theta_s at one query). At the
        theta_t and u_t of a recurrent run it equals step t's outputs.
        """
        cfg = self.cfg
        if not isinstance(theta, Tensor) or theta.ndim != 2 or theta.shape[1] != cfg.d_theta:
            raise ValueError(f"theta must be [batch, {cfg.d_theta}]; got {describe(theta)}")
        check_int(t, "t", 0, cfg.seq_len - 1, " (a time step of this model)")
        needs_u = cfg.root_takes_x or cfg.physics == "msd"
        if needs_u and (not isinstance(u, Tensor) or u.shape != (theta.shape[0], cfg.d_in)):
            raise ValueError(f"this root reads the current input: give u [batch={theta.shape[0]}, {cfg.d_in}]; "
                             f"got {describe(u)}")
        tau = self.tau(t).to(theta).expand(theta.shape[0])
        h = tau_features(cfg, tau)
        if cfg.root_takes_x:
            h = torch.cat([h, u.to(theta)], dim=-1)
        return head(cfg, self._root(theta, h), tau, u.to(theta) if u is not None else None)

    # --- the two modes --------------------------------------------------------
    def _parallel(self, x: Tensor) -> dict:
        hooks = self.parallel
        batch, n, _ = x.shape
        u = hooks.hook_input(x)
        dx = hooks.hook_dx(torch.cat([torch.zeros_like(u[:, :1]), u[:, 1:] - u[:, :-1]], dim=1))
        # theta_t = sum_s K_{t-s} e_s: theta_0's features enter as an impulse at s = 0, then du_s
        if self.cfg.init == "learned":
            impulse = u.new_ones(batch, 1)
        else:  # theta_0 = W_phi z + b_phi
            z = self._hyper_features(u[:, 0])
            impulse = torch.cat([z, u.new_ones(batch, 1)], dim=1)
        impulse = torch.cat([impulse[:, None], impulse.new_zeros(batch, n - 1, impulse.shape[1])], dim=1)
        theta = hooks.hook_theta(causal_conv(self.kernel(n), torch.cat([impulse, dx], dim=2)))
        tau = self.tau(torch.arange(n)).to(x.device).expand(batch, n)
        return {"thetas": theta, "inputs": u, **self._decode(theta, tau, u, hooks)}

    def _recurrent(self, x: Tensor, feed: Optional[Tensor], start: Optional[LoopState] = None,
                   join: Optional[Callable[[int], Optional[Tensor]]] = None) -> WarpOutput | JoinedOutput:
        n = x.shape[1]
        At, Bt = self.A.T, self.B.T
        steps: list[dict] = []
        theta = u_prev = fed_back = None
        t0 = 0
        if start is not None and start.t > 0:  # continue a recorded run: steps < t0 come from its record
            t0, theta, u_prev = start.t, start.carry["theta"], start.carry["u"]
            steps = [{k: v[s] for k, v in start.record.items()} for s in range(t0)]
            fed_back = steps[-1].get("mean")
        step_hooks, taus = list(self.time), self.tau(torch.arange(n)).to(x.device)  # once, not per step
        joins: list[tuple[int, int, Tensor]] = []  # (step, rows before, the rows copied) of each join
        batch, rows_in = len(x), None  # rows_in: once rows joined, the input row each batch row reads
        for t in range(t0, n):
            rows = joining_rows(join, batch, t) if join is not None else None
            if rows is not None:
                joins.append((t, batch, rows))
                rows_in = torch.cat([torch.arange(batch), rows]) if rows_in is None else \
                    torch.cat([rows_in, rows_in.index_select(0, rows)])
                # (the last prediction only matters where it is fed back)
                grow = (theta, u_prev) + ((fed_back,) if feed is not None else ())
                theta, u_prev, *rest = (None if v is None else torch.cat([v, v.index_select(0, rows)]) for v in grow)
                fed_back = rest[0] if rest else None
                batch += len(rows)
            hooks = step_hooks[t]
            u = x[:, t] if rows_in is None else x[:, t].index_select(0, rows_in)
            if feed is not None and t > 0:
                fed = feed[:, t] if rows_in is None else feed[:, t].index_select(0, rows_in)
                u = torch.where(fed[:, None], u, fed_back)
            u = hooks.hook_input(u)
            if t == 0:
                dx = hooks.hook_dx(torch.zeros_like(u))
                theta = self.theta_init(u) + dx @ Bt
            else:
                dx = hooks.hook_dx(u - u_prev)
                theta = (theta @ At).addmm_(dx, Bt)  # theta A^T + dx B^T, added in place: one pass less over the batch
            theta = hooks.hook_theta(theta)
            dec = self._decode(theta, taus[t].expand(batch), u, hooks)
            steps.append({"thetas": theta, "inputs": u, **dec})
            u_prev, fed_back = u, dec.get("mean")
        if join is not None:
            return JoinedOutput(steps, joins, WarpOutput)
        return WarpOutput(**{k: torch.stack([s[k] for s in steps], dim=1) for k in steps[0]})

    def forward(self, x: Tensor, mode: str = "recurrent", context: Optional[int] = None,
                horizon: Optional[int] = None, feed: Optional[Tensor] = None,
                start: Optional[LoopState] = None,
                join: Optional[Callable[[int], Optional[Tensor]]] = None) -> WarpOutput | JoinedOutput:
        """Run WARP over a sequence.

        Args:
            x: [batch, T, d_in] inputs (all of them when teacher-forced; with ``context``
                only the first ``context`` are read). Floating, finite, batch >= 1,
                1 <= T <= seq_len; any float dtype is accepted and cast to the model's
                (float32 unless converted). Bad inputs raise a ``ValueError`` naming the
                argument (a wrong type or dtype: ``workbench.inputs.InputTypeError``).
            mode: ``"recurrent"`` (step by step, per-step hooks) or ``"parallel"``
                (convolution + batched decoding, ``parallel.*`` hooks; teacher-forced only).
            context, horizon: generate ``horizon`` values after the first ``context``
                inputs, feeding predictions back (recurrent mode). ``out.mean[:, context-1:]``
                is the forecast of x[:, context : context + horizon].
            feed: [batch, T] bool, True = feed the truth, False = the previous prediction
                (scheduled teacher forcing; recurrent mode).
            start: continue a recorded recurrent run of the same arguments from
                ``resume_state(cache, t)`` (theta_{t-1} and the record of steps < t).
            join: ``join(t) -> rows`` (recurrent mode), called at the start of every time step
                t: the batch grows by copies of those rows (a [k] index into the batch as it
                is at t, or None), which run on from step t with the rows' state; in the
                output a copy's steps < t are those of the row it copied. Patching runs each
                patched copy from its own step this way, all in one forward. The output is
                then a ``JoinedOutput``: its fields (``out.mean``) are those of a
                ``WarpOutput`` of the final batch, and ``out.output_rows(a, b)`` is the
                ``WarpOutput`` of rows a..b-1 alone.
        """
        if not isinstance(mode, str) or mode not in MODES:
            raise ValueError(f"mode={mode!r}; allowed: {MODES}")
        x = check_sequence(x, self.cfg.d_in, self.cfg.seq_len if context is None else 10**9, dtype=self.B.dtype)
        planned, planned_feed = rollout_plan(x, context, horizon, feed, self.cfg.seq_len)  # checks context / feed
        generating = context is not None or (feed is not None and not bool(feed.all()))
        if generating and not self.cfg.regress:
            raise ValueError("feeding predictions back needs a regression head (regress=True)")
        x, feed = planned, planned_feed
        if mode == "parallel":
            if feed is not None and not bool(feed.all()):
                raise ValueError("mode='parallel' is teacher-forced; generation (context / feed) needs mode='recurrent'")
            if start is not None:
                raise ValueError("start= resumes a recurrent run; mode='parallel' has no loop to resume")
            if join is not None:
                raise ValueError("join= grows a recurrent run; mode='parallel' has no loop to join")
            return WarpOutput(**self._parallel(x))
        if start is not None:
            if not isinstance(start, LoopState):
                raise InputTypeError("start must be a LoopState from resume_state(cache, t); "
                                     f"got {type(start).__name__}")
            if not 0 <= start.t <= x.shape[1]:
                raise ValueError(f"start.t={start.t} is out of range; allowed 0..{x.shape[1]} (time steps)")
        if join is not None and not callable(join):
            raise InputTypeError(f"join must be a function of the time step; got {type(join).__name__}")
        return self._recurrent(x, feed, start, join)

    # --- resuming a recorded run (recurrent mode) -------------------------------
    resume_loop = "time"
    resume_settles = False  # theta is continuous: a patched copy does not return to the recorded run

    def joins(self, forward_kwargs: dict) -> bool:
        """Whether a forward with these keyword arguments takes ``join=`` (a recurrent run)."""
        return forward_kwargs.get("mode", "recurrent") == "recurrent" and "start" not in forward_kwargs

    def _record_hooks(self) -> dict[str, str]:
        """What a recurrent run returns per step -> the hook that records it."""
        keys = {"thetas": "hook_theta", "inputs": "hook_input"}
        cfg = self.cfg
        if cfg.physics != "none" or cfg.regress:
            keys["mean"] = "hook_output"
            if cfg.gaussian:
                keys["std"] = "hook_std"
        if cfg.physics == "none" and cfg.n_classes:
            keys["logits"] = "hook_logits"
        if cfg.physics != "none":
            keys["phys"] = "hook_phys"
        return keys

    def resume_names(self, t: int, inner: int = 0) -> list[str]:
        """The hooks that ``resume_state(cache, t)`` reads (all of steps < t)."""
        return [f"time.{s}.{h}" for s in range(t) for h in self._record_hooks().values()]

    def resume_state(self, cache, t: int, inner: int = 0) -> LoopState:
        """The state entering time step t of the recurrent run recorded in ``cache``: theta_{t-1} and
        u_{t-1} (and the prediction fed back at t, when there is one), the outputs of steps < t."""
        if inner:
            raise ValueError("WARP has no inner loop to resume in; inner must be 0")
        record = {k: [cache[f"time.{s}.{h}"] for s in range(t)] for k, h in self._record_hooks().items()}
        if t == 0:
            return LoopState(0, {}, record)
        carry = {"theta": record["thetas"][-1], "u": record["inputs"][-1]}
        if "mean" in record:  # generation feeds the last prediction back
            carry["mean"] = record["mean"][-1]
        return LoopState(t, carry, record)

    @torch.no_grad()
    def generate(self, prefix: Tensor, horizon: int) -> Tensor:
        """Forecast ``horizon`` values after ``prefix`` [batch, C, d_in]: [batch, horizon, d_in]."""
        prefix = check_sequence(prefix, self.cfg.d_in, self.cfg.seq_len, "prefix", dtype=self.B.dtype)
        check_int(horizon, "horizon", 1, None, " (values to generate after the prefix)")
        out = self(prefix, context=prefix.shape[1], horizon=horizon)
        return out.mean[:, prefix.shape[1] - 1:]

    # --- the root as an ordinary network --------------------------------------
    def root_from_theta(self, theta: Tensor) -> RootNetwork:
        return RootNetwork(self.cfg, theta.detach())

    @torch.no_grad()
    def root_at(self, t: int, x: Tensor, sample: int = 0, **run) -> RootNetwork:
        """The root network at step t of the run on x (recurrent mode): ``f(tau, u)``.

        ``f(model.tau(t), out.inputs[sample, t])`` equals ``out.mean[sample, t]``; other tau
        values query the same weights elsewhere in time (the paper's gradient-free
        test-time adaptation).
        """
        check_int(t, "t", 0)
        check_int(sample, "sample", 0)
        out = self(x, mode="recurrent", **run)
        if not 0 <= t < out.steps:
            raise ValueError(f"t={t} is out of range: the run has steps 0..{out.steps - 1}")
        if not 0 <= sample < out.thetas.shape[0]:
            raise ValueError(f"sample={sample} is out of range: the batch has {out.thetas.shape[0]} sequences")
        return self.root_from_theta(out.thetas[sample, t])

    # --- loss -----------------------------------------------------------------
    def loss(self, batch: dict) -> tuple[Tensor, dict]:
        """Training loss. batch: ``x`` [B, T, d_in], optional ``feed`` [B, T] bool and
        ``label`` [B] long. Teacher-forced batches run in parallel mode."""
        x, feed = batch["x"], batch.get("feed")
        teacher = feed is None or bool(feed.all())
        out = self(x, mode="parallel") if teacher else self(x, mode="recurrent", feed=feed)
        return sequence_loss(self.cfg, out, batch)

    # --- spectrum and config --------------------------------------------------
    def spectrum(self) -> Tensor:
        """Eigenvalues of A (complex) [D]."""
        return torch.linalg.eigvals(self.A.detach().double())

    def config_dict(self) -> dict:
        return asdict(self.cfg)

    @classmethod
    def from_config(cls, config: dict) -> "Warp":
        return cls(WarpConfig(**config))
