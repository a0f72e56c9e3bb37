"""Part 4: each problem's computational graph recovered from attention and from patching, scored."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence

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
from probes import reasoner as pr
from probes.reasoner_circuit.common import (
    STATES, THRESHOLDS, Batch, CircuitResult, batches, check_reasoner, sample_problems, steps_for, token_structure,
)
from workbench.hooks import LoopState
from workbench.sites import loop_indices
from workbench.tasks import graph_arith as ga


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
    for batch in batches(model, problems, batch_size, progress, "attention edges"):
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


def _max_attention_hook(batch: Batch, head_sets: dict, A: dict, now: dict) -> Callable:
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
        _, cache = model.run_with_cache(tokens, steps=steps_for(model, [problem]),
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
                rep = start.repeat(len(part))
                rep.carry["x"], rep.carry["codes"] = model.embed(new), new
            changed = (run(new, rep) != before).numpy()  # [copies, L]
            for j, (k, _) in enumerate(part):
                score[queries, k] += changed[j, queries] / len(deltas)
    return score


def _edge_table(problem: ga.Problem, enc: ga.Encoded, score: np.ndarray) -> pd.DataFrame:
    """Candidate edges parent -> child with score = max over the parent's slots of score[child's slot, .].

    Children whose row is NaN (not tested) are left out.
    """
    var, define, _ = token_structure(enc)
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
