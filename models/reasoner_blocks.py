"""The transformer pieces of the recursive reasoner (``models.reasoner``): the hook points of one
loop step, the factored token embedding, attention with its per-layout bias, the MLP (GELU or
bilinear) and the pre-LayerNorm block."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from workbench.hooks import HookPoint

if TYPE_CHECKING:
    from models.reasoner import ReasonerConfig


class AttnHooks(nn.Module):
    def __init__(self):
        super().__init__()
        self.hook_q, self.hook_k, self.hook_v = HookPoint(), HookPoint(), HookPoint()
        self.hook_attn_scores, self.hook_pattern, self.hook_z = HookPoint(), HookPoint(), HookPoint()


class MLPHooks(nn.Module):
    def __init__(self):
        super().__init__()
        self.hook_pre, self.hook_pre_linear, self.hook_post = HookPoint(), HookPoint(), HookPoint()


class BlockHooks(nn.Module):
    def __init__(self):
        super().__init__()
        self.hook_resid_pre, self.hook_resid_mid, self.hook_resid_post = HookPoint(), HookPoint(), HookPoint()
        self.hook_attn_out, self.hook_mlp_out = HookPoint(), HookPoint()
        self.attn, self.mlp = AttnHooks(), MLPHooks()


class BottleneckHooks(nn.Module):
    def __init__(self):
        super().__init__()
        self.hook_logits = HookPoint()  # value factor
        self.hook_syntax_logits, self.hook_variable_logits, self.hook_op_logits = HookPoint(), HookPoint(), HookPoint()
        self.hook_codes, self.hook_embed = HookPoint(), HookPoint()


class StepHooks(nn.Module):
    def __init__(self, n_layers: int):
        super().__init__()
        self.hook_input = HookPoint()
        self.blocks = nn.ModuleList(BlockHooks() for _ in range(n_layers))
        self.hook_resid_final = HookPoint()
        self.bottleneck = BottleneckHooks()


# --------------------------------------------------------------------- modules
class FactorEmbed(nn.Module):
    """Sum of one embedding table per factor: [batch, pos, 4] codes -> [batch, pos, d]."""

    def __init__(self, cfg: ReasonerConfig):
        super().__init__()
        self.tables = nn.ModuleList(nn.Embedding(n, cfg.d_model) for n in cfg.factor_sizes.values())

    def forward(self, codes: Tensor) -> Tensor:
        return sum(table(codes[..., i]) for i, table in enumerate(self.tables))


class Attention(nn.Module):
    """Multi-head attention with a learned bias per head and clipped relative distance."""

    def __init__(self, cfg: ReasonerConfig):
        super().__init__()
        self.cfg = cfg
        self.W_Q = nn.Linear(cfg.d_model, cfg.d_model)
        self.W_K = nn.Linear(cfg.d_model, cfg.d_model)
        self.W_V = nn.Linear(cfg.d_model, cfg.d_model)
        self.W_O = nn.Linear(cfg.d_model, cfg.d_model)
        self.rel_bias = nn.Parameter(torch.zeros(cfg.n_heads, 2 * cfg.rel_window + 1))
        ws = cfg.segment_window
        self.seg_bias = nn.Parameter(torch.zeros(cfg.n_heads, 2 * ws + 1)) if ws else None
        dist = torch.arange(-cfg.rel_window, cfg.rel_window + 1)
        if cfg.rel_init == "alibi":  # a locality prior: head 0 global, later heads increasingly local
            slopes = torch.tensor([0.0] + [2.0 ** -i for i in range(cfg.n_heads - 1)])
            self.rel_bias.data = -slopes[:, None] * dist.abs().float()[None, :]
        elif cfg.rel_init == "offset":  # half the heads start looking h tokens back, half look everywhere
            for h in range(cfg.n_heads // 2):
                self.rel_bias.data[h] = torch.where(dist == -h, 0.0, -4.0)

    def forward(self, x: Tensor, hooks: AttnHooks, layout: "Layout") -> Tensor:
        """x: [batch, pos, d]; ``layout`` holds the attention mask and equation indices."""
        b, L, _ = x.shape
        h, dh, w = self.cfg.n_heads, self.cfg.d_head, self.cfg.rel_window
        q = hooks.hook_q(self.W_Q(x).view(b, L, h, dh))
        k = hooks.hook_k(self.W_K(x).view(b, L, h, dh))
        v = hooks.hook_v(self.W_V(x).view(b, L, h, dh))
        bias = layout.bias(self, L, w)  # already multiplied by layout.gain
        if layout.gain is not None:  # gain * (q.k / sqrt(d) + bias), as q * gain and bias * gain
            q = q * layout.gain[layout.rows if layout.rows is not None else slice(None)].transpose(1, 2)
        if not layout.fused:
            scores = hooks.hook_attn_scores(torch.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(dh) + bias)
            pattern = hooks.hook_pattern(scores.softmax(dim=-1))
            z = torch.einsum("bhqk,bkhd->bqhd", pattern, v)
        else:  # nothing to expose: the fused kernel gives the same z (to ~1e-6), faster
            z = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                               attn_mask=bias).transpose(1, 2)
        z = hooks.hook_z(z)
        return self.W_O(z.reshape(b, L, h * dh))


def watched(hook: nn.Module) -> bool:
    """Whether a HookPoint has a hook on it (caching, patching or a user's hook)."""
    return bool(hook._forward_hooks or hook._forward_pre_hooks)


@dataclass
class Layout:
    """What attention needs to know about the token layout, computed once per rollout.

    Held per distinct *layout* (padding and equation boundaries) rather than per batch row: the
    patched copies of one problem all share one bias [1, head, query, key] that broadcasts over
    the batch, instead of one gathered and masked per copy.
    """

    mask: Tensor  # [sets, 1, query|1, key] bool, True = may attend (not padding; causal)
    segment_rel: Optional[Tensor] = None  # [sets, query, key] clipped equation distance + window
    # True inside ``Reasoner.fused_attention()`` when no hook watches attention scores or patterns;
    # otherwise every run takes the einsum path, so plain, cached and patched runs agree exactly
    fused: bool = False
    rows: Optional[Tensor] = None  # [batch] each row's set; None: one set per row, or one set for all
    # [sets, 1, query|1, 1] attention-logit multiplier max(1, log(keys seen) / log(length_ref)); None: off
    gain: Optional[Tensor] = None
    _biases: dict = field(default_factory=dict, repr=False)

    def bias(self, attn: "Attention", L: int, w: int) -> Tensor:
        """[batch | 1, head, query, key] additive bias: relative distance, equation distance, -inf where masked.

        The same for every step of a rollout, so each layer builds it once (the gathers are the
        costliest part of attention on long problems)."""
        key = id(attn)
        if key not in self._biases:
            pos = torch.arange(L, device=self.mask.device)
            rel = (pos[None, :] - pos[:, None]).clamp(-w, w) + w  # [query, key]
            bias = attn.rel_bias[:, rel][None]
            if attn.seg_bias is not None:  # [head, sets, query, key] -> [sets, head, query, key]
                bias = bias + attn.seg_bias[:, self.segment_rel].transpose(0, 1)
            if self.gain is not None:
                bias = bias * self.gain
            bias = bias.masked_fill(~self.mask, float("-inf"))
            self._biases[key] = bias if self.rows is None else bias[self.rows]
        return self._biases[key]


def layout_sets(syntax: Tensor) -> tuple[Tensor, Optional[Tensor]]:
    """The distinct rows of ``syntax`` [batch, pos] (what the layout depends on) and each row's set.

    Returns (sets [sets, pos], rows [batch] or None): None when every row is its own set, or when
    there is a single set (then everything built from it broadcasts over the batch).
    """
    B = syntax.shape[0]
    if B == 1 or torch.equal(syntax, syntax[:1].expand_as(syntax)):
        return syntax[:1], None
    sets, rows = torch.unique(syntax, dim=0, return_inverse=True)
    return (syntax, None) if len(sets) == B else (sets, rows)


class MLP(nn.Module):
    """GELU MLP, or a bilinear one: hook_post = hook_pre * hook_pre_linear (no nonlinearity).

    A bilinear layer represents products of input features directly, which is what a modular
    sum needs in the Fourier basis (cos(a+b) = cos a cos b - sin a sin b).
    """

    def __init__(self, cfg: ReasonerConfig):
        super().__init__()
        self.bilinear = cfg.mlp == "bilinear"
        self.W_in = nn.Linear(cfg.d_model, cfg.d_mlp)
        self.W_gate = nn.Linear(cfg.d_model, cfg.d_mlp) if self.bilinear else None
        self.W_out = nn.Linear(cfg.d_mlp, cfg.d_model)

    def forward(self, x: Tensor, hooks: MLPHooks) -> Tensor:
        if self.bilinear:
            hidden = hooks.hook_pre(self.W_gate(x)) * hooks.hook_pre_linear(self.W_in(x))
        else:
            hidden = F.gelu(hooks.hook_pre(self.W_in(x)))
        return self.W_out(hooks.hook_post(hidden))


class Block(nn.Module):
    """Pre-LayerNorm transformer block."""

    def __init__(self, cfg: ReasonerConfig):
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(cfg.d_model), nn.LayerNorm(cfg.d_model)
        self.attn, self.mlp = Attention(cfg), MLP(cfg)

    def forward(self, x: Tensor, hooks: BlockHooks, layout: Layout) -> Tensor:
        x = hooks.hook_resid_pre(x)
        x = hooks.hook_resid_mid(x + hooks.hook_attn_out(self.attn(self.ln1(x), hooks.attn, layout)))
        return hooks.hook_resid_post(x + hooks.hook_mlp_out(self.mlp(self.ln2(x), hooks.mlp)))
