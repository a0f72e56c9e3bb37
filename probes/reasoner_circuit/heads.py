"""Part 1: the role of every attention head (where each defining and operand slot looks)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import torch
from torch import Tensor

from models.reasoner import Reasoner
from probes.reasoner_circuit.common import (
    OP_ROUTES, ROUTES, Batch, CircuitResult, allowed_keys, batches, check_reasoner, token_structure,
)
from workbench.sites import loop_indices
from workbench.tasks import graph_arith as ga


def route_masks(encs: Sequence[ga.Encoded], L: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """route -> (queries [B, L] bool, keys [B, L, L] bool): who attends where on each route.

    Defining slots of non-leaf equations query ``DEF_ROUTES``; operand slots query
    ``OP_ROUTES``. ``*_other`` keys are everything outside that query type's other routes.
    """
    B = len(encs)
    Q = {r: np.zeros((B, L), bool) for r in ROUTES}
    K = {r: np.zeros((B, L, L), bool) for r in ROUTES}
    for b, enc in enumerate(encs):
        var, define, operands = token_structure(enc)
        for q, ops in operands.items():
            for r in ("gather", "parent_defs", "def_self", "def_other"):
                Q[r][b, q] = True
            K["gather"][b, q, ops] = True
            for j, o in enumerate(ops[:3] if len(ops) > 1 else []):  # which operand: only where there is a choice
                Q[f"gather_{j + 1}"][b, q] = True
                K[f"gather_{j + 1}"][b, q, o] = True
            K["parent_defs"][b, q, [define[var[o]] for o in ops]] = True
            K["def_self"][b, q, q] = True
        for o in np.flatnonzero(enc.role == ga.ROLE_OPERAND):
            for r in OP_ROUTES:
                Q[r][b, o] = True
            K["lookup"][b, o, define[var[o]]] = True
            K["operand_self"][b, o, o] = True
    K["def_other"] = ~(K["gather"] | K["parent_defs"] | K["def_self"])
    K["operand_other"] = ~(K["lookup"] | K["operand_self"])
    return {r: (Q[r], K[r]) for r in ROUTES}


class _RouteTally:
    """Sums of attention mass per (step, layer, route): over all queries and over 'active' ones
    (queries whose slot the exact algorithm writes at that step)."""

    def __init__(self, n_heads: int):
        self.H = n_heads
        self.sums: dict[tuple[int, int, str], np.ndarray] = {}  # [2, H]: all, active
        self.counts: dict[tuple[int, int, str], np.ndarray] = {}  # [2]
        self.base: dict[tuple[int, int, str], np.ndarray] = {}  # [2] uniform-attention mass

    def hook(self, batch: Batch, masks: dict, allowed: Tensor) -> Callable:
        fill = torch.from_numpy(batch.arr["fill_step"])
        tensors = {}
        for r, (q, k) in masks.items():
            kt = torch.from_numpy(k) & allowed
            uniform = kt.sum(-1).float() / allowed.sum(-1).clamp_min(1).float()  # [B, L]
            tensors[r] = (torch.from_numpy(q), kt.float(), uniform)

        def hook(pattern: Tensor, hook) -> None:
            idx = loop_indices(hook.name)
            t, layer = idx["steps"], idx["blocks"]
            active = fill == t + 1
            for r, (q, kt, uniform) in tensors.items():
                mass = torch.einsum("bhqk,bqk->bhq", pattern.float(), kt)  # [B, H, L]
                key = (t, layer, r)
                s = self.sums.setdefault(key, np.zeros((2, self.H)))
                c = self.counts.setdefault(key, np.zeros(2))
                u = self.base.setdefault(key, np.zeros(2))
                for i, sel in enumerate((q, q & active)):
                    s[i] += (mass * sel[:, None]).sum((0, 2)).numpy()
                    c[i] += float(sel.sum())
                    u[i] += float((uniform * sel).sum())

        return hook

    def frame(self) -> pd.DataFrame:
        rows = []
        for (t, layer, r), s in sorted(self.sums.items()):
            c, u = self.counts[(t, layer, r)], self.base[(t, layer, r)]
            for h in range(self.H):
                rows.append({"step": t, "layer": layer, "head": h, "route": r,
                             "mass": s[0, h] / c[0] if c[0] else np.nan,
                             "mass_active": s[1, h] / c[1] if c[1] else np.nan,
                             "baseline": u[0] / c[0] if c[0] else np.nan,
                             "baseline_active": u[1] / c[1] if c[1] else np.nan,
                             "n": int(c[0]), "n_active": int(c[1])})
        return pd.DataFrame(rows)


@torch.no_grad()
def head_roles(model: Reasoner, problems: Sequence[ga.Problem], *, batch_size: int = 32, min_mass: float = 0.3,
               fwd_hooks: Sequence = (), progress: bool = True) -> CircuitResult:
    """Attention mass on each route per (step, layer, head), and a role per (layer, head).

    ``df``: step, layer, head, route, mass (mean over the route's queries), mass_active (only
    queries written at this step), baseline(_active) (the mass uniform attention would give),
    n, n_active. ``tables["heads"]``: one row per (layer, head) with each route's
    mass_active averaged over steps and a ``role`` (routes with mass >= ``min_mass``).
    ``fwd_hooks`` run before the readout (e.g. to force attention patterns).
    """
    check_reasoner(model)
    tally = _RouteTally(model.cfg.n_heads)
    for batch in batches(model, problems, batch_size, progress, "head roles"):
        masks = route_masks(batch.encs, batch.tokens.shape[1])
        hook = tally.hook(batch, masks, allowed_keys(model, batch.tokens))
        model.run_with_hooks(batch.tokens, steps=batch.steps,
                             fwd_hooks=[*fwd_hooks, (lambda n: n.endswith("attn.hook_pattern"), hook)])
    df = tally.frame()
    heads = _head_summary(df, min_mass)
    meta = {"problems": len(problems), "min_mass": min_mass, "scheme": model.cfg.scheme}
    return CircuitResult("head_roles", df, "mass_active", meta, {"heads": heads}, builder=_head_figure)


def _head_summary(df: pd.DataFrame, min_mass: float) -> pd.DataFrame:
    """One row per (layer, head): each route's active mass (weighted over steps), lift, role."""
    d = df[df.n_active > 0].assign(w=lambda x: x.mass_active * x.n_active, wb=lambda x: x.baseline_active * x.n_active)
    g = d.groupby(["layer", "head", "route"])[["w", "wb", "n_active"]].sum()
    g["mass"], g["baseline"] = g.w / g.n_active, g.wb / g.n_active
    wide = g["mass"].unstack("route").reindex(columns=list(ROUTES))
    base = g["baseline"].unstack("route").reindex(columns=list(ROUTES)).add_suffix("_baseline")
    out = pd.concat([wide, base], axis=1).reset_index()
    out["role"] = [_role(r, min_mass) for _, r in out.iterrows()]
    return out


def _role(row: pd.Series, min_mass: float) -> str:
    """Readable role of one head from its route masses (several roles joined by ' + ')."""
    roles = []
    gather = np.nan_to_num(row.get("gather", 0.0))
    if gather >= min_mass:
        per = {j: np.nan_to_num(row.get(f"gather_{j}", 0.0)) for j in (1, 2, 3)}  # multi-operand nodes only
        j = max(per, key=per.get)
        roles.append(f"gather operand {j}" if per[j] >= 0.7 * sum(per.values()) else "gather operands")
    if np.nan_to_num(row.get("parent_defs", 0.0)) >= min_mass:
        roles.append("read parents' definitions")
    if np.nan_to_num(row.get("lookup", 0.0)) >= min_mass:
        roles.append("lookup (operand -> definition)")
    if not roles:
        self_mass = max(np.nan_to_num(row.get("def_self", 0.0)), np.nan_to_num(row.get("operand_self", 0.0)))
        roles.append("self" if self_mass >= min_mass else "other")
    return " + ".join(roles)


def _head_figure(result: CircuitResult, **_) -> go.Figure:
    """Heatmap: (layer, head) down, route across, colour = attention mass on the route when active."""
    heads = result.tables["heads"]
    z = heads[list(ROUTES)].to_numpy(dtype=float)
    base = heads[[f"{r}_baseline" for r in ROUTES]].to_numpy(dtype=float)
    ylab = [f"L{int(r.layer)} H{int(r.head)}: {r.role}" for r in heads.itertuples()]
    fig = go.Figure(go.Heatmap(
        z=z, x=list(ROUTES), y=ylab, zmin=0, zmax=1, colorscale="Viridis", colorbar_title="mass",
        customdata=base, text=np.vectorize(lambda v: "" if np.isnan(v) else f"{v:.2f}")(z), texttemplate="%{text}",
        hovertemplate="%{y}<br>route %{x}<br>mass %{z:.3f}<br>uniform %{customdata:.3f}<extra></extra>"))
    return fig.update_layout(
        title="Attention mass per head and route, at the step that writes the querying slot "
              "(def_* queries: defining slots; lookup/operand_*: operand slots)",
        yaxis=dict(autorange="reversed"), height=max(350, 28 * len(ylab) + 150))
