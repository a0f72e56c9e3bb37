"""The recursive latent reasoner: one shared transformer block, applied step after step.

Method, as in "Unlocking Out-of-Distribution Generalization in Transformers via Recursive
Latent Space Reasoning" (arXiv 2510.14095), on the graph-arithmetic task
(``workbench.tasks.graph_arith``):

1. **Input-adaptive recurrence.** A stack of ``n_layers`` blocks is applied T times; T grows
   with the graph's depth (T = the exact algorithm's steps + ``extra_steps`` slack at
   evaluation, so a solved state must be a fixed point). No step index is given to the
   model: every step is the same function of the current state.
2. **Algorithmic supervision.** Step t is trained to produce the exact algorithm's state
   after one more step (values for the slots that become computable), teacher-forced from
   true states. ``scheme`` says how values are written back (see the task module):
   ``"paper"`` (defining slots only) or ``"one_hop"`` (operand slots too, one lookup per step).
3. **Discrete bottleneck.** After each step every factor head takes an argmax and the codes
   are re-embedded as the next step's input (``latent="discrete"``); the factored
   vocabulary is the codebook. ``latent="continuous"`` feeds the final residual stream
   straight back and trains by backprop through ``bptt_steps`` steps.
4. **Error correction.** With probability ``error_prob`` per batch, values computed at the
   previous step are replaced with probability ``error_frac`` by random values; labels stay
   clean, so the model learns to repair them.

End-to-end baselines are switches of the same class: ``supervision="final"`` with
``fixed_steps=4`` (a recurrent model trained on final answers only) or ``fixed_steps=1``
with 8 layers (a feed-forward model).

Positions: attention adds a learned per-head bias of the relative distance, clipped to
``±rel_window`` (as the paper's DeBERTa-style relative positions). No absolute position
enters the model, so longer inputs than in training see no new position features.

Hook names (``t`` = step, ``l`` = layer)::

    steps.{t}.hook_input                         step input (re-embedded codes or fed-back latent)
    steps.{t}.blocks.{l}.hook_resid_pre / hook_resid_mid / hook_resid_post
    steps.{t}.blocks.{l}.attn.hook_q / hook_k / hook_v   [batch, pos, head, d_head]
    steps.{t}.blocks.{l}.attn.hook_attn_scores / hook_pattern   [batch, head, query, key]
    steps.{t}.blocks.{l}.attn.hook_z             [batch, pos, head, d_head]
    steps.{t}.blocks.{l}.hook_attn_out / hook_mlp_out
    steps.{t}.blocks.{l}.mlp.hook_pre / hook_post   MLP hidden before / after GELU
    steps.{t}.hook_resid_final                   residual after the last layer
    steps.{t}.bottleneck.hook_logits             value-factor logits [batch, pos, p + 2]
    steps.{t}.bottleneck.hook_{syntax,variable,op}_logits
    steps.{t}.bottleneck.hook_codes              chosen codes [batch, pos, 4] (int)
    steps.{t}.bottleneck.hook_embed              codes re-embedded (the next step's input)

Patching ``steps.{t}.bottleneck.hook_codes`` sets a variable's value at step t.

The transformer pieces (the hook modules of a step, the factored embedding, attention with its
layout bias, the MLP and the block) are in ``models.reasoner_blocks``.

Resuming: ``resume_state(cache, t)`` rebuilds the state entering step t from a recorded run and
``forward(tokens, steps, start=state)`` continues from it (``workbench.patching``'s prefix reuse).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, field
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models.reasoner_blocks import Block, FactorEmbed, Layout, StepHooks, layout_sets, watched
from workbench.hooks import HookedRecurrentModule, LoopState, hook_list
from workbench.inputs import (MAX_ELEMENTS, MAX_HOOKS, MAX_STEPS, InputTypeError, bool_field, check_budget,
                              check_tensor, choice_field, float_field, int_field, type_field)
from workbench.tasks import graph_arith as ga

LATENTS = ("discrete", "continuous")
SUPERVISIONS = ("algorithmic", "final")


# ---------------------------------------------------------------------- config
@dataclass
class ReasonerConfig:
    # task vocabulary
    modulus: int = 23
    name_pool: int = 128
    # architecture
    d_model: int = 128
    n_layers: int = 2
    n_heads: int = 4
    d_mlp: int = 512
    mlp: str = "gelu"  # "gelu" or "bilinear" ((W_gate x) * (W_in x): products of features in one layer)
    rel_window: int = 64
    segment_window: int = 0  # >0: also a bias per head for the equation distance, clipped (0 = off)
    rel_init: str = "alibi"  # relative-bias start: "zero", "alibi" (-slope*|d|) or "offset" (see Attention)
    # >0: a query that sees n > length_ref keys has its attention logits multiplied by
    # log(n) / log(length_ref), so a lookup keeps its share of attention among more keys than in
    # training (0 = off; no parameters, no change for inputs up to length_ref tokens)
    length_ref: int = 0
    value_init: str = "random"  # "fourier": value embeddings and value readout start as Fourier features of Z_p
    causal: bool = False
    max_steps: int = 64  # hook points are built for this many steps
    max_tokens: int = 4096
    # method switches
    latent: str = "discrete"
    supervision: str = "algorithmic"
    scheme: str = "one_hop"
    fixed_steps: Optional[int] = None  # end-to-end baselines: always this many steps
    extra_steps: int = 2  # evaluation slack beyond the exact algorithm's steps
    # training-time switches (part of the method, so they live with the model)
    error_prob: float = 0.05
    error_frac: float = 0.5
    random_states: float = 0.75
    new_slot_weight: float = 3.0
    bptt_steps: int = 4
    task: dict = field(default_factory=dict)  # the GraphArithConfig trained on

    def __post_init__(self):
        # types and ranges first (workbench.inputs): a wrong type or a size that would exhaust
        # memory stops here with the field's name, before anything is built
        int_field(self, "modulus", 2)
        int_field(self, "name_pool", 1)
        for name in ("d_model", "n_heads", "d_mlp", "max_tokens"):
            int_field(self, name, 1)
        for name in ("rel_window", "segment_window"):
            int_field(self, name, 0)
        int_field(self, "length_ref", 0, self.max_tokens)
        if self.length_ref == 1:
            raise ValueError("length_ref=1 is not allowed: 0 (off) or a token count >= 2 (log(1) = 0)")
        for name in ("n_layers", "max_steps", "bptt_steps"):
            int_field(self, name, 1, MAX_STEPS)
        int_field(self, "extra_steps", 0, MAX_STEPS)
        int_field(self, "fixed_steps", 1, self.max_steps, optional=True)
        for name in ("error_prob", "error_frac", "random_states"):
            float_field(self, name, 0.0, 1.0)
        float_field(self, "new_slot_weight", 0.0)
        bool_field(self, "causal")
        type_field(self, "task", dict, "a dict (the GraphArithConfig trained on)")
        choice_field(self, "latent", LATENTS)
        choice_field(self, "supervision", SUPERVISIONS)
        choice_field(self, "mlp", ("gelu", "bilinear"))
        choice_field(self, "value_init", ("random", "fourier"))
        choice_field(self, "rel_init", ("zero", "alibi", "offset"))
        choice_field(self, "scheme", ga.SCHEMES)
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model={self.d_model} is not divisible by n_heads={self.n_heads}")
        if self.supervision == "final" and not self.fixed_steps:
            raise ValueError("supervision='final' needs fixed_steps (the end-to-end baselines)")
        d, m, h = self.d_model, self.d_mlp, self.n_heads
        per_layer = 4 * (d * d + d) + (3 if self.mlp == "bilinear" else 2) * d * m + m + d + 4 * d \
            + h * (2 * self.rel_window + 1) + h * (2 * self.segment_window + 1)
        vocab = sum(ga.factor_sizes(self.modulus, self.name_pool).values())
        check_budget(self, "parameters (n_layers * per-layer weights + embeddings and heads)",
                     self.n_layers * per_layer + 2 * vocab * d + vocab + 2 * d, MAX_ELEMENTS,
                     "d_model, d_mlp, n_layers, rel_window, segment_window, modulus or name_pool")
        check_budget(self, "hook points (max_steps * (8 + 14 * n_layers))", self.max_steps * (8 + 14 * self.n_layers),
                     MAX_HOOKS, "max_steps or n_layers")

    @property
    def d_head(self) -> int:
        return self.d_model // self.n_heads

    @property
    def factor_sizes(self) -> dict[str, int]:
        return ga.factor_sizes(self.modulus, self.name_pool)

    def steps_for_depth(self, depth: int) -> int:
        """Recurrence steps used at evaluation for a graph of this depth."""
        if self.fixed_steps:
            return self.fixed_steps
        return ga.steps_needed(depth, self.scheme) + self.extra_steps


@dataclass
class ReasonerOutput:
    """What a rollout returns. T = steps run."""

    value_logits: Tensor  # [batch, T, pos, p + 2] value-factor logits at every step
    codes: Tensor  # [batch, T, pos, 4] codes chosen at every step
    logits: dict  # factor -> [batch, pos, classes] at the last step

    @property
    def steps(self) -> int:
        return self.codes.shape[1]

    @property
    def final_codes(self) -> Tensor:
        return self.codes[:, -1]


# ----------------------------------------------------------------------- model
class Reasoner(HookedRecurrentModule):
    """Recurrent transformer over factored tokens, with per-step hook points.

    >>> model = Reasoner(ReasonerConfig())
    >>> out = model(tokens, steps=9)            # tokens: [batch, pos, 4] long
    >>> out.final_codes[..., 3]                 # decoded values [batch, pos]
    """

    def __init__(self, cfg: ReasonerConfig):
        super().__init__()
        self.cfg = cfg
        self.embed = FactorEmbed(cfg)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.ln_final = nn.LayerNorm(cfg.d_model)
        self.heads = nn.ModuleList(nn.Linear(cfg.d_model, n) for n in cfg.factor_sizes.values())
        self.steps = hook_list(cfg.max_steps, lambda: StepHooks(cfg.n_layers))
        # every step's attention score and pattern hooks: sites whose key axis is the problem's length
        self.score_hooks = [h for step in self.steps for b in step.blocks
                            for h in (b.attn.hook_attn_scores, b.attn.hook_pattern)]
        self._fused = False  # see fused_attention()
        if cfg.value_init == "fourier":
            self._fourier_values()
        self.setup()

    @torch.no_grad()
    def _fourier_values(self) -> None:
        """Start value v's embedding and readout row at cos/sin(2 pi k v / p), k = 1..(p-1)/2.

        Modular sums are rotations in this basis; a random start has to discover it first,
        which is the long plateau before multi-operand sums are learned.
        """
        p, d = self.cfg.modulus, self.cfg.d_model
        k = torch.arange(1, (p - 1) // 2 + 1, dtype=torch.float32)
        angle = 2 * torch.pi * torch.arange(p, dtype=torch.float32)[:, None] * k[None] / p  # [p, K]
        feats = torch.cat([angle.cos(), angle.sin()], dim=1)  # [p, 2K]
        if feats.shape[1] > d:
            raise ValueError(f"value_init='fourier' needs d_model >= {feats.shape[1]} for modulus {p}")
        table, head = self.embed.tables[3].weight, self.heads[3].weight  # [p + 2, d] each
        table[:p].zero_()[:, : feats.shape[1]] = feats * (d / feats.shape[1]) ** 0.5
        head[:p].zero_()[:, : feats.shape[1]] = feats / feats.shape[1] ** 0.5

    # --- one step -----------------------------------------------------------
    def layout(self, tokens: Tensor, steps: Optional[int] = None) -> Layout:
        """Attention mask (padding, causal) and equation distances for a batch of tokens.

        ``steps``: the run takes steps 0..steps-1 (default: any), so only their score and pattern
        hooks decide whether the fused kernel may be used."""
        syntax, rows = layout_sets(tokens[..., 0])  # copies of one problem share a layout
        valid = syntax != ga.PAD
        mask = valid[:, None, None, :]
        if self.cfg.causal:
            L = tokens.shape[1]
            mask = mask & torch.ones(L, L, dtype=torch.bool, device=tokens.device).tril()[None, None]
        segment_rel = None
        if self.cfg.segment_window:
            ws = self.cfg.segment_window
            segment = (syntax == ga.SEP).long().cumsum(dim=1)  # equation index of each token
            segment_rel = (segment[:, None, :] - segment[:, :, None]).clamp(-ws, ws) + ws
        watch = self.score_hooks if steps is None else self.score_hooks[: 2 * self.cfg.n_layers * steps]
        fused = self._fused and not any(watched(hook) for hook in watch)
        gain = None
        if self.cfg.length_ref:
            seen = mask.sum(dim=-1, keepdim=True).clamp(min=1).float()
            gain = (seen.log() / math.log(self.cfg.length_ref)).clamp(min=1.0)
        return Layout(mask, segment_rel, fused, rows, gain)

    @contextmanager
    def fused_attention(self) -> Iterator[None]:
        """Runs inside this block take the fused attention kernel unless they watch attention
        scores or patterns: ~1.3x faster, equal to the default path to ~1e-6 but not bit for bit.

        Outside it every run, plain or hooked, takes the same path, so ``model(x)`` and
        ``run_with_hooks(x, ...)`` agree bit for bit. Training, evaluation and probing collection
        use it; patching uses it for its patched copies only (``patching_kernels``)."""
        with self.exclusive():  # a mode of a possibly shared model: other threads wait it out
            before, self._fused = self._fused, True
            try:
                yield
            finally:
                self._fused = before

    def patching_kernels(self):
        """The kernels ``workbench.patching.patch`` runs its patched copies with: fused attention
        when the latent is discrete, else the default path.

        A copy settles when its carry equals the base run's bit for bit, and the base runs take
        the default path. The discrete carry (codes and their embedding) is equal across the two
        kernels whenever the codes are; a continuous carry would never be, so its copies would
        stop settling."""
        return self.fused_attention() if self.cfg.latent == "discrete" else nullcontext()

    def step(self, x: Tensor, t: int, layout: Layout, first_block: int = 0) -> tuple[Tensor, list[Tensor]]:
        """One application of the shared block stack: returns (final residual, factor logits).

        ``first_block`` > 0 resumes inside the step: x is then the residual entering that block.
        """
        hooks = self.steps[t]
        if first_block == 0:
            x = hooks.hook_input(x)
        for block, block_hooks in list(zip(self.blocks, hooks.blocks))[first_block:]:
            x = block(x, block_hooks, layout)
        x = hooks.hook_resid_final(x)
        normed = self.ln_final(x)
        bn = hooks.bottleneck
        names = (bn.hook_syntax_logits, bn.hook_variable_logits, bn.hook_op_logits, bn.hook_logits)
        return x, [hook(head(normed)) for hook, head in zip(names, self.heads)]

    def decode(self, logits: list[Tensor], tokens: Tensor) -> Tensor:
        """Argmax of each factor head; padding stays padding: [batch, pos, 4]."""
        codes = torch.stack([lg.argmax(-1) for lg in logits], dim=-1)
        pad = (tokens[..., 0] == ga.PAD)[..., None]
        return torch.where(pad, tokens, codes)

    # --- the loop -----------------------------------------------------------
    def forward(self, tokens: Tensor, steps: Optional[int] = None, start: Optional[LoopState] = None) -> ReasonerOutput:
        """Roll out the recurrence.

        Args:
            tokens: [batch, pos, 4] int64 factored tokens (``workbench.tasks.graph_arith``):
                batch >= 1, 1 <= pos <= max_tokens, each factor's codes inside its vocabulary
                (``cfg.factor_sizes``), at least one non-padding token per sequence. Other
                integer dtypes are refused, not cast (convert with ``tokens.long()``).
            steps: number of steps, an integer in 1..max_steps; ``None`` runs ``fixed_steps``
                for end-to-end models and otherwise until the codes stop changing (a fixed
                point), at most max_steps.
            start: continue a recorded run of the same tokens from ``resume_state(cache, t)``.

        Bad inputs raise a ``ValueError`` naming the argument and what is allowed (a wrong type
        or dtype: ``workbench.inputs.InputTypeError``, also a ``TypeError``).
        """
        self._check_tokens(tokens)
        if steps is None:
            steps = self.cfg.fixed_steps or self.cfg.max_steps
            until_fixed = not self.cfg.fixed_steps
        else:
            until_fixed = False
        self.check_steps(steps)
        if start is not None and not isinstance(start, LoopState):
            raise InputTypeError(f"start must be a LoopState from resume_state(cache, t); got {type(start).__name__}")
        if start is not None and start.t < 0:
            raise ValueError(f"start.t={start.t} is negative; allowed 0..steps={steps}")
        value_logits, codes_per_step, codes = [], [], tokens
        t0 = 0
        if start is not None and start.t > 0:
            if start.t > steps:
                raise ValueError(f"start.t={start.t} is beyond steps={steps}")
            t0, x, codes = start.t, start.carry["x"], start.carry["codes"]
            value_logits, codes_per_step = list(start.record["value_logits"]), list(start.record["codes"])
            logits = list(start.record["logits"])
        else:  # a resumed run reads its input from the carry: the tokens are not embedded again
            x = self.embed(tokens)
        layout = self.layout(tokens, steps) if t0 < steps else None  # nothing runs when resuming at the end
        first_block = start.inner if start is not None else 0
        for t in range(t0, steps):
            resid, logits = self.step(start.carry["resid"] if first_block else x, t, layout, first_block)
            first_block = 0
            new_codes = self.steps[t].bottleneck.hook_codes(self.decode(logits, tokens))
            value_logits.append(logits[3])
            codes_per_step.append(new_codes)
            if self.cfg.latent == "discrete":
                x = self.steps[t].bottleneck.hook_embed(self.embed(new_codes))
            else:
                x = resid
            if until_fixed and torch.equal(new_codes, codes):
                break
            codes = new_codes
        names = list(self.cfg.factor_sizes)
        return ReasonerOutput(
            value_logits=torch.stack(value_logits, dim=1),
            codes=torch.stack(codes_per_step, dim=1),
            logits=dict(zip(names, logits)),
        )

    # --- resuming a recorded run -----------------------------------------------
    resume_loop, resume_inner = "steps", "blocks"

    def resume_names(self, t: int, inner: int = 0) -> list[str]:
        """The hooks that ``resume_state(cache, t, inner)`` reads (steps < t; block ``inner`` of step t)."""
        if inner:
            return self.resume_names(t) + [f"steps.{t}.blocks.{inner}.hook_resid_pre"]
        if t == 0:
            return []
        names = [f"steps.{s}.bottleneck.{h}" for s in range(t) for h in ("hook_logits", "hook_codes")]
        names += [f"steps.{t - 1}.bottleneck.hook_{f}_logits" for f in ("syntax", "variable", "op")]
        feed = "bottleneck.hook_embed" if self.cfg.latent == "discrete" else "hook_resid_final"
        return names + [f"steps.{t - 1}.{feed}"]

    def resume_state(self, cache, t: int, inner: int = 0) -> LoopState:
        """The state entering step t (at block ``inner``) of the run recorded in ``cache``."""
        if inner:
            state = self.resume_state(cache, t)
            state.carry["resid"] = cache[f"steps.{t}.blocks.{inner}.hook_resid_pre"]
            state.inner = inner
            return state
        if t == 0:
            return LoopState(0, {})
        bn = lambda s, h: cache[f"steps.{s}.bottleneck.{h}"]  # noqa: E731
        feed = "bottleneck.hook_embed" if self.cfg.latent == "discrete" else "hook_resid_final"
        codes = [bn(s, "hook_codes") for s in range(t)]
        last = ("hook_syntax_logits", "hook_variable_logits", "hook_op_logits", "hook_logits")
        record = {"value_logits": [bn(s, "hook_logits") for s in range(t)], "codes": codes,
                  "logits": [bn(t - 1, h) for h in last]}
        return LoopState(t, {"x": cache[f"steps.{t - 1}.{feed}"], "codes": codes[-1]}, record)

    def _check_tokens(self, tokens: Tensor, name: str = "tokens") -> None:
        """Refuse anything but int64 codes [batch, pos, 4] inside each factor's vocabulary, at most
        ``max_tokens`` long, with at least one non-padding token per sequence.

        int64 only (no cast): the task encoders produce int64, and the codes are compared with
        the model's argmax codes (int64) to detect a fixed point. A few reductions, one sync.
        """
        sizes = self.cfg.factor_sizes
        values = ", ".join(f"{f} 0..{n - 1}" for f, n in sizes.items())
        check_tensor(tokens, name, ("batch", "pos", ("4", 4)), kind="int64",
                     note=f" (syntax, variable, op, value) with codes in {values}")
        if tokens.shape[1] > self.cfg.max_tokens:
            raise ValueError(f"{name}: {tokens.shape[1]} tokens; this model supports at most "
                             f"max_tokens={self.cfg.max_tokens}")
        lo, hi = torch.aminmax(tokens.reshape(-1, 4), dim=0)
        empty = (tokens[..., 0] == ga.PAD).all(dim=1)
        stats = torch.cat([lo, hi, empty.sum().reshape(1)]).tolist()  # one transfer from a device
        lo, hi, n_empty = stats[:4], stats[4:8], stats[8]
        for i, (factor, n) in enumerate(sizes.items()):
            if lo[i] < 0 or hi[i] >= n:
                raise ValueError(f"{name}: factor '{factor}' has codes in {lo[i]}..{hi[i]}; allowed 0..{n - 1}")
        if n_empty:
            row = int(empty.nonzero()[0, 0])
            raise ValueError(f"{name}: {n_empty} sequence(s) are all padding (first: batch {row}); "
                             "each needs at least one token whose syntax is not PAD")

    def _check_batch(self, batch: dict, rollout: bool) -> None:
        """A training batch: checked ``inputs``, int64 ``targets`` and a float ``weight`` of matching shapes."""
        if not isinstance(batch, dict) or not {"inputs", "targets", "weight"} <= set(batch):
            got = sorted(batch) if isinstance(batch, dict) else type(batch).__name__
            raise InputTypeError(f"batch must be a dict with 'inputs', 'targets' and 'weight'; got {got}")
        self._check_tokens(batch["inputs"], "batch['inputs']")
        B, L, _ = batch["inputs"].shape
        lead = [("batch", B), "step", ("pos", L)] if rollout else [("batch", B), ("pos", L)]
        targets = check_tensor(batch["targets"], "batch['targets']", (*lead, ("4", 4)), kind="int64")
        if rollout:
            lead[1] = ("step", targets.shape[1])
        check_tensor(batch["weight"], "batch['weight']", tuple(lead), kind="float")

    # --- losses -----------------------------------------------------------------
    def transition_loss(self, batch: dict) -> tuple[Tensor, dict]:
        """Teacher-forced one-step loss (discrete latent, algorithmic supervision).

        batch: ``inputs`` [B, L, 4], ``targets`` [B, L, 4], ``weight`` [B, L] (value factor).
        """
        self._check_batch(batch, rollout=False)
        tokens = batch["inputs"]
        _, logits = self.step(self.embed(tokens), 0, self.layout(tokens))
        loss, stats = self._factor_loss(logits, batch["targets"], batch["weight"])
        right = logits[3].argmax(-1) == batch["targets"][..., 3]
        # lookups, multi-operand sums, and the sums of exactly 2 and 3 operands, tracked separately
        for key in ("new_operand", "new_sum", "new_sum2", "new_sum3"):
            if key in batch and batch[key].any():
                stats[f"acc_{key}"] = float(right[batch[key]].float().mean())
        return loss, stats

    def rollout_loss(self, batch: dict) -> tuple[Tensor, dict]:
        """Loss through a rollout with backprop through the loop (continuous or end-to-end).

        batch: ``inputs`` [B, L, 4], ``targets`` [B, K, L, 4], ``weight`` [B, K, L]; the
        model runs K steps and each step with any nonzero weight is supervised.
        """
        self._check_batch(batch, rollout=True)
        tokens, targets, weight = batch["inputs"], batch["targets"], batch["weight"]
        self.check_steps(targets.shape[1], param="targets.shape[1] (supervised steps)")
        layout = self.layout(tokens)
        x = self.embed(tokens)
        total, stats = 0.0, {}
        K = targets.shape[1]
        for t in range(K):
            resid, logits = self.step(x, t, layout)
            if self.cfg.latent == "discrete":
                x = self.embed(self.decode(logits, tokens))
            else:
                x = resid
            if weight[:, t].sum() > 0:
                loss, stats = self._factor_loss(logits, targets[:, t], weight[:, t])
                total = total + loss
        return total, stats

    def _factor_loss(self, logits: list[Tensor], targets: Tensor, weight: Tensor) -> tuple[Tensor, dict]:
        valid = (targets[..., 0] != ga.PAD).float()
        loss = 0.0
        stats = {}
        for i, (name, lg) in enumerate(zip(self.cfg.factor_sizes, logits)):
            ce = F.cross_entropy(lg.flatten(0, 1), targets[..., i].flatten(), reduction="none").view_as(valid)
            w = valid * (weight if name == "value" else 1.0)
            loss = loss + (ce * w).sum() / w.sum().clamp_min(1.0)
            correct = (lg.argmax(-1) == targets[..., i]).float()
            stats[f"acc_{name}"] = float((correct * valid).sum() / valid.sum())
        value_ok = (logits[3].argmax(-1) == targets[..., 3]) | (targets[..., 0] == ga.PAD)
        stats["seq_acc"] = float(value_ok.all(dim=1).float().mean())
        return loss, stats

    def loss(self, batch: dict) -> tuple[Tensor, dict]:
        """The training loss for this configuration (used by ``workbench.train``)."""
        if not isinstance(batch, dict) or not isinstance(batch.get("targets"), Tensor):
            self._check_batch(batch, rollout=False)  # raises, naming what a batch needs
        with self.fused_attention():  # training compares no runs: the faster kernel
            if batch["targets"].ndim == 3:
                return self.transition_loss(batch)
            return self.rollout_loss(batch)

    # --- config round trip ----------------------------------------------------
    def config_dict(self) -> dict:
        return asdict(self.cfg)

    @classmethod
    def from_config(cls, config: dict) -> "Reasoner":
        return cls(ReasonerConfig(**config))
