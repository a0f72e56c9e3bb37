"""Study: re-find the recursive reasoner's circuit, then recover each problem's graph from it.

Four analyses, each a function returning a ``Result`` (a tidy ``df`` and a ``figure()``):

1. ``head_roles``: for every step, layer and head, the attention mass from each defining
   (right-hand) slot to its own operand slots ("gather", and per operand slot
   ``gather_1..3`` counted from the left, over nodes with two or more operands), to its
   parents' definitions, to itself and elsewhere; and from each operand slot to its
   variable's definition ("lookup", the induction route), to itself and elsewhere.
   ``tables["heads"]`` names a role per head.
2. ``fourier_features``: at the step that writes a node with two or more operands, each
   layer's attention output, MLP output and residual at its defining slot, grouped by the
   node's true value: the share of variance the value explains and how it splits over the
   frequencies of Z_p (the first operand's value is the contrast); for two-operand nodes
   the 2-D spectrum over (a, b), split into axis (one operand alone), diagonal (features
   of a + b, as the paper reports for its layer-2 MLP), anti-diagonal (a - b) and the rest.
3. ``patching_map``: exact activation patching (``workbench.patching.patch``) of the
   residual stream at every step, layer and position; clean vs one leaf literal changed;
   metric = the deepest node's logit difference. Shows where the answer lives, step by step.
4. ``graph_recovery`` / ``graph_scores``: which positions each defining slot reads from, by
   attention at the step that writes it (thresholded; all heads, or the heads that
   ``head_roles`` calls gather / parent heads) and by changing each value code entering
   that step (discrete bottleneck only); mapped to variable -> variable edges and scored
   against the true graph (precision, recall, average precision) at several graph sizes.

    python -m probes.reasoner_circuit --model reasoner --n 200 --out out/reasoner_circuit

writes ``head_roles.csv``, ``head_summary.csv``, ``fourier.csv``, ``fourier_2d.csv``,
``patching.csv``, ``patching_summary.csv``, ``graph_scores.csv``, ``graph_edges.csv`` and
one page, ``report.html``. With the defaults, a model of the paper's interpreted size (d=128,
2 layers) at 32, 64 and 128 nodes takes about 20 minutes on one CPU thread and 2.5 GB, most of
it patching edges at 128 nodes (``--edge-patch-n 0`` skips them).

>>> import models
>>> from probes import reasoner_circuit as rc
>>> model = models.load("reasoner")
>>> problems = rc.sample_problems(model, 100)
>>> roles = rc.head_roles(model, problems)
>>> roles.tables["heads"][["layer", "head", "role"]]
>>> rc.graph_scores(model, sizes=[32, 64], n=16).figure()
"""

from __future__ import annotations

import argparse
import html
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd
import plotly.express as px
import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots
from torch import Tensor
from tqdm.auto import tqdm

from models.reasoner import Reasoner
from models.reasoner_data import encode_batch
from models.reasoner_eval import ood_task
from probes import reasoner as pr
from workbench.checkpoints import atomic_write
from workbench.codebook import fourier_spectrum
from workbench.patching import LoopState, patch
from workbench.results import Result
from workbench.sites import Sites, loop_indices
from workbench.tasks import graph_arith as ga

__all__ = [
    "CircuitResult", "check_reasoner", "sample_problems", "route_masks", "head_roles", "value_spectrum",
    "pair_spectrum", "fourier_features", "patching_map", "attention_edges", "patching_edges", "score_edges",
    "graph_recovery", "graph_scores", "circuit_heads", "findings", "report", "run", "save", "ROUTES", "STATES",
    "THRESHOLDS",
]

DEF_ROUTES = ("gather", "gather_1", "gather_2", "gather_3", "parent_defs", "def_self", "def_other")
OP_ROUTES = ("lookup", "operand_self", "operand_other")
ROUTES = DEF_ROUTES + OP_ROUTES
THRESHOLDS = (0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 0.9)
STATES = ("exact", "rollout")  # what a graph-recovery readout of step s starts from
COMPONENTS = ("hook_attn_out", "hook_mlp_out", "hook_resid_post")
PAIR_KINDS = ("axis_a", "axis_b", "diagonal", "antidiagonal", "other")
_ATTENTION_BUDGET = 2**23  # attention elements [batch x head x query x key] per forward


# ----------------------------------------------------------------- results
@dataclass
class CircuitResult(Result):
    """A ``Result`` whose figure comes from this study's own builder (``builder(result)``)."""

    builder: Optional[Callable] = None

    def figure(self, value: str | None = None, **kwargs) -> go.Figure:
        return self.builder(self, **kwargs)


def check_reasoner(model) -> Reasoner:
    """The model itself if it is a recursive reasoner; otherwise a ``TypeError`` saying what it is."""
    if not isinstance(model, Reasoner):
        raise TypeError(f"the circuit study needs a recursive reasoner (models.reasoner.Reasoner); got "
                        f"{type(model).__module__}.{type(model).__name__}. Pass a reasoner zoo name or checkpoint.")
    return model


def sample_problems(model: Reasoner, n: int, n_nodes: int | None = None, seed: int = 0) -> list[ga.Problem]:
    """``n`` fresh problems of the model's task; other sizes scale the depth cap as in evaluation."""
    train = pr.task_of(model)
    task = train if n_nodes is None or n_nodes == train.n_nodes else ood_task(train, n_nodes)
    return ga.sample(task, n, np.random.default_rng([seed, task.n_nodes]))


def _steps_for(model: Reasoner, problems: Sequence[ga.Problem]) -> int:
    """Rollout steps for a batch, or a clear error when the model has too few hook points."""
    depth = max(p.depth for p in problems)
    T = model.cfg.steps_for_depth(depth)
    if T > model.cfg.max_steps:
        raise ValueError(f"graphs of depth {depth} need {T} steps, but this model has hook points for "
                         f"max_steps={model.cfg.max_steps}; use smaller graphs (--nodes)")
    return T


# ----------------------------------------------------------------- batches
@dataclass
class _Batch:
    index: list[int]  # problem indices (into the caller's list)
    problems: list[ga.Problem]
    encs: list[ga.Encoded]
    arr: dict  # encode_batch arrays [B, L(, k)]
    tokens: Tensor  # [B, L, 4] long
    steps: int


def _batches(model: Reasoner, problems: Sequence[ga.Problem], batch_size: int, progress: bool,
             desc: str) -> Iterator[_Batch]:
    """Problems in batches of similar length; long ones in smaller batches (attention is L^2)."""
    cfg = model.cfg
    order = sorted(range(len(problems)), key=lambda i: ga.n_tokens(problems[i]))
    chunks, i = [], 0
    while i < len(order):
        L = max(ga.n_tokens(problems[j]) for j in order[i: i + batch_size])
        size = max(1, min(batch_size, _ATTENTION_BUDGET // (cfg.n_heads * L * L)))
        chunks.append(order[i: i + size])
        i += size
    for chunk in tqdm(chunks, disable=not progress, desc=desc, leave=False):
        batch = [problems[j] for j in chunk]
        arr = encode_batch(batch, cfg)
        encs = [ga.encode(p, cfg.scheme, cfg.name_pool) for p in batch]
        yield _Batch(chunk, batch, encs, arr, torch.from_numpy(arr["factors"]), _steps_for(model, batch))


def _structure(enc: ga.Encoded) -> tuple[np.ndarray, dict[int, int], dict[int, list[int]]]:
    """(variable named at each position or -1 [L], variable -> its defining position,
    defining position of each non-leaf -> its operand positions, left to right)."""
    var = np.where(enc.factors[:, 0] == ga.VAR, enc.factors[:, 1], -1)
    define = {int(var[i]): int(i) for i in np.flatnonzero(enc.role == ga.ROLE_DEFINE)}
    operands = {}
    for q in define.values():
        ops = np.flatnonzero((enc.equation == enc.equation[q]) & (enc.role == ga.ROLE_OPERAND)).tolist()
        if ops:
            operands[q] = ops
    return var, define, operands


def _allowed(model: Reasoner, tokens: Tensor) -> Tensor:
    """Keys each query may attend to: [B, L, L] bool."""
    mask = model.layout(tokens).mask  # [B, 1, L|1, L]
    B, L = tokens.shape[:2]
    return mask[:, 0].expand(B, L, L)


# -------------------------------------------------------------- 1. head roles
def route_masks(encs: Sequence[ga.Encoded], L: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """route -> (queries [B, L] bool, keys [B, L, L] bool): who attends where on each route.

    Defining slots of non-leaf equations query ``DEF_ROUTES``; operand slots query
    ``OP_ROUTES``. ``*_other`` keys are everything outside that query type's other routes.
    """
    B = len(encs)
    Q = {r: np.zeros((B, L), bool) for r in ROUTES}
    K = {r: np.zeros((B, L, L), bool) for r in ROUTES}
    for b, enc in enumerate(encs):
        var, define, operands = _structure(enc)
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

    def hook(self, batch: _Batch, masks: dict, allowed: Tensor) -> Callable:
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
    for batch in _batches(model, problems, batch_size, progress, "head roles"):
        masks = route_masks(batch.encs, batch.tokens.shape[1])
        hook = tally.hook(batch, masks, _allowed(model, batch.tokens))
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


# ------------------------------------------------------------ 2. Fourier
def value_spectrum(X: np.ndarray, labels: np.ndarray, modulus: int) -> dict:
    """How much of ``X`` [n, d] the labels [n] in Z_p explain, split by frequency.

    Returns ``value_share`` (between-class / total variance), ``power`` [p // 2] (share of
    the class means' non-constant power at k = 1..p//2) and ``missing`` (absent classes;
    power is NaN then).
    """
    X = np.asarray(X, dtype=np.float64)
    labels = np.asarray(labels)
    mu = X.mean(0)
    total = ((X - mu) ** 2).sum(1).mean()
    present = np.unique(labels)
    means = np.stack([X[labels == v].mean(0) for v in present])
    counts = np.array([(labels == v).sum() for v in present])
    between = (counts * ((means - mu) ** 2).sum(1)).sum() / len(X)
    share = float(between / total) if total > 0 else np.nan
    missing = modulus - len(present)
    if missing:
        power = np.full(modulus // 2, np.nan)
    else:
        power = fourier_spectrum(means, modulus)["power"].to_numpy()
    return {"value_share": share, "power": power, "missing": int(missing)}


def pair_spectrum(X: np.ndarray, a: np.ndarray, b: np.ndarray, modulus: int, max_missing: float = 0.1) -> dict:
    """2-D Fourier power of the mean of ``X`` [n, d] over (a, b) in Z_p^2, by frequency kind.

    Kinds (k1, k2 != (0, 0)): ``axis_a`` (k2 = 0: a alone), ``axis_b`` (k1 = 0),
    ``diagonal`` (k1 = k2: features of a + b), ``antidiagonal`` (k1 = -k2: a - b),
    ``other``. Returns each kind's share of the non-constant power, ``uniform`` (the share a
    structureless representation gives each kind) and ``missing`` (empty (a, b) cells: they
    take the mean of the others; above ``max_missing`` of the cells, shares are NaN).
    """
    p = modulus
    X = np.asarray(X, dtype=np.float64)
    cell = np.asarray(a) * p + np.asarray(b)
    counts = np.bincount(cell, minlength=p * p)
    missing = int((counts == 0).sum())
    uniform = {"axis_a": 1 / (p + 1), "axis_b": 1 / (p + 1), "diagonal": 1 / (p + 1),
               "antidiagonal": 1 / (p + 1), "other": (p - 3) / (p + 1)}
    if missing > max_missing * p * p:
        return {"share": {k: np.nan for k in PAIR_KINDS}, "uniform": uniform, "missing": missing}
    sums = np.zeros((p * p, X.shape[1]))
    np.add.at(sums, cell, X)
    means = sums / np.maximum(counts, 1)[:, None]
    means[counts == 0] = means[counts > 0].mean(0)  # a few empty cells: no information, no power
    M = means.reshape(p, p, -1)
    F = np.fft.fft2(M - M.mean((0, 1)), axes=(0, 1))
    power = (np.abs(F) ** 2).sum(-1)  # [p, p]
    k1, k2 = np.meshgrid(np.arange(p), np.arange(p), indexing="ij")
    kinds = {
        "axis_a": (k1 != 0) & (k2 == 0),
        "axis_b": (k1 == 0) & (k2 != 0),
        "diagonal": (k1 == k2) & (k1 != 0),
        "antidiagonal": ((k1 + k2) % p == 0) & (k1 != 0) & (k1 != k2),
    }
    kinds["other"] = ~(kinds["axis_a"] | kinds["axis_b"] | kinds["diagonal"] | kinds["antidiagonal"]) \
        & ~((k1 == 0) & (k2 == 0))
    total = power.sum()
    share = {k: float(power[m].sum() / total) if total > 0 else np.nan for k, m in kinds.items()}
    return {"share": share, "uniform": uniform, "missing": 0}


@torch.no_grad()
def _collect_writes(model: Reasoner, problems: Sequence[ga.Problem], components: Sequence[str], batch_size: int,
                    progress: bool) -> tuple[dict[tuple[str, int], np.ndarray], pd.DataFrame]:
    """Activations at each multi-operand node's defining slot at the step that writes it.

    Returns ({(component, layer): [n, d]}, rows with value, a, b, fan_in, depth per sample).
    """
    store: dict[tuple[str, int], list] = {}
    rows = []
    for batch in _batches(model, problems, batch_size, progress, "fourier"):
        picks = []  # (b, q, step) of every multi-operand defining slot
        for b, (p, enc) in enumerate(zip(batch.problems, batch.encs)):
            value = dict(zip((e.target for e in p.equations), p.values))
            for i, eq in enumerate(p.equations):
                if len(eq.operands) < 2:
                    continue
                q = int(np.flatnonzero((enc.equation == i) & (enc.role == ga.ROLE_DEFINE))[0])
                picks.append((b, q, int(enc.fill_step[q]) - 1))
                ops = [value[n] for n in eq.operands]
                rows.append({"problem": batch.index[b], "value": p.values[i], "a": ops[0], "b": ops[1],
                             "fan_in": len(ops), "depth": p.depths[i]})
        if not picks:
            continue
        pick = np.array(picks)
        found: dict[tuple[str, int], np.ndarray] = {}

        def hook(act: Tensor, hook, pick=pick, found=found) -> None:
            idx = loop_indices(hook.name)
            sel = pick[:, 2] == idx["steps"]  # slots written at this step
            key = (hook.name.rsplit(".", 1)[-1], idx["blocks"])
            rows_here = found.setdefault(key, np.zeros((len(pick), act.shape[-1]), dtype=np.float32))
            rows_here[sel] = act[pick[sel, 0], pick[sel, 1]].float().numpy()

        names = lambda n: ".blocks." in n and n.rsplit(".", 1)[-1] in components  # noqa: E731
        model.run_with_hooks(batch.tokens, steps=batch.steps, fwd_hooks=[(names, hook)])
        for key, X in found.items():
            store.setdefault(key, []).append(X)
    return {key: np.concatenate(parts) for key, parts in store.items()}, pd.DataFrame(rows)


def fourier_features(model: Reasoner, problems: Sequence[ga.Problem], *, components: Sequence[str] = COMPONENTS,
                     batch_size: int = 32, progress: bool = True) -> CircuitResult:
    """Fourier features of the sum at each layer's outputs (see the module docstring, item 2).

    ``df``: component, layer, target ("value": the node's value; "operand_1": its first
    operand's value, a contrast), value_share, frequency, power (share of the class means'
    power), n. ``tables["pairs"]``: component, layer, kind, share, uniform, missing (two-operand
    nodes, over (a, b)).
    """
    check_reasoner(model)
    p = model.cfg.modulus
    acts, rows = _collect_writes(model, problems, components, batch_size, progress)
    spec, pairs = [], []
    for (comp, layer), X in sorted(acts.items()):
        for target, labels in (("value", rows["value"]), ("operand_1", rows["a"])):
            s = value_spectrum(X, labels.to_numpy(), p)
            for k, pw in enumerate(s["power"], start=1):
                spec.append({"component": comp, "layer": layer, "target": target, "value_share": s["value_share"],
                             "frequency": k, "power": pw, "missing": s["missing"], "n": len(X)})
        two = (rows["fan_in"] == 2).to_numpy()
        if two.any():
            ps = pair_spectrum(X[two], rows["a"].to_numpy()[two], rows["b"].to_numpy()[two], p)
            for kind in PAIR_KINDS:
                pairs.append({"component": comp, "layer": layer, "kind": kind, "share": ps["share"][kind],
                              "uniform": ps["uniform"][kind], "missing": ps["missing"], "n": int(two.sum())})
    meta = {"problems": len(problems), "samples": len(rows), "modulus": p}
    return CircuitResult("fourier", pd.DataFrame(spec), "power", meta, {"pairs": pd.DataFrame(pairs)},
                         builder=_fourier_figure)


def _fourier_figure(result: CircuitResult, component: str = "hook_mlp_out", **_) -> go.Figure:
    """Left: variance share explained by the sum vs an operand per (component, layer).
    Middle: frequency spectrum of the sum at ``component``. Right: 2-D frequency kinds."""
    df, pairs = result.df, result.tables["pairs"]
    fig = make_subplots(rows=1, cols=3, subplot_titles=(
        "variance explained by the value (vs first operand)", f"spectrum of the value at {component}",
        "2-operand nodes: 2-D power by kind"))
    share = df.drop_duplicates(["component", "layer", "target"]).copy()
    share["site"] = share.component.str.replace("hook_", "") + " L" + share.layer.astype(str)
    for target, g in share.groupby("target"):
        fig.add_trace(go.Bar(x=g.site, y=g.value_share, name=f"grouped by {target}"), 1, 1)
    for layer, g in df[(df.component == component) & (df.target == "value")].groupby("layer"):
        fig.add_trace(go.Scatter(x=g.frequency, y=g.power, mode="lines+markers", name=f"{component} L{layer}"), 1, 2)
    if len(pairs):
        pairs = pairs.assign(site=pairs.component.str.replace("hook_", "") + " L" + pairs.layer.astype(str))
        for kind, g in pairs.groupby("kind", sort=False):
            fig.add_trace(go.Bar(x=g.site, y=g.share, name=kind), 1, 3)
    fig.update_yaxes(title_text="share", row=1, col=1)
    fig.update_xaxes(title_text="frequency k", row=1, col=2)
    return fig.update_layout(title="Fourier features of the sum at the step that writes each node",
                             barmode="group", height=450)


# ---------------------------------------------------------- 3. patching map
def _path_positions(enc: ga.Encoded, problem: ga.Problem, target: int, leaf: int) -> np.ndarray:
    """[L] bool: slots whose value carries the changed leaf's influence towards the target."""
    by_name = {e.target: i for i, e in enumerate(problem.equations)}
    parents = {i: [by_name[n] for n in e.operands] for i, e in enumerate(problem.equations)}

    def closure(start: int, step: Callable[[int], list[int]]) -> set[int]:
        seen, stack = {start}, [start]
        while stack:
            for j in step(stack.pop()):
                if j not in seen:
                    seen.add(j)
                    stack.append(j)
        return seen

    children = lambda i: [j for j, ps in parents.items() if i in ps]  # noqa: E731
    path = closure(target, parents.__getitem__) & closure(leaf, children)
    names = {problem.equations[i].target for i in path}
    var = enc.factors[:, 1]
    own = np.isin(enc.equation, list(path))
    return own & ((np.isin(enc.role, [ga.ROLE_DEFINE, ga.ROLE_LITERAL]))
                  | ((enc.role == ga.ROLE_OPERAND) & np.isin(var, list(names))))


_ROLE_NAMES = {ga.ROLE_OTHER: "other", ga.ROLE_LITERAL: "literal", ga.ROLE_OPERAND: "operand",
               ga.ROLE_DEFINE: "define"}


def patching_map(model: Reasoner, problems: Sequence[ga.Problem], *, seed: int = 0,
                 progress: bool = True) -> CircuitResult:
    """Exact patching of the residual stream at every step, layer and position, one problem at a time.

    Clean vs one leaf literal changed (``probes.reasoner.patching_setup``); metric = the
    deepest node's logit difference after the last step. ``df``: problem, step, layer
    (``n_layers`` = ``hook_resid_final``), pos, token, role, fill_step, on_path (the slot
    carries the changed leaf towards the target), target, changed, score.
    ``tables["summary"]``: per problem, step and layer, the top position and the share of
    positive score on path slots.
    """
    check_reasoner(model)
    frames = []
    sites = Sites(["steps.*.blocks.*.hook_resid_pre", "steps.*.hook_resid_final"], positions="each")
    for i, problem in enumerate(tqdm(problems, disable=not progress, desc="patching", leave=False)):
        setup = pr.patching_setup(model, [problem], seed=seed + i)
        _steps_for(model, [problem])
        res = patch(model, setup.clean, setup.corrupted, setup.metric, sites=sites,
                    forward_kwargs=setup.forward_kwargs)
        frames.append(_annotate(model, res.df, problem, int(setup.target_pos[0]), int(setup.leaf_pos[0]), i))
    df = pd.concat(frames, ignore_index=True)
    meta = {"problems": len(problems), "metric": "logit difference (clean - corrupted answer) at the deepest node"}
    return CircuitResult("patching_map", df, "score", meta, {"summary": _patch_summary(df)}, builder=_patch_figure)


def _annotate(model: Reasoner, df: pd.DataFrame, problem: ga.Problem, target_pos: int, leaf_pos: int,
              index: int) -> pd.DataFrame:
    enc = ga.encode(problem, model.cfg.scheme, model.cfg.name_pool)
    on_path = _path_positions(enc, problem, int(enc.equation[target_pos]), int(enc.equation[leaf_pos]))
    pos = df["pos"].astype(int).to_numpy()
    layer = df["layer"].fillna(model.cfg.n_layers).astype(int) if "layer" in df else model.cfg.n_layers
    return pd.DataFrame({
        "problem": index, "step": df["step"].astype(int), "layer": layer, "pos": pos,
        "token": [ga.describe_token(enc, k, problem.modulus) for k in pos],
        "role": [_ROLE_NAMES[int(enc.role[k])] for k in pos], "fill_step": enc.fill_step[pos],
        "on_path": on_path[pos], "target": pos == target_pos, "changed": pos == leaf_pos,
        "metric": df["metric"], "score": df["score"],
    })


def _patch_summary(df: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for (i, t, layer), g in df.groupby(["problem", "step", "layer"]):
        top = g.loc[g.score.idxmax()]
        pos_mass = g.score.clip(lower=0)
        rows.append({"problem": i, "step": t, "layer": layer, "top_pos": int(top.pos), "top_token": top.token,
                     "top_role": top.role, "top_score": float(top.score), "top_on_path": bool(top.on_path),
                     "path_share": float(pos_mass[g.on_path].sum() / pos_mass.sum()) if pos_mass.sum() > 0 else np.nan})
    return pd.DataFrame(rows)


def _patch_figure(result: CircuitResult, problem: int = 0, **_) -> go.Figure:
    """Step x position heatmaps of one problem, one panel per layer (last: end of step)."""
    df = result.df[result.df.problem == problem]
    layers = sorted(df.layer.unique())
    names = [f"resid_pre layer {int(l)}" if l < max(layers) else "resid_final (end of step)" for l in layers]
    fig = make_subplots(rows=len(layers), cols=1, subplot_titles=names, vertical_spacing=0.08)
    lim = max(1.0, float(df.score.abs().max()))
    for i, layer in enumerate(layers, start=1):
        g = df[df.layer == layer]
        grid = g.pivot_table(index="step", columns="pos", values="score")
        lab = g.drop_duplicates("pos").set_index("pos")
        xt = [f"{k}:{lab.token[k]}" + ("*" if lab.on_path[k] else "") + ("(T)" if lab.target[k] else "")
              for k in grid.columns]
        fig.add_trace(go.Heatmap(z=grid.values, x=xt, y=list(grid.index), coloraxis="coloraxis",
                                 hovertemplate="step %{y}<br>%{x}<br>score %{z:.3f}<extra></extra>"), i, 1)
        fig.update_yaxes(title_text="step", autorange="reversed", row=i, col=1)
    fig.update_layout(coloraxis=dict(colorscale="RdBu", cmid=0, cmin=-lim, cmax=lim, colorbar_title="score"),
                      height=max(400, 300 * len(layers)),
                      title=f"Patching map, problem {problem}: clean residual into the corrupted run "
                            "(1 = clean answer restored; * = slot on the changed leaf's path, (T) = target)")
    return fig


# --------------------------------------------------------- 4. graph recovery
def _exact_tokens(arr: dict, s: int) -> Tensor:
    """Tokens whose value factor is the exact algorithm's state after s steps: [B, L, 4]."""
    values = np.where(arr["slot"] & (arr["fill_step"] <= s), arr["answer"], arr["factors"][..., 3])
    out = arr["factors"].copy()
    out[..., 3] = values
    return torch.from_numpy(out)


def _writes(arr: dict) -> np.ndarray:
    """[B, L] bool: defining slots of non-leaf equations (the slots whose reads define the graph)."""
    return (arr["role"] == ga.ROLE_DEFINE) & (arr["deps"] >= 0).any(-1)


@torch.no_grad()
def attention_edges(model: Reasoner, problems: Sequence[ga.Problem], *,
                    head_sets: Mapping[str, Sequence[tuple[int, int]] | None] | None = None,
                    states: Sequence[str] = STATES, fwd_hooks: Sequence = (), batch_size: int = 32,
                    progress: bool = True) -> tuple[dict[tuple[str, str], list[np.ndarray]], np.ndarray]:
    """How strongly each defining slot attends to each position, at the step that writes it.

    ``head_sets``: name -> (layer, head) pairs to read (None = every head); default
    ``{"all heads": None}``. ``states``: "exact" runs that step once from the exact
    algorithm's state (each step's reads, free of earlier mistakes); "rollout" reads the
    model's own rollout. Returns ({(head set, state): per problem a [L_i, L_i] array whose
    row q is the max over layers and the set's heads of the attention from q at step
    fill_step(q) - 1, zero for other rows}, node accuracy per problem after the rollout).
    ``fwd_hooks`` run before the readout (e.g. to force attention patterns).
    """
    check_reasoner(model)
    head_sets = dict(head_sets or {"all heads": None})
    bad = [s for s in states if s not in STATES]
    if bad:
        raise ValueError(f"states {bad} are unknown; allowed: {STATES}")
    scores = {(name, state): [None] * len(problems) for name in head_sets for state in states}
    node_acc = np.zeros(len(problems))
    for batch in _batches(model, problems, batch_size, progress, "attention edges"):
        B, L = batch.tokens.shape[:2]
        A = {key: torch.zeros(B, L, L) for key in scores}
        now = {"state": "rollout", "step": None}  # step: the algorithm's step a one-step run stands for
        hooks = list(fwd_hooks) + [(lambda n: n.endswith("attn.hook_pattern"),
                                    _max_attention_hook(batch, head_sets, A, now))]
        if "exact" in states:
            now["state"] = "exact"
            for s in sorted({int(f) - 1 for f in batch.arr["fill_step"][_writes(batch.arr)]}):
                now["step"] = s
                model.run_with_hooks(_exact_tokens(batch.arr, s), steps=1, fwd_hooks=hooks)
            now.update(state="rollout", step=None)
        if "rollout" in states:
            out = model.run_with_hooks(batch.tokens, steps=batch.steps, fwd_hooks=hooks)
        else:
            out = model(batch.tokens, steps=batch.steps)
        final = out.codes[:, -1, :, 3].numpy()
        define = batch.arr["role"] == ga.ROLE_DEFINE
        acc = ((final == batch.arr["answer"]) & define).sum(1) / define.sum(1)
        for b, i in enumerate(batch.index):
            n = len(batch.encs[b].role)
            node_acc[i] = acc[b]
            for key in scores:
                scores[key][i] = A[key][b, :n, :n].numpy()
    return scores, node_acc


def _max_attention_hook(batch: _Batch, head_sets: dict, A: dict, now: dict) -> Callable:
    """A pattern hook keeping, per head set, the max attention of each slot at its writing step."""
    fill = torch.from_numpy(batch.arr["fill_step"])
    writes = torch.from_numpy(_writes(batch.arr))

    def hook(pattern: Tensor, hook) -> None:
        idx = loop_indices(hook.name)
        t = idx["steps"] if now["step"] is None else now["step"]
        sel = (writes & (fill == t + 1))[..., None]  # [B, L, 1]
        if not sel.any():
            return
        for name, heads in head_sets.items():
            hs = list(range(pattern.shape[1])) if heads is None else [h for (lay, h) in heads if lay == idx["blocks"]]
            if hs:
                acc = A[(name, now["state"])]
                acc.copy_(torch.where(sel, torch.maximum(acc, pattern[:, hs].float().amax(1)), acc))

    return hook


@torch.no_grad()
def patching_edges(model: Reasoner, problems: Sequence[ga.Problem], *, state: str = "exact", n_deltas: int = 1,
                   nodes_per_problem: int | None = 4, seed: int = 0, memory_mb: float = 256,
                   progress: bool = True) -> list[np.ndarray]:
    """Causal reads of defining slots, by changing one value code entering the step that writes them.

    For ``nodes_per_problem`` random non-leaf nodes (None = all) with defining slot q, written
    at step s = fill_step(q) - 1, and every variable slot k holding a value in the input of
    step s, the value at k is shifted by ``n_deltas`` nonzero amounts; the score is the
    fraction of shifts that change the value q decodes at step s (with ADD, any shift of a
    true operand changes the sum). The input of step s is the exact algorithm's state
    (``state="exact"``) or the model's own codes (``"rollout"``, resumed from a recorded
    run). Returns per problem a [L, L] array (row q, column k; NaN rows for nodes not
    tested). Needs the discrete bottleneck (the codes are the state).
    """
    check_reasoner(model)
    if model.cfg.latent != "discrete":
        raise ValueError("patching edges change the discrete codes between steps; this model has latent="
                         f"{model.cfg.latent!r}")
    if state not in STATES:
        raise ValueError(f"state={state!r}; allowed: {STATES}")
    rng = np.random.default_rng(seed)
    out = []
    for problem in tqdm(problems, disable=not progress, desc="patching edges", leave=False):
        deltas = rng.permutation(np.arange(1, model.cfg.modulus))[:n_deltas]
        out.append(_patching_edges_one(model, problem, deltas, state, nodes_per_problem, rng, memory_mb))
    return out


def _patching_edges_one(model: Reasoner, problem: ga.Problem, deltas: np.ndarray, state: str,
                        nodes: int | None, rng: np.random.Generator, memory_mb: float) -> np.ndarray:
    cfg, p = model.cfg, model.cfg.modulus
    arr = encode_batch([problem], cfg)
    tokens = torch.from_numpy(arr["factors"])  # [1, L, 4]
    L = tokens.shape[1]
    writes = _writes(arr)[0]
    fill = arr["fill_step"][0]
    tested = np.flatnonzero(writes)
    if nodes is not None and nodes < len(tested):
        tested = np.sort(rng.choice(tested, nodes, replace=False))
    is_var = arr["factors"][0, :, 0] == ga.VAR
    if state == "rollout":
        _, cache = model.run_with_cache(tokens, steps=_steps_for(model, [problem]),
                                        names_filter=lambda n: ".bottleneck." in n)
    score = np.full((L, L), np.nan)
    per_copy = cfg.n_heads * L * L * 4 + 16 * L * cfg.d_model * 4  # bytes of one copy's step
    chunk = max(1, int(memory_mb * 2**20 // per_copy))
    for s in sorted({int(fill[q]) - 1 for q in tested}):
        if state == "exact":
            start, codes = None, _exact_tokens(arr, s)[0]
        elif s >= 1:
            start = model.resume_state(cache, s)
            codes = start.carry["codes"][0]  # [L, 4]: the model's input of step s
        else:
            continue

        def run(new: Tensor, start: LoopState | None, s: int = s) -> Tensor:
            """Values decoded at step s from inputs ``new`` [k, L, 4]: [k, L]."""
            if start is None:  # the exact state as the input of a single step
                return model(new, steps=1).codes[:, 0, :, 3]
            return model(tokens.repeat(len(new), 1, 1), steps=s + 1, start=start).codes[:, s, :, 3]

        before = run(codes[None], start)[0]
        queries = tested[fill[tested] == s + 1]
        score[queries] = 0.0
        copies = [(k, int(d)) for k in np.flatnonzero(is_var & (codes[:, 3].numpy() < p)) for d in deltas]
        for i in range(0, len(copies), chunk):
            part = copies[i: i + chunk]
            new = codes[None].repeat(len(part), 1, 1)
            for j, (k, d) in enumerate(part):
                new[j, k, 3] = (new[j, k, 3] + d) % p
            rep = None
            if start is not None:
                rep = _repeat_state(start, len(part))
                rep.carry["x"], rep.carry["codes"] = model.embed(new), new
            changed = (run(new, rep) != before).numpy()  # [copies, L]
            for j, (k, _) in enumerate(part):
                score[queries, k] += changed[j, queries] / len(deltas)
    return score


def _repeat_state(state: LoopState, k: int) -> LoopState:
    """A batch-1 loop state repeated k times along the batch."""
    rep = lambda x: x.repeat(k, *[1] * (x.ndim - 1))  # noqa: E731
    record = {key: [rep(x) for x in v] for key, v in state.record.items()}
    return LoopState(state.t, {key: rep(v) for key, v in state.carry.items()}, record, state.inner)


def _edge_table(problem: ga.Problem, enc: ga.Encoded, score: np.ndarray) -> pd.DataFrame:
    """Candidate edges parent -> child with score = max over the parent's slots of score[child's slot, .].

    Children whose row is NaN (not tested) are left out.
    """
    var, define, _ = _structure(enc)
    rows = []
    for eq in problem.equations:
        q = define[eq.target]
        if eq.is_leaf or np.isnan(score[q]).all():
            continue
        for v in sorted(define):
            if v != eq.target:
                rows.append({"child": eq.target, "parent": v, "score": float(np.nanmax(score[q, var == v])),
                             "true": v in eq.operands})
    return pd.DataFrame(rows, columns=["child", "parent", "score", "true"])


def score_edges(edges: pd.DataFrame, thresholds: Sequence[float] = THRESHOLDS) -> pd.DataFrame:
    """Precision, recall, F1 and exactly recovered graphs at each threshold, plus average precision.

    ``edges``: one row per candidate edge with problem, score, true.
    """
    from sklearn.metrics import average_precision_score

    y, s = edges["true"].to_numpy(bool), edges["score"].to_numpy(float)
    ap = float(average_precision_score(y, s)) if 0 < y.sum() < len(y) else np.nan
    rows = []
    for th in thresholds:
        pred = s >= th
        tp, fp, fn = int((pred & y).sum()), int((pred & ~y).sum()), int((~pred & y).sum())
        prec = tp / (tp + fp) if tp + fp else np.nan
        rec = tp / (tp + fn) if tp + fn else np.nan
        exact = edges.assign(ok=pred == y).groupby("problem")["ok"].all().mean()
        rows.append({"threshold": th, "precision": prec, "recall": rec,
                     "f1": 2 * prec * rec / (prec + rec) if tp else 0.0,
                     "exact_graphs": float(exact), "true_edges": int(y.sum()), "predicted_edges": int(pred.sum()),
                     "average_precision": ap})
    return pd.DataFrame(rows)


def graph_recovery(model: Reasoner, problems: Sequence[ga.Problem], *,
                   circuit_heads: Sequence[tuple[int, int]] | None = None, patching: bool = True,
                   n_patching: int | None = None, nodes_per_problem: int | None = 4, n_deltas: int = 1,
                   states: Sequence[str] = STATES, fwd_hooks: Sequence = (), thresholds: Sequence[float] = THRESHOLDS,
                   seed: int = 0, batch_size: int = 32, progress: bool = True) -> CircuitResult:
    """Recover each problem's graph from the model and score it against the truth.

    Methods: ``attention (all heads)``; ``attention (circuit heads)`` when ``circuit_heads``
    ((layer, head) pairs) is given; ``patching`` (code changes on ``nodes_per_problem`` nodes
    of the first ``n_patching`` problems; off under ``fwd_hooks``) when ``patching`` and the
    latent is discrete. Each method reads the writing step from each of ``states``
    ("exact": one step from the exact algorithm's state; "rollout": the model's own run).
    ``df``: method, state, threshold, precision, recall, f1, exact_graphs, true_edges,
    predicted_edges, average_precision, problems, node_acc. ``tables["edges"]``: candidate
    edges that are true or reach the lowest threshold (method, state, problem, child,
    parent, score, true).
    """
    check_reasoner(model)
    encs = [ga.encode(p, model.cfg.scheme, model.cfg.name_pool) for p in problems]
    head_sets = {"attention (all heads)": None}
    if circuit_heads:
        head_sets["attention (circuit heads)"] = list(circuit_heads)
    runs, node_acc = attention_edges(model, problems, head_sets=head_sets, states=states, fwd_hooks=fwd_hooks,
                                     batch_size=batch_size, progress=progress)
    if patching and n_patching != 0 and model.cfg.latent == "discrete" and not fwd_hooks:
        sub = list(problems[: n_patching or len(problems)])
        for state in states:
            runs[("patching", state)] = patching_edges(model, sub, state=state, n_deltas=n_deltas, seed=seed,
                                                       nodes_per_problem=nodes_per_problem, progress=progress)
    tables, edges = [], []
    for (method, state), scores in runs.items():
        e = pd.concat([_edge_table(p, enc, sc).assign(problem=i)
                       for i, (p, enc, sc) in enumerate(zip(problems, encs, scores))], ignore_index=True)
        tables.append(score_edges(e, thresholds).assign(method=method, state=state, problems=len(scores),
                                                        node_acc=float(node_acc[: len(scores)].mean())))
        edges.append(e[e.true | (e.score >= min(thresholds))].assign(method=method, state=state))  # keep it small
    df = pd.concat(tables, ignore_index=True)
    df = df[["method", "state", *[c for c in df.columns if c not in ("method", "state")]]]
    meta = {"problems": len(problems), "n_nodes": problems[0].n_nodes, "circuit_heads": list(circuit_heads or [])}
    return CircuitResult("graph", df, "f1", meta, {"edges": pd.concat(edges, ignore_index=True)},
                         builder=_graph_figure)


def graph_scores(model: Reasoner, sizes: Sequence[int] | None = None, n: int = 32, *, seed: int = 0,
                 threshold: float = 0.3, patch_threshold: float = 0.5, progress: bool = True,
                 **kwargs) -> CircuitResult:
    """``graph_recovery`` at several graph sizes (default: the training size, 2x and 4x).

    ``df`` adds ``n_nodes`` and ``default`` (the row at ``threshold`` for attention methods
    and ``patch_threshold`` for patching). Sizes whose depth needs more steps than the model
    has hook points for are skipped with a warning.
    """
    check_reasoner(model)
    N = pr.task_of(model).n_nodes
    sizes = list(sizes or (N, 2 * N, 4 * N))
    tables, edges = [], []
    for size in tqdm(sizes, disable=not progress, desc="graph sizes"):
        try:
            problems = sample_problems(model, n, size, seed)
            res = graph_recovery(model, problems, seed=seed, progress=progress,
                                 thresholds=sorted({*THRESHOLDS, threshold, patch_threshold}), **kwargs)
        except ValueError as e:
            warnings.warn(f"graph size {size} skipped: {e}")
            continue
        tables.append(res.df.assign(n_nodes=size))
        edges.append(res.tables["edges"].assign(n_nodes=size))
    if not tables:
        raise ValueError(f"no graph size in {sizes} could be run on this model")
    df = pd.concat(tables, ignore_index=True)
    df["default"] = np.where(df.method == "patching", df.threshold == patch_threshold, df.threshold == threshold)
    meta = {"sizes": sizes, "n": n, "threshold": threshold, "patch_threshold": patch_threshold}
    return CircuitResult("graph", df, "f1", meta, {"edges": pd.concat(edges, ignore_index=True)},
                         builder=_graph_figure)


def _graph_figure(result: CircuitResult, **_) -> go.Figure:
    """Precision and recall (default threshold) and average precision vs graph size, per method."""
    df = result.df
    if "n_nodes" not in df:
        df = df.assign(n_nodes=result.meta.get("n_nodes", 0))
    if "default" not in df:
        df = df.assign(default=df.threshold == 0.3)
    d = df[df["default"]]
    fig = make_subplots(rows=1, cols=2, subplot_titles=("precision (solid) and recall (dashed) at the default "
                                                        "threshold", "average precision (threshold-free) and "
                                                                     "node accuracy (dotted)"))
    if "state" not in d:
        d = d.assign(state="")
    colors = px.colors.qualitative.Plotly
    for i, ((method, state), g) in enumerate(d.groupby(["method", "state"], sort=False)):
        c = colors[i % len(colors)]
        method = f"{method}, {state} state" if state else method
        fig.add_trace(go.Scatter(x=g.n_nodes, y=g.precision, name=f"{method} precision", mode="lines+markers",
                                 line=dict(color=c)), 1, 1)
        fig.add_trace(go.Scatter(x=g.n_nodes, y=g.recall, name=f"{method} recall", mode="lines+markers",
                                 line=dict(color=c, dash="dash")), 1, 1)
        fig.add_trace(go.Scatter(x=g.n_nodes, y=g.average_precision, name=f"{method} AP", mode="lines+markers",
                                 line=dict(color=c), showlegend=False), 1, 2)
    acc = d[d.method == d.method.iloc[0]].drop_duplicates("n_nodes")
    fig.add_trace(go.Scatter(x=acc.n_nodes, y=acc.node_acc, name="node accuracy", mode="lines+markers",
                             line=dict(color="grey", dash="dot")), 1, 2)
    fig.update_xaxes(title_text="nodes per graph", type="log")
    fig.update_yaxes(range=[0, 1.05])
    return fig.update_layout(title="Recovering each problem's graph from the model's internals", height=450)


# ----------------------------------------------------------------- report
def circuit_heads(heads: pd.DataFrame) -> list[tuple[int, int]]:
    """(layer, head) of every head whose role reads operand slots or parents' definitions."""
    mask = heads.role.str.contains("gather|parents")
    return [(int(r.layer), int(r.head)) for r in heads[mask].itertuples()]


def findings(roles: CircuitResult, fourier: CircuitResult, patching: CircuitResult | None,
             graph: CircuitResult) -> list[str]:
    """Short sentences stating what the numbers show (for the report and the terminal)."""
    out = []
    heads = roles.tables["heads"]
    for label, pat in (("gather (defining slot -> own operand slots)", "gather"),
                       ("parents' definitions", "parents"), ("lookup (operand -> definition)", "lookup")):
        sel = heads[heads.role.str.contains(pat)]
        names = ", ".join(f"L{int(r.layer)}H{int(r.head)}" for r in sel.itertuples()) or "none"
        out.append(f"{label} heads: {names}")
    out += _fourier_findings(fourier)
    if patching is not None:
        s = patching.tables["summary"]
        out.append(f"patching: the top site lies on the changed leaf's path in {s.top_on_path.mean():.0%} of "
                   f"(problem, step, layer) cells; mean share of positive score on path slots "
                   f"{s.path_share.mean():.2f}")
        out += _answer_timing(patching.df)
    d = graph.df[graph.df["default"]] if "default" in graph.df else graph.df
    for r in d.itertuples():
        out.append(f"graph recovery, {r.method}, {r.state} state, N={r.n_nodes}: precision {r.precision:.2f}, "
                   f"recall {r.recall:.2f}, AP {r.average_precision:.2f}, exact graphs {r.exact_graphs:.0%} "
                   f"(node accuracy {r.node_acc:.2f})")
    return out


def _answer_timing(df: pd.DataFrame) -> list[str]:
    """Per problem: the first step whose end-of-step residual at the target slot restores the answer."""
    out = []
    for i, g in df[df.target & (df.layer == df.layer.max())].groupby("problem"):
        hit = g[g.score >= 0.5]
        first = int(hit.step.min()) if len(hit) else None
        out.append(f"patching, problem {i}: patching only the target slot (end of step) restores the answer "
                   f"from step {first if first is not None else 'never'} on (the exact algorithm writes it at step "
                   f"{int(g.fill_step.iloc[0]) - 1})")
    return out


def _fourier_findings(fourier: CircuitResult) -> list[str]:
    """Where the value is carried most, and per MLP layer: value share, top frequency, diagonal power."""
    df, pairs = fourier.df[fourier.df.target == "value"], fourier.tables["pairs"]
    if not len(df):
        return ["Fourier features: no node with two or more operands in these problems"]
    sites = df.drop_duplicates(["component", "layer"])
    best = sites.loc[sites.value_share.idxmax()]
    out = [f"the node's value explains the largest share of variance at {best.component} layer {int(best.layer)} "
           f"({best.value_share:.2f})"]
    for layer, g in df[df.component == "hook_mlp_out"].groupby("layer"):
        line = f"MLP output, layer {int(layer)}: value explains {g.value_share.iloc[0]:.2f} of the variance"
        if g.power.notna().any():
            top = g.loc[g.power.idxmax()]
            line += f"; top frequency k={int(top.frequency)} ({top.power:.2f} of the power)"
        diag = pairs[(pairs.component == "hook_mlp_out") & (pairs.layer == layer) & (pairs.kind == "diagonal")] \
            if len(pairs) else pairs
        if len(diag) and diag.share.notna().all():
            line += f"; diagonal (a+b) share {diag.share.iloc[0]:.2f} (structureless {diag.uniform.iloc[0]:.2f})"
        out.append(line)
    return out


def report(path: str | Path, model_name: str, parts: dict[str, CircuitResult | None], notes: list[str]) -> Path:
    """One HTML page: the findings, then each part's figure and main table."""
    blocks = [f"<h1>Circuit study of {html.escape(model_name)}</h1>",
              "<ul>" + "".join(f"<li>{html.escape(n)}</li>" for n in notes) + "</ul>"]
    first = True
    titles = {"head_roles": "1. Head roles", "fourier": "2. Fourier features of the sum",
              "patching": "3. Patching map", "graph": "4. Graph recovery across sizes"}
    tables = {"head_roles": lambda r: r.tables["heads"], "fourier": lambda r: r.tables["pairs"],
              "patching": lambda r: r.tables["summary"].head(60),
              "graph": lambda r: r.df[r.df["default"]] if "default" in r.df else r.df}
    for key, res in parts.items():
        if res is None:
            continue
        fig = res.figure().to_html(full_html=False, include_plotlyjs="cdn" if first else False)
        first = False
        blocks += [f"<h2>{titles[key]}</h2>", fig, tables[key](res).round(3).to_html(index=False, border=0)]
    page = ("<!doctype html><html><head><meta charset='utf-8'><title>Reasoner circuit study</title>"
            "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;font-size:12px}"
            "td,th{padding:2px 6px;border-bottom:1px solid #ddd}</style></head><body>"
            + "\n".join(blocks) + "</body></html>")
    atomic_write(path, lambda tmp: Path(tmp).write_text(page))
    return Path(path)


def run(model: Reasoner, *, sizes: Sequence[int] | None = None, n: int = 200, graph_n: int = 32,
        patch_n: int = 2, edge_patch_n: int = 4, edge_nodes: int = 2, threshold: float = 0.3, seed: int = 0,
        batch_size: int = 32, progress: bool = True) -> dict[str, CircuitResult | None]:
    """All four parts; head roles, Fourier features and patching at the first size."""
    check_reasoner(model)
    N = pr.task_of(model).n_nodes
    sizes = list(sizes or (N, 2 * N, 4 * N))
    problems = sample_problems(model, n, sizes[0], seed)
    roles = head_roles(model, problems, batch_size=batch_size, progress=progress)
    fourier = fourier_features(model, problems, batch_size=batch_size, progress=progress)
    patching = None
    if patch_n:
        try:
            patching = patching_map(model, problems[:patch_n], seed=seed, progress=progress)
        except ValueError as e:  # e.g. a change that leaves the metric unchanged
            warnings.warn(f"patching map skipped: {e}")
    graph = graph_scores(model, sizes, graph_n, seed=seed, threshold=threshold, progress=progress,
                         circuit_heads=circuit_heads(roles.tables["heads"]) or None, n_patching=edge_patch_n,
                         nodes_per_problem=edge_nodes, batch_size=batch_size)
    return {"head_roles": roles, "fourier": fourier, "patching": patching, "graph": graph}


def save(parts: dict[str, CircuitResult | None], out: str | Path, model_name: str) -> list[Path]:
    """Every table as CSV and ``report.html`` into ``out``."""
    out = Path(out)
    files = {"head_roles.csv": ("head_roles", None), "head_summary.csv": ("head_roles", "heads"),
             "fourier.csv": ("fourier", None), "fourier_2d.csv": ("fourier", "pairs"),
             "patching.csv": ("patching", None), "patching_summary.csv": ("patching", "summary"),
             "graph_scores.csv": ("graph", None), "graph_edges.csv": ("graph", "edges")}
    paths = []
    for name, (key, table) in files.items():
        if parts.get(key) is not None:
            paths.append(parts[key].to_csv(out / name, table=table))
    notes = findings(parts["head_roles"], parts["fourier"], parts["patching"], parts["graph"])
    paths.append(report(out / "report.html", model_name, parts, notes))
    return paths


def main(argv: list[str] | None = None) -> None:
    import models
    from workbench.checkpoints import CheckpointError

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="reasoner", help="zoo name or checkpoint folder")
    parser.add_argument("--nodes", type=int, nargs="+", default=None,
                        help="graph sizes for graph recovery (default: training size, 2x, 4x); parts 1-3 use the first")
    parser.add_argument("--n", type=int, default=200, help="problems for head roles and Fourier features")
    parser.add_argument("--graph-n", type=int, default=32, help="problems per graph size for graph recovery")
    parser.add_argument("--patch-n", type=int, default=2, help="problems for the patching map (0 = skip)")
    parser.add_argument("--edge-patch-n", type=int, default=4, help="problems per size for patching edges (0 = skip)")
    parser.add_argument("--edge-nodes", type=int, default=2, help="nodes per problem tested by patching edges")
    parser.add_argument("--threshold", type=float, default=0.3, help="attention threshold for an edge")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default="out/reasoner_circuit")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    try:
        model = check_reasoner(models.load(args.model))
    except (CheckpointError, TypeError) as e:
        parser.error(str(e))
    parts = run(model, sizes=args.nodes, n=args.n, graph_n=args.graph_n, patch_n=args.patch_n,
                edge_patch_n=args.edge_patch_n, edge_nodes=args.edge_nodes, threshold=args.threshold, seed=args.seed,
                batch_size=args.batch_size)
    paths = save(parts, args.out, args.model)
    for line in findings(parts["head_roles"], parts["fourier"], parts["patching"], parts["graph"]):
        print("-", line)
    print(f"wrote {', '.join(str(p) for p in paths)}")


if __name__ == "__main__":
    main()
