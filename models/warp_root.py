"""WARP's root: the small MLP whose flattened weights are the state theta_t (``models.warp``).

Its hook points at one step, its initial weights, the tau features it reads, the heads that turn
its raw output into a prediction (or a physical formula's parameters), and ``RootNetwork``: the
root of one step rebuilt as ordinary ``nn.Linear`` layers."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from workbench.hooks import HookPoint
from workbench.inputs import check_tensor, describe

if TYPE_CHECKING:
    from models.warp import WarpConfig

ACTIVATIONS = {"tanh": torch.tanh, "relu": F.relu, "gelu": F.gelu, "silu": F.silu}


class LayerHooks(nn.Module):
    def __init__(self):
        super().__init__()
        self.hook_pre, self.hook_post = HookPoint(), HookPoint()


class RootHooks(nn.Module):
    def __init__(self, depth: int):
        super().__init__()
        self.hook_in = HookPoint()
        self.layers = nn.ModuleList(LayerHooks() for _ in range(depth))
        self.hook_out = HookPoint()

    def points(self) -> list[tuple[HookPoint, HookPoint]]:
        """(hook_pre, hook_post) of each hidden layer, looked up once (a module attribute lookup
        costs about as much as a small layer's product)."""
        if "_points" not in self.__dict__:
            self.__dict__["_points"] = [(layer.hook_pre, layer.hook_post) for layer in self.layers]
        return self.__dict__["_points"]


class StepHooks(nn.Module):
    """Hook points of one time step (recurrent mode) or of the whole trajectory (parallel)."""

    def __init__(self, depth: int):
        super().__init__()
        self.hook_input, self.hook_dx, self.hook_theta = HookPoint(), HookPoint(), HookPoint()
        self.root = RootHooks(depth)
        self.hook_phys, self.hook_output, self.hook_std, self.hook_logits = (HookPoint(), HookPoint(), HookPoint(),
                                                                            HookPoint())


def root_init(cfg: WarpConfig, generator: Optional[torch.Generator] = None) -> Tensor:
    """A flattened root MLP with nn.Linear's default initialisation: [D]."""
    parts = []
    for o, i in cfg.layer_sizes:
        bound = 1 / math.sqrt(i)
        parts.append((torch.rand(o * i + o, generator=generator) * 2 - 1) * bound)
    return torch.cat(parts)


def tau_features(cfg: WarpConfig, tau: Tensor) -> Tensor:
    """tau [...] -> [..., 1 + 2 * tau_freqs]: tau, then sin and cos of 2 pi k tau."""
    feats = [tau[..., None]]
    if cfg.tau_freqs:
        k = torch.arange(1, cfg.tau_freqs + 1, dtype=tau.dtype, device=tau.device)
        angle = 2 * math.pi * tau[..., None] * k
        feats += [torch.sin(angle), torch.cos(angle)]
    return torch.cat(feats, dim=-1)


def head(cfg: WarpConfig, raw: Tensor, tau: Tensor, u: Tensor, hooks: Optional[StepHooks] = None) -> dict:
    """Turn the root's raw output [..., n_out] into mean / std / logits / phys.

    tau [...] is the decoding coordinate and u [..., d_in] the current input (used by the
    Euler step of physics="msd").
    """
    hook = (lambda name, v: getattr(hooks, name)(v)) if hooks is not None else (lambda name, v: v)
    out: dict = {}
    d = cfg.d_in
    if cfg.physics == "none":
        if cfg.regress:
            out["mean"] = raw[..., :d]
            if cfg.gaussian:
                out["std"] = F.softplus(raw[..., d:2 * d]) + cfg.std_min
        if cfg.n_classes:
            out["logits"] = raw[..., raw.shape[-1] - cfg.n_classes:]
    elif cfg.physics == "sine":
        phi = hook("hook_phys", raw[..., :1])
        out["phys"] = phi
        out["mean"] = torch.sin(2 * math.pi * tau[..., None] + phi)
        if cfg.gaussian:
            out["std"] = F.softplus(raw[..., 1:2]) + cfg.std_min
    else:  # msd: one explicit Euler step of m x'' + c x' + k x = 0 from u = (x, v)
        scales = torch.tensor(cfg.phys_scales, dtype=raw.dtype, device=raw.device)
        # bounded to scales * e^(+-phys_bound): a vanishing mass would make the Euler step explode
        bound = cfg.phys_bound
        phys = hook("hook_phys", scales * torch.exp(bound * torch.tanh(raw[..., :3] / bound)))  # scales at raw = 0
        out["phys"] = phys
        m, c, k = phys.unbind(-1)
        x, v = u.unbind(-1)
        out["mean"] = torch.stack([x + cfg.dt * v, v - cfg.dt * (c * v + k * x) / m], dim=-1)
        if cfg.gaussian:
            out["std"] = F.softplus(raw[..., 3:5]) + cfg.std_min
    if "mean" in out:
        out["mean"] = hook("hook_output", out["mean"])
    if "std" in out:
        out["std"] = hook("hook_std", out["std"])
    if "logits" in out:
        out["logits"] = hook("hook_logits", out["logits"])
    return out


class RootNetwork(nn.Module):
    """The root MLP at one step, rebuilt from theta_t as ordinary ``nn.Linear`` layers.

    ``f(tau, u=None)`` returns the prediction (regression mean; logits for a pure
    classifier); ``f.decode(tau, u)`` returns every head. tau: float or [...];
    u: [..., d_in] (needed when the root reads u or for physics="msd").
    """

    def __init__(self, cfg: WarpConfig, theta: Tensor):
        super().__init__()
        if not isinstance(theta, Tensor) or theta.shape != (cfg.d_theta,):
            raise ValueError(f"theta must have shape ({cfg.d_theta},); got {describe(theta)}")
        check_tensor(theta, "theta", ((str(cfg.d_theta), cfg.d_theta),))
        self.cfg = cfg
        self.layers = nn.ModuleList()
        at = 0
        for o, i in cfg.layer_sizes:
            layer = nn.Linear(i, o).to(theta.dtype)
            with torch.no_grad():
                layer.weight.copy_(theta[at:at + o * i].view(o, i))
                layer.bias.copy_(theta[at + o * i:at + o * i + o])
            at += o * i + o
            self.layers.append(layer)
        self.requires_grad_(False)

    def decode(self, tau, u: Optional[Tensor] = None) -> dict:
        cfg = self.cfg
        tau = torch.as_tensor(tau, dtype=self.layers[0].weight.dtype)
        if (cfg.root_takes_x or cfg.physics == "msd") and u is None:
            raise ValueError("this root reads the current input: call f(tau, u) with u [..., d_in]")
        h = tau_features(cfg, tau)
        if cfg.root_takes_x:
            h = torch.cat([h, u], dim=-1)
        act = ACTIVATIONS[cfg.root_act]
        for l, layer in enumerate(self.layers):
            h = layer(h)
            if l < len(self.layers) - 1:
                h = act(h)
        return head(cfg, h, tau, u)

    def forward(self, tau, u: Optional[Tensor] = None) -> Tensor:
        out = self.decode(tau, u)
        return out["mean"] if "mean" in out else out["logits"]
