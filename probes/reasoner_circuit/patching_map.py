"""Part 3: where the answer for a node is computed, step by step, by exact activation patching."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots
from tqdm.auto import tqdm

from models.reasoner import Reasoner
from probes import reasoner as pr
from probes.reasoner_circuit.common import CircuitResult, check_reasoner, steps_for
from workbench.patching import patch
from workbench.sites import Sites
from workbench.tasks import graph_arith as ga


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
    positive score on path slots. A problem whose pair breaks the patching contract (the model
    does not put the clean answer above the corrupted one: ``probes.pairs``) is skipped and
    listed in ``meta["skipped"]``, with the reason.
    """
    check_reasoner(model)
    frames, skipped = [], {}
    sites = Sites(["steps.*.blocks.*.hook_resid_pre", "steps.*.hook_resid_final"], positions="each")
    for i, problem in enumerate(tqdm(problems, disable=not progress, desc="patching", leave=False)):
        steps_for(model, [problem])
        try:
            setup = pr.patching_setup(model, [problem], seed=seed + i)
        except ValueError as e:  # the contract: say which problem was left out and why
            skipped[i] = str(e)
            continue
        res = patch(model, setup.clean, setup.corrupted, setup.metric, sites=sites,
                    forward_kwargs=setup.forward_kwargs)
        frames.append(_annotate(model, res.df, problem, int(setup.target_pos[0]), int(setup.leaf_pos[0]), i))
    if not frames:
        raise ValueError(f"every one of the {len(problems)} problems breaks the patching contract; first: "
                         f"{next(iter(skipped.values()))}")
    df = pd.concat(frames, ignore_index=True)
    meta = {"problems": len(problems) - len(skipped), "skipped": skipped,
            "metric": "logit difference (clean - corrupted answer) at the deepest node"}
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
