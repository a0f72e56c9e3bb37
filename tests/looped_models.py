"""Looped models written in plain PyTorch, for ``workbench.loops.loop_indexed`` and ``workbench.dynamics``.

None of them knows about the workbench: they are what a model from elsewhere looks like.

* ``Huginn``: a depth-recurrent transformer after Geiping et al. 2025 ("Scaling up test-time compute
  with latent reasoning"): a prelude embeds the tokens, a recurrent core of transformer blocks is
  applied T times to a state with the embedded input injected at every step, a coda decodes.
* ``TwoLevel``: an HRM / TRM-style two-level loop: per cycle (outer step) a low-level cell updates
  n times with the high-level state injected, then the high-level cell updates once.
* ``GRULoop``: an ``nn.GRUCell`` over the time steps of a sequence.
* ``BridgeLoop``: TransformerLens's own blocks (of a native ``TransformerBridge``) applied in a loop.
* ``MapLoop``: h_{t+1} = F(h_t) for a hand-made map F (``Affine``, ``Rotation``, ``Counter``,
  ``TanhMap``), the state h_0 = the input; for dynamics with known answers.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from transformer_lens.hook_points import HookPoint


# ------------------------------------------------------------------ Huginn-style
class Block(nn.Module):
    """Pre-LayerNorm transformer block (causal self-attention + GELU MLP), plain PyTorch."""

    def __init__(self, d: int, n_heads: int, d_mlp: int):
        super().__init__()
        self.n_heads = n_heads
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.qkv, self.proj = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.fc_in, self.fc_out = nn.Linear(d, d_mlp), nn.Linear(d_mlp, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, L, d = x.shape
        q, k, v = self.qkv(self.ln1(x)).view(b, L, 3, self.n_heads, d // self.n_heads).unbind(2)
        att = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=True)
        x = x + self.proj(att.transpose(1, 2).reshape(b, L, d))
        return x + self.fc_out(F.gelu(self.fc_in(self.ln2(x))))


class Core(nn.Module):
    """The recurrent core: adapter(concat(state, injected input)) -> blocks."""

    def __init__(self, d: int, n_heads: int, d_mlp: int, n_layers: int):
        super().__init__()
        self.adapter = nn.Linear(2 * d, d)
        self.blocks = nn.ModuleList(Block(d, n_heads, d_mlp) for _ in range(n_layers))

    def forward(self, state: torch.Tensor, injected: torch.Tensor) -> torch.Tensor:
        x = self.adapter(torch.cat([state, injected], dim=-1))
        for block in self.blocks:
            x = block(x)
        return x


class Huginn(nn.Module):
    """Prelude -> core applied ``steps`` times (input injection) -> coda. tokens [batch, pos] -> logits."""

    def __init__(self, vocab: int = 32, d: int = 64, n_heads: int = 4, d_mlp: int = 128, core_layers: int = 2,
                 n_ctx: int = 64, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.embed, self.pos = nn.Embedding(vocab, d), nn.Embedding(n_ctx, d)
        self.prelude = Block(d, n_heads, d_mlp)
        self.core = Core(d, n_heads, d_mlp, core_layers)
        self.coda = Block(d, n_heads, d_mlp)
        self.ln_f, self.unembed = nn.LayerNorm(d), nn.Linear(d, vocab)

    def readout(self, state: torch.Tensor) -> torch.Tensor:
        """Coda + unembedding of a state [batch, pos, d] -> logits [batch, pos, vocab]."""
        return self.unembed(self.ln_f(self.coda(state)))

    def forward(self, tokens: torch.Tensor, steps: int = 4) -> torch.Tensor:
        e = self.prelude(self.embed(tokens) + self.pos(torch.arange(tokens.shape[1])))
        s = torch.zeros_like(e)
        for _ in range(steps):
            s = self.core(s, e)
        return self.readout(s)


# ------------------------------------------------------------- HRM / TRM-style
class Cell(nn.Module):
    """z <- z + MLP(z + injection), with a HookPoint on the MLP's hidden layer."""

    def __init__(self, d: int):
        super().__init__()
        self.fc_in, self.fc_out = nn.Linear(d, 2 * d), nn.Linear(2 * d, d)
        self.hook_hidden = HookPoint()

    def forward(self, z: torch.Tensor, injection: torch.Tensor) -> torch.Tensor:
        return z + self.fc_out(self.hook_hidden(torch.tanh(self.fc_in(z + injection))))


class Cycle(nn.Module):
    """One outer step: ``n_low`` low-level updates, then one high-level update."""

    def __init__(self, d: int, n_low: int):
        super().__init__()
        self.n_low = n_low
        self.low, self.high = Cell(d), Cell(d)

    def forward(self, z_high: torch.Tensor, z_low: torch.Tensor, x: torch.Tensor):
        for _ in range(self.n_low):
            z_low = self.low(z_low, z_high + x)
        return self.high(z_high, z_low), z_low


class TwoLevel(nn.Module):
    """x [batch, d_in] -> logits [batch, classes] after ``cycles`` outer steps."""

    def __init__(self, d_in: int = 6, d: int = 16, n_low: int = 3, classes: int = 4, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.d = d
        self.embed = nn.Linear(d_in, d)
        self.cycle = Cycle(d, n_low)
        self.head = nn.Linear(d, classes)
        self.hook_embed = HookPoint()  # a hook point outside the loops keeps its name

    def forward(self, x: torch.Tensor, cycles: int = 3) -> torch.Tensor:
        e = self.hook_embed(self.embed(x))
        z_high = torch.zeros(x.shape[0], self.d)
        z_low = torch.zeros(x.shape[0], self.d)
        for _ in range(cycles):
            z_high, z_low = self.cycle(z_high, z_low, e)
        return self.head(z_high)


# ------------------------------------------------------------------- GRU cell
class GRULoop(nn.Module):
    """A GRU cell over a sequence: x [batch, T, d_in] -> logits [batch, classes] from the last state."""

    def __init__(self, d_in: int = 3, d: int = 12, classes: int = 2, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.cell = nn.GRUCell(d_in, d)
        self.head = nn.Linear(d, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.zeros(x.shape[0], self.cell.hidden_size)
        for t in range(x.shape[1]):
            h = self.cell(x[:, t], h)
        return self.head(h)


# ------------------------------------------------- TransformerLens blocks, looped
class BlockStack(nn.Module):
    """Applies TransformerLens bridge blocks in order (they return 1-tuples)."""

    def __init__(self, blocks: nn.ModuleList):
        super().__init__()
        self.blocks = blocks

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            (x,) = block(x)
        return x


class BridgeLoop(nn.Module):
    """The blocks of a small native ``TransformerBridge`` applied ``steps`` times to the residual stream."""

    def __init__(self, seed: int = 0):
        super().__init__()
        from transformer_lens.config import TransformerBridgeConfig
        from transformer_lens.model_bridge import TransformerBridge

        torch.manual_seed(seed)
        cfg = TransformerBridgeConfig(d_model=32, n_layers=2, n_heads=4, d_head=8, d_mlp=64, d_vocab=20, n_ctx=16,
                                      act_fn="gelu", normalization_type="LN", positional_embedding_type="standard",
                                      seed=seed)
        bridge = TransformerBridge.boot_native(cfg)
        self.embed = nn.Embedding(cfg.d_vocab, cfg.d_model)
        self.core = BlockStack(bridge.blocks)
        self.ln, self.unembed = nn.LayerNorm(cfg.d_model), nn.Linear(cfg.d_model, cfg.d_vocab)

    def forward(self, tokens: torch.Tensor, steps: int = 3) -> torch.Tensor:
        x = self.embed(tokens)
        for _ in range(steps):
            x = self.core(x)
        return self.unembed(self.ln(x))


# ----------------------------------------------------------- hand-made maps
class Affine(nn.Module):
    """h -> A h + b (a contraction when the spectral radius of A is below 1)."""

    def __init__(self, A: torch.Tensor, b: torch.Tensor):
        super().__init__()
        self.register_buffer("A", A)
        self.register_buffer("b", b)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h @ self.A.T + self.b


class Rotation(Affine):
    """A rotation by ``angle`` in the plane of the last axis (size 2): never converges."""

    def __init__(self, angle: float):
        c, s = math.cos(angle), math.sin(angle)
        super().__init__(torch.tensor([[c, -s], [s, c]]), torch.zeros(2))


class Counter(nn.Module):
    """h -> h + ``rate`` (a step function of time: the answer changes until it saturates)."""

    def __init__(self, rate: float = 1.0):
        super().__init__()
        self.rate = rate

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h + self.rate


class Stage(nn.Module):
    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner, self.hook_out = inner, HookPoint()

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.hook_out(self.inner(h))


class Stages(nn.Module):
    """A step made of several stages ("layers"), each with a HookPoint: ``blocks.{l}.hook_out``."""

    def __init__(self, *maps: nn.Module):
        super().__init__()
        self.blocks = nn.ModuleList(Stage(m) for m in maps)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            h = block(h)
        return h


class MapLoop(nn.Module):
    """h_0 = x, h_{t+1} = step(h_t) for ``steps`` steps; returns the last state."""

    def __init__(self, step: nn.Module):
        super().__init__()
        self.step = step

    def forward(self, x: torch.Tensor, steps: int = 10) -> torch.Tensor:
        h = x
        for _ in range(steps):
            h = self.step(h)
        return h


def counter_readout(classes: int):
    """Logits -|c - h| over classes c = 0..classes-1 for a state h [batch, 1]: the answer is h
    rounded into 0..classes-1."""
    c = torch.arange(classes, dtype=torch.float32)

    def readout(h: torch.Tensor) -> torch.Tensor:
        return -(c - h).abs()

    return readout
