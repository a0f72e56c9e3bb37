"""Part 2: Fourier features of the values each layer writes at a node's defining slot."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots
from torch import Tensor

from models.reasoner import Reasoner
from probes.reasoner_circuit.common import COMPONENTS, PAIR_KINDS, CircuitResult, batches, check_reasoner
from workbench.codebook import fourier_spectrum
from workbench.sites import loop_indices
from workbench.tasks import graph_arith as ga


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
    for batch in batches(model, problems, batch_size, progress, "fourier"):
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
