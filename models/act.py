"""Adaptive Computation Time RNN (Graves 2016, "Adaptive Computation Time for Recurrent
Neural Networks", arXiv 1603.08983).

Method, per input step t and ponder step n = 1, 2, ... (code counts n from 0):

1. **Pondering.** s_t^n = S(s_t^{n-1}, x_t^n) with s_t^0 = s_{t-1}; the ponder input
   x_t^n is x_t plus one binary flag that is 1 on the FIRST ponder step only. S is a
   tanh RNN, GRU or LSTM cell (``cell``); an LSTM's state is [hidden, cell] and both are
   averaged below.
2. **Halting.** y_t^n = W_y s_t^n + b_y and h_t^n = sigmoid(W_h s_t^n + b_h) (read from
   the hidden part of the state). N(t) = min{n' : sum_{n<=n'} h_t^n >= 1 - eps}, capped at
   ``max_ponder`` (M). Remainder R(t) = 1 - sum_{n<N(t)} h_t^n. Weights p_t^n = h_t^n
   for n < N(t) and p_t^{N(t)} = R(t); they sum to 1.
3. **Mean field.** s_t = sum_n p_t^n s_t^n and y_t = sum_n p_t^n y_t^n; s_t starts the
   next input step.
4. **Ponder cost.** P = sum_t (N(t) + R(t)); loss = task loss + tau * P. N(t) is
   piecewise constant, so only R(t) carries gradient (dP/dh_t^n = -1 for n < N(t)).

Halting bias: Graves suggests a positive initial b_h. With +1, h starts at 0.73 for
every input, so N(t) = 2 everywhere from the start and the ponder cost only pushes it
lower; a 2026 study (arXiv 2604.21999) reports most runs collapsing to shallow pondering
with a bias of 0 or +1. ``halt_bias_init`` defaults to -2 (h ~ 0.12, about 8 ponder steps
at the start), which leaves the task loss room to decide how long to ponder. W_h starts
at zero, so every input starts with the same h: an input whose first h reaches 1 - eps
halts at once, and then that h is never used and gets no gradient, so it could never
learn to ponder longer.

Batched inference: every sample halts on its own. After a sample halts, later ponder
steps skip it (the cell runs on the samples still pondering only), its weight p is 0,
and its state is frozen, so a sample's result never depends on the other samples in
its batch. Steps masked out (padding at the end of shorter sequences) run no ponder
step at all: N = R = 0 there.

``act=False`` is the baseline of the paper: a fixed ``fixed_steps`` ponder steps per
input (flag on the first), the last one's state and output taken (p = 1 on it, so
N = fixed_steps and R = 1 in the hooks); the halting unit exists but is unused.

Hook names (``t`` = input step, ``n`` = ponder step from 0)::

    time.{t}.ponder.{n}.hook_input       ponder input x_t^n with the flag   [batch, input_size + 1]
    time.{t}.ponder.{n}.hook_state       s_t^n                              [batch, state_size]
    time.{t}.ponder.{n}.hook_output      y_t^n (pre-sigmoid/softmax)        [batch, output_size]
    time.{t}.ponder.{n}.hook_halt_logit  W_h s_t^n + b_h                    [batch]
    time.{t}.ponder.{n}.hook_halt        h_t^n (0 for samples not pondering) [batch]
    time.{t}.ponder.{n}.hook_cum_halt    sum_{n'<=n} h_t^n'                 [batch]
    time.{t}.ponder.{n}.hook_weight      p_t^n (0 for samples not pondering) [batch]
    time.{t}.hook_state                  mean-field state s_t                [batch, state_size]
    time.{t}.hook_output                 mean-field output y_t               [batch, output_size]
    time.{t}.hook_n_steps                N(t) (long)                         [batch]
    time.{t}.hook_remainder              R(t)                                [batch]
    time.{t}.hook_ponder_cost            N(t) + R(t)                         [batch]

A ponder step's hooks fire only while at least one sample of the batch still ponders;
in rows that halted earlier, ``hook_state``/``hook_output`` hold the frozen values and
h = p = 0. Patching ``hook_halt_logit`` (or ``hook_halt``) at a ponder step changes
when that sample halts, and so how long it ponders.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from workbench.hooks import HookedRecurrentModule, HookName, HookPoint, LoopState, hook_list, joining_rows
from workbench.inputs import (MAX_ELEMENTS, MAX_HOOKS, MAX_STEPS, InputTypeError, bool_field, check_budget,
                              check_tensor, choice_field, float_field, int_field, type_field)

CELLS = ("rnn", "gru", "lstm")
OUTPUTS = ("binary", "classes")


# ---------------------------------------------------------------------- config
@dataclass
class ACTConfig:
    input_size: int = 16
    output_size: int = 1  # "binary": 1 logit; "classes": groups * n_classes logits
    output: str = "binary"
    n_classes: int = 11  # classes per output group ("classes" only)
    hidden: int = 128
    cell: str = "rnn"
    act: bool = True  # False: the fixed-steps baseline
    fixed_steps: int = 1  # ponder steps per input when act=False
    max_ponder: int = 20  # the cap M on N(t); hook points are built for this many ponder steps
    eps: float = 0.01
    tau: float = 1e-3  # time penalty on the ponder cost
    halt_bias_init: float = -2.0
    max_time: int = 1  # hook points are built for this many input steps
    task_name: str = "parity"
    task: dict = field(default_factory=dict)  # the task config trained on

    def __post_init__(self):
        for name in ("input_size", "output_size", "n_classes", "hidden"):
            int_field(self, name, 1)
        for name in ("fixed_steps", "max_ponder", "max_time"):
            int_field(self, name, 1, MAX_STEPS)
        float_field(self, "eps", 0.0, 1.0, lo_open=True, hi_open=True)
        float_field(self, "tau", 0.0)
        float_field(self, "halt_bias_init")
        bool_field(self, "act")
        type_field(self, "task_name", str, "a task name such as 'parity' or 'addition'")
        type_field(self, "task", dict, "a dict (the task config trained on)")
        choice_field(self, "cell", CELLS)
        choice_field(self, "output", OUTPUTS)
        if self.output == "binary" and self.output_size != 1:
            raise ValueError(f"output='binary' needs output_size=1; got {self.output_size}")
        if self.output == "classes" and (self.n_classes < 2 or self.output_size % self.n_classes):
            raise ValueError(f"output='classes' needs output_size a multiple of n_classes={self.n_classes} >= 2; "
                             f"got output_size={self.output_size}")
        if not 0 < self.eps < 1:
            raise ValueError(f"eps={self.eps} must be in (0, 1)")
        if self.max_ponder < 1 or self.max_time < 1 or self.hidden < 1 or self.input_size < 1:
            raise ValueError("max_ponder, max_time, hidden and input_size must be >= 1")
        if not 1 <= self.fixed_steps <= self.max_ponder:
            raise ValueError(f"fixed_steps={self.fixed_steps} must be in 1..max_ponder={self.max_ponder}")
        if self.tau < 0:
            raise ValueError(f"tau={self.tau} must be >= 0")
        gates = {"rnn": 1, "gru": 3, "lstm": 4}[self.cell]
        h = self.hidden
        params = gates * h * (self.input_size + 1 + h + 2) + (h + 1) * (self.output_size + 1)
        check_budget(self, "parameters of the cell, readout and halting unit", params, MAX_ELEMENTS,
                     "hidden, input_size or output_size")
        check_budget(self, "hook points (max_time * (7 * max_ponder + 5))", self.max_time * (7 * self.max_ponder + 5),
                     MAX_HOOKS, "max_time or max_ponder")

    @property
    def state_size(self) -> int:
        return 2 * self.hidden if self.cell == "lstm" else self.hidden


# ------------------------------------------------------- halting arithmetic
def halt_step(cum: Tensor, h: Tensor, running: Tensor, n: int, eps: float, max_ponder: int):
    """The halting rule for one ponder step ``n`` (counted from 0), per sample.

    Args:
        cum: [batch] sum of h over the earlier ponder steps of this input step.
        h: [batch] this step's halting probability.
        running: [batch] bool, samples that take this ponder step.
    Returns:
        (p, halts, cum_new): p [batch] the mean-field weight of this step (h, or the
        remainder R = 1 - cum where the sample halts, 0 where it does not run);
        halts [batch] bool, samples whose N(t) = n + 1; cum_new [batch].
    """
    halts = running & ((cum + h >= 1 - eps) | (n + 1 >= max_ponder))
    p = torch.where(halts, 1 - cum, torch.where(running, h, torch.zeros_like(h)))
    return p, halts, torch.where(running, cum + h, cum)


def halting_schedule(h: Tensor, eps: float = 0.01, max_ponder: Optional[int] = None):
    """N, R and the weights p for whole sequences of halting probabilities.

    h: [..., n_steps] (``max_ponder`` defaults to n_steps). Returns (N [...] long,
    R [...], p [..., n_steps]); p is 0 after step N. Same rule as ``halt_step``.
    """
    M = h.shape[-1] if max_ponder is None else max_ponder
    cum = torch.zeros(h.shape[:-1], dtype=h.dtype)
    running = torch.ones(h.shape[:-1], dtype=torch.bool)
    N = torch.zeros(h.shape[:-1], dtype=torch.long)
    R = torch.zeros(h.shape[:-1], dtype=h.dtype)
    ps = []
    for n in range(min(M, h.shape[-1])):
        p, halts, new_cum = halt_step(cum, h[..., n], running, n, eps, M)
        N = torch.where(halts, n + 1, N)
        R = torch.where(halts, 1 - cum, R)
        ps.append(p)
        cum, running = new_cum, running & ~halts
    p = torch.stack(ps, -1)
    return N, R, F.pad(p, (0, h.shape[-1] - p.shape[-1]))


# ------------------------------------------------------------- per-step hooks
class PonderHooks(nn.Module):
    def __init__(self):
        super().__init__()
        self.hook_input, self.hook_state, self.hook_output = HookPoint(), HookPoint(), HookPoint()
        self.hook_halt_logit, self.hook_halt, self.hook_cum_halt = HookPoint(), HookPoint(), HookPoint()
        self.hook_weight = HookPoint()


class TimeHooks(nn.Module):
    def __init__(self, max_ponder: int):
        super().__init__()
        self.ponder = hook_list(max_ponder, PonderHooks)
        self.hook_state, self.hook_output = HookPoint(), HookPoint()
        self.hook_n_steps, self.hook_remainder, self.hook_ponder_cost = HookPoint(), HookPoint(), HookPoint()


@dataclass
class ACTOutput:
    """What a run returns. T = input steps."""

    outputs: Tensor  # [batch, T, output_size] mean-field outputs y_t (logits)
    n_steps: Tensor  # [batch, T] long, N(t) (0 on masked steps)
    remainder: Tensor  # [batch, T] R(t)
    state: Tensor  # [batch, state_size] the last mean-field state

    @property
    def ponder_cost(self) -> Tensor:
        """[batch, T] N(t) + R(t)."""
        return self.n_steps + self.remainder


# ----------------------------------------------------------------------- model
class ACT(HookedRecurrentModule):
    """An RNN that ponders each input for an adaptive number of steps.

    >>> model = ACT(ACTConfig(input_size=16, hidden=128))
    >>> out = model(x)                  # x: [batch, T, 16] float
    >>> out.outputs[:, -1, 0] > 0       # parity prediction; out.n_steps: ponder steps
    """

    def __init__(self, cfg: ACTConfig):
        super().__init__()
        self.cfg = cfg
        cell = {"rnn": nn.RNNCell, "gru": nn.GRUCell, "lstm": nn.LSTMCell}[cfg.cell]
        self.cell = cell(cfg.input_size + 1, cfg.hidden)  # +1: the first-step flag
        self.readout = nn.Linear(cfg.hidden, cfg.output_size)
        self.halt = nn.Linear(cfg.hidden, 1)
        # W_h starts at zero: every input starts with the same h = sigmoid(b_h), so no input
        # halts at its first ponder step by accident (an h_t^1 >= 1 - eps gets no gradient)
        nn.init.zeros_(self.halt.weight)
        nn.init.constant_(self.halt.bias, cfg.halt_bias_init)
        self.time = hook_list(cfg.max_time, lambda: TimeHooks(cfg.max_ponder))
        self.setup()

    # --- one ponder step -------------------------------------------------------
    def cell_step(self, x: Tensor, s: Tensor) -> Tensor:
        """S(s, x): x [b, input_size + 1], s [b, state_size] -> [b, state_size]."""
        if self.cfg.cell == "lstm":
            H = self.cfg.hidden
            return torch.cat(self.cell(x, (s[:, :H], s[:, H:])), dim=1)
        return self.cell(x, s)

    def hidden_of(self, s: Tensor) -> Tensor:
        return s[:, : self.cfg.hidden]

    # --- one input step ----------------------------------------------------------
    def ponder(self, x: Tensor, s: Tensor, t: int, running: Tensor, first: int = 0, past: Optional[dict] = None,
               join: Optional[Callable[[int, int, Tensor], Optional[Tensor]]] = None):
        """Ponder on input x_t [B, input_size] from state s_{t-1} [B, state_size].

        running: [B] bool, samples with a real input at this step. Returns the
        mean-field state and output, N(t) and R(t), after the time-step hooks.
        ``first`` > 0 resumes at ponder step ``first``: the earlier ponder steps are not run but
        replayed from ``past`` (their recorded ``states``, ``outputs`` and ``halts``), which
        gives the same halting arithmetic, weights and sums as the recorded run.
        ``join(t, n, running)``: rows of the batch to append as copies at the start of ponder
        step n (``forward``'s ``join``, after it grew its own record).
        """
        cfg, hooks = self.cfg, self.time[t]
        B = x.shape[0]
        steps = cfg.max_ponder if cfg.act else cfg.fixed_steps
        start = s
        cum = x.new_zeros(B)
        N = torch.zeros(B, dtype=torch.long, device=x.device)
        R = x.new_zeros(B)
        s_mean = x.new_zeros(B, cfg.state_size)
        y_mean = x.new_zeros(B, cfg.output_size)
        for n in range(steps):
            if not bool(running.any()):
                break
            if n < first:  # replayed from the record of a run resumed at ponder step ``first``
                s, y = past["states"][n], past["outputs"][n]
                if cfg.act:
                    p, halts, cum_new = halt_step(cum, past["halts"][n], running, n, cfg.eps, cfg.max_ponder)
                    R = torch.where(halts, 1 - cum, R)
                    cum = cum_new
                else:
                    halts = running & (n + 1 == steps)
                    p = halts.to(x.dtype)
                    R = torch.where(halts, torch.ones_like(R), R)
                s_mean = s_mean + p[:, None] * s
                y_mean = y_mean + p[:, None] * y
                N = torch.where(halts, n + 1, N)
                running = running & ~halts
                continue
            rows = join(t, n, running) if join is not None else None
            if rows is not None:  # copies of these rows run on from here
                grown = torch.cat([torch.arange(B, device=x.device), rows.to(x.device)])
                x, s, start, cum, N, R, s_mean, y_mean, running = (
                    v.index_select(0, grown) for v in (x, s, start, cum, N, R, s_mean, y_mean, running))
                B = x.shape[0]
            ph = hooks.ponder[n]
            flag = x.new_full((B, 1), 1.0 if n == 0 else 0.0)
            x_n = ph.hook_input(torch.cat([x, flag], dim=1))
            if bool(running.all()):
                s = self.cell_step(x_n, s)
            else:  # only the samples still pondering take the step; the others stay frozen
                idx = running.nonzero().squeeze(1)
                s = s.index_copy(0, idx, self.cell_step(x_n.index_select(0, idx), s.index_select(0, idx)))
            s = ph.hook_state(s)
            y = ph.hook_output(self.readout(self.hidden_of(s)))
            if cfg.act:
                logit = ph.hook_halt_logit(self.halt(self.hidden_of(s)).squeeze(1))
                h = ph.hook_halt(torch.where(running, torch.sigmoid(logit), torch.zeros_like(logit)))
                p, halts, new_cum = halt_step(cum, h, running, n, cfg.eps, cfg.max_ponder)
                R = torch.where(halts, 1 - cum, R)
                cum = ph.hook_cum_halt(new_cum)
            else:
                halts = running & (n + 1 == steps)
                p = halts.to(x.dtype)
                R = torch.where(halts, torch.ones_like(R), R)
            p = ph.hook_weight(p)
            s_mean = s_mean + p[:, None] * s
            y_mean = y_mean + p[:, None] * y
            N = torch.where(halts, n + 1, N)
            running = running & ~halts
        N = hooks.hook_n_steps(N)
        R = hooks.hook_remainder(R)
        hooks.hook_ponder_cost(N + R)
        ran = N > 0
        s_mean = hooks.hook_state(torch.where(ran[:, None], s_mean, start))
        y_mean = hooks.hook_output(y_mean)
        return s_mean, y_mean, N, R

    # --- the loop ----------------------------------------------------------------
    def forward(self, inputs: Tensor, mask: Optional[Tensor] = None, start: Optional[LoopState] = None,
                join: Optional[Callable[..., Optional[Tensor]]] = None) -> ACTOutput:
        """Run over a batch of input sequences.

        Args:
            inputs: [batch, T, input_size] float, 1 <= T <= max_time, batch >= 1, finite; any
                floating dtype is accepted and cast to the model's (float32 unless converted).
            mask: [batch, T] bool, True at real steps (default: all). A sequence's real
                steps must come first; masked steps are skipped (no pondering).
            start: continue a recorded run of the same inputs from ``resume_state(cache, t, n)``.
            join: ``join(t, n, running=mask) -> rows``, called at the start of every ponder step n
                of input step t that runs (``mask``: [batch] bool, the rows that take it): None, or
                a [k] long index of rows of the batch as it stands, whose copies are appended and
                run on from there (their record before is the row's). Patching runs its base runs
                and every patched copy in one forward with it.

        Bad inputs raise a ``ValueError`` naming the argument and what is allowed (a wrong type
        or dtype: ``workbench.inputs.InputTypeError``, also a ``TypeError``).
        """
        inputs = self._check_inputs(inputs, mask)
        B, T, _ = inputs.shape
        if mask is None:
            mask = torch.ones(B, T, dtype=torch.bool, device=inputs.device)
        s = inputs.new_zeros(B, self.cfg.state_size)
        outputs, Ns, Rs = [], [], []
        t0, first, past = 0, 0, None
        if join is not None:
            if not callable(join):
                raise InputTypeError(f"join must be a function of (input step, ponder step, running=rows); "
                                     f"got {type(join).__name__}")
            if start is not None:
                raise ValueError("join= grows a run from its input; it does not combine with start=")

        def joined(t: int, n: int, running: Tensor) -> Optional[Tensor]:  # the record so far grows with the copies
            nonlocal inputs, mask
            rows = joining_rows(join, inputs.shape[0], t, n, running=running)
            if rows is not None:
                grown = torch.cat([torch.arange(inputs.shape[0], device=inputs.device), rows.to(inputs.device)])
                inputs, mask = inputs.index_select(0, grown), mask.index_select(0, grown)
                for record in (outputs, Ns, Rs):
                    record[:] = [v.index_select(0, grown) for v in record]
            return rows

        if start is not None:
            t0, first, past = self._resume(start, T)
            if t0 > 0:
                s = start.carry["s"]
                outputs, Ns, Rs = (list(start.record[k]) for k in ("outputs", "n_steps", "remainder"))
        for t in range(t0, T):
            s, y, N, R = self.ponder(inputs[:, t], s, t, mask[:, t], first, past, joined if join is not None else None)
            first, past = 0, None
            outputs.append(y)
            Ns.append(N)
            Rs.append(R)
        return ACTOutput(torch.stack(outputs, 1), torch.stack(Ns, 1), torch.stack(Rs, 1), s)

    # --- resuming a recorded run ---------------------------------------------------
    resume_loop, resume_inner = "time", "ponder"
    resume_settles = False  # a continuous state: a patched copy does not return to the recorded run

    def joins(self, forward_kwargs: dict) -> bool:
        """Whether a forward with these keyword arguments takes ``join=`` (not a resumed one)."""
        return "start" not in forward_kwargs

    def hook_rows(self, out: ACTOutput, name: str) -> Tensor:
        """[batch] bool: the rows of ``out`` whose run reaches hook ``name``. A run of any set of
        these rows fires the hook exactly when one of them reaches it: ponder step n of input
        step t while N(t) > n; the hooks of input step t itself always."""
        idx = HookName.parse(name).indices
        t, n = idx.get("time"), idx.get("ponder")
        steps = out.n_steps
        if t is None or t >= steps.shape[1]:
            return torch.zeros(steps.shape[0], dtype=torch.bool, device=steps.device)
        return steps[:, t] > n if n is not None else torch.ones(steps.shape[0], dtype=torch.bool, device=steps.device)

    def resume_names(self, t: int, inner: int = 0) -> list[str]:
        """The hooks that ``resume_state(cache, t, inner)`` reads (input steps < t; ponder steps
        < ``inner`` of step t)."""
        names = [f"time.{s}.{h}" for s in range(t) for h in ("hook_output", "hook_n_steps", "hook_remainder")]
        if t > 0:
            names.append(f"time.{t - 1}.hook_state")
        per_ponder = ("hook_state", "hook_output") + (("hook_halt",) if self.cfg.act else ())
        return names + [f"time.{t}.ponder.{n}.{h}" for n in range(inner) for h in per_ponder]

    def resume_state(self, cache, t: int, inner: int = 0) -> LoopState:
        """The state entering input step t (at ponder step ``inner``) of the run recorded in ``cache``."""
        step = lambda s, h: cache[f"time.{s}.{h}"]  # noqa: E731
        record = {"outputs": [step(s, "hook_output") for s in range(t)],
                  "n_steps": [step(s, "hook_n_steps") for s in range(t)],
                  "remainder": [step(s, "hook_remainder") for s in range(t)]}
        carry = {"s": step(t - 1, "hook_state")} if t > 0 else {}
        if inner:
            ponder = lambda h: [cache[f"time.{t}.ponder.{n}.{h}"] for n in range(inner)]  # noqa: E731
            record["ponder"] = {"states": ponder("hook_state"), "outputs": ponder("hook_output")}
            if self.cfg.act:
                record["ponder"]["halts"] = ponder("hook_halt")
        return LoopState(t, carry, record, inner)

    def _resume(self, start: LoopState, T: int) -> tuple[int, int, Optional[dict]]:
        """(input step, ponder step, replayed ponder record) a run continues from; checks ``start``."""
        if not isinstance(start, LoopState):
            raise InputTypeError(f"start must be a LoopState from resume_state(cache, t); got {type(start).__name__}")
        if not 0 <= start.t <= T:
            raise ValueError(f"start.t={start.t} is out of range; allowed 0..T={T} (input steps)")
        if start.inner and (start.t >= T or not 0 <= start.inner < self.cfg.max_ponder):
            raise ValueError(f"start.inner={start.inner} is out of range at start.t={start.t}")
        return start.t, start.inner, start.record.get("ponder") if start.inner else None

    def _check_inputs(self, inputs: Tensor, mask: Optional[Tensor]) -> Tensor:
        """Refuse bad inputs and return them in the model's dtype (see ``workbench.inputs``): a
        floating tensor [batch, T, input_size] (any float dtype, cast to the parameters'), finite,
        1 <= T <= max_time, batch >= 1; ``mask`` a bool tensor [batch, T]."""
        n = self.cfg.input_size
        inputs = check_tensor(inputs, "inputs", ("batch", "T", (str(n), n)), dtype=self.readout.weight.dtype)
        self.check_steps(inputs.shape[1], loop="time", param="T (input steps)")
        if mask is not None:
            B, T = inputs.shape[:2]
            check_tensor(mask, "mask", (("batch", B), ("T", T)), kind="bool", note=f" = {[B, T]}")
        return inputs

    # --- loss ----------------------------------------------------------------------
    def task_loss(self, out: ACTOutput, targets: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """Per-sequence task loss [batch] (summed over steps) and per-step errors [batch, T].

        targets: "binary" [batch, T] in {0, 1}; "classes" [batch, T, groups] long.
        """
        m = mask.to(out.outputs.dtype)
        if self.cfg.output == "binary":
            logits = out.outputs[..., 0]
            loss = F.binary_cross_entropy_with_logits(logits, targets.to(logits.dtype), reduction="none")
            wrong = (logits > 0).long() != targets.long()
        else:
            B, T, _ = out.outputs.shape
            logits = out.outputs.view(B, T, -1, self.cfg.n_classes)
            loss = F.cross_entropy(logits.flatten(0, 2), targets.flatten(), reduction="none").view(B, T, -1).sum(-1)
            wrong = (logits.argmax(-1) != targets).any(-1)
        return (loss * m).sum(1), wrong & mask

    def loss(self, batch: dict) -> tuple[Tensor, dict]:
        """Task loss + tau * ponder cost, both summed over a sequence and averaged over the batch.

        batch: ``inputs`` [B, T, input_size], ``targets``, ``mask`` [B, T] bool.
        """
        mask = batch["mask"]
        out = self(batch["inputs"], mask)
        task, wrong = self.task_loss(out, batch["targets"], mask)
        ponder = (out.ponder_cost * mask).sum(1)
        loss = task.mean() + (self.cfg.tau * ponder.mean() if self.cfg.act else 0.0)
        steps = mask.sum()
        stats = {
            "task_loss": float(task.detach().mean()),
            "seq_error": float(wrong.any(1).float().mean()),
            "ponder": float(out.n_steps.sum() / steps),
        }
        return loss, stats

    # --- config round trip ----------------------------------------------------------
    def config_dict(self) -> dict:
        return asdict(self.cfg)

    @classmethod
    def from_config(cls, config: dict) -> "ACT":
        return cls(ACTConfig(**config))
