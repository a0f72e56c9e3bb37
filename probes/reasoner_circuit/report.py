"""The study's findings in words, its HTML report, and the command line (``python -m probes.reasoner_circuit``)."""

from __future__ import annotations

import argparse
import html
import warnings
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
import torch

from models.reasoner import Reasoner
from probes import reasoner as pr
from probes.reasoner_circuit.common import CircuitResult, check_reasoner, sample_problems
from probes.reasoner_circuit.fourier import fourier_features
from probes.reasoner_circuit.graph import graph_scores
from probes.reasoner_circuit.heads import head_roles
from probes.reasoner_circuit.patching_map import patching_map
from workbench.checkpoints import atomic_write


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
    from probes import reasoner_circuit
    from workbench.checkpoints import CheckpointError

    parser = argparse.ArgumentParser(prog="python -m probes.reasoner_circuit", description=reasoner_circuit.__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
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
