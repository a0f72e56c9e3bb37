"""Exact and attribution patching of the reasoner's step x layer x position grid, side by side.

Measured in one run on one problem at the training size:

1. ``workbench.patching.patch`` over the full grid of ``steps.*.blocks.*.hook_resid_pre``;
2. the per-site reference the tests check ``patch`` against (``tests.test_oracles.reference_patch``:
   one ``run_with_hooks`` per site, as TransformerLens's ``generic_activation_patch``, sharing
   no code with ``workbench.patching``) on a random sample of ``--loop-sites`` sites, checked
   against (1) on those sites (target: max abs difference <= 1e-5) and extrapolated to the grid;
3. ``workbench.attribution.attribute`` over the same grid (one forward + one backward).

Targets: (1) >= 20x faster than the loop, (3) >= 100x; the correlation of (3) with (1) is
reported over the sites where attribution has a gradient path.

    python bench/patching.py [--model reasoner] [--nodes N] [--loop-sites 48] [--out out/bench/patching.json]

Without a shipped reasoner the model is freshly initialised with the shipped architecture.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repository root: tests/ is importable

import models  # noqa: E402
from models.reasoner import Reasoner, ReasonerConfig  # noqa: E402
from models.recipes.reasoner import PRESETS  # noqa: E402
from probes.reasoner import patching_setup  # noqa: E402
from tests.test_oracles import reference_patch  # noqa: E402
from workbench.attribution import attribute  # noqa: E402
from workbench.patching import patch  # noqa: E402
from workbench.sites import Site, Sites  # noqa: E402
from workbench.tasks import graph_arith as ga  # noqa: E402


def reasoner(name: str):
    """The zoo / folder model, or a fresh one with the shipped architecture."""
    if name != "reasoner" or "reasoner" in models.zoo_names():
        return models.load(name), name
    # no shipped reasoner: the shipped architecture, freshly initialised
    arch = {k: v for k, v in PRESETS["full"]["args"].items()
            if k in ("d_model", "n_layers", "n_heads", "d_mlp", "causal", "scheme", "segment_window")}
    torch.manual_seed(0)
    return Reasoner(ReasonerConfig(**arch, task=asdict(ga.GraphArithConfig()))).eval(), f"fresh {arch}"


def per_site_loop(model, setup, sites):
    """The reference (one run_with_hooks per site) on ``sites``; returns (metrics, seconds)."""
    t0 = time.perf_counter()
    triples = [(s.name, s.pos, s.head) for s in sites]
    values, _, _ = reference_patch(model, setup.clean, setup.corrupted, setup.metric, triples,
                                   forward_kwargs=setup.forward_kwargs)
    return values, time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="reasoner")
    parser.add_argument("--nodes", type=int, default=None, help="graph size (default: the training size)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sites", default="steps.*.blocks.*.hook_resid_pre")
    parser.add_argument("--loop-sites", type=int, default=48, help="sites timed in the loop (0 = all)")
    parser.add_argument("--memory-mb", type=float, default=512)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default="out/bench/patching.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    model, name = reasoner(args.model)
    setup = patching_setup(model, n=1, n_nodes=args.nodes, seed=args.seed)
    args.nodes = args.nodes or model.cfg.task["n_nodes"]
    grid = Sites(args.sites, positions="each")
    kw = setup.forward_kwargs

    t0 = time.perf_counter()
    exact = patch(model, setup.clean, setup.corrupted, setup.metric, grid, forward_kwargs=kw,
                  memory_mb=args.memory_mb)
    t_exact = time.perf_counter() - t0
    t0 = time.perf_counter()
    approx = attribute(model, setup.clean, setup.corrupted, setup.metric, grid, forward_kwargs=kw)
    t_attr = time.perf_counter() - t0

    # the reference: two cached base runs, then one forward per site on a random sample of sites
    t0 = time.perf_counter()
    per_site_loop(model, setup, [])
    t_base = time.perf_counter() - t0
    all_sites = [Site(r.hook, int(r.pos)) for r in exact.df.itertuples()]
    rng = np.random.default_rng(args.seed)
    pick = np.arange(len(all_sites)) if args.loop_sites <= 0 else \
        np.sort(rng.choice(len(all_sites), min(args.loop_sites, len(all_sites)), replace=False))
    loop_metric, t_loop_sample = per_site_loop(model, setup, [all_sites[i] for i in pick])
    per_site = max(0.0, t_loop_sample - t_base) / len(pick)
    t_loop = t_base + per_site * len(all_sites)
    diff = float(np.abs(exact.df.metric.to_numpy()[pick] - loop_metric).max())

    ok = approx.df.status == "ok"
    corr = float(np.corrcoef(exact.df.score[ok], approx.df.score[ok])[0, 1]) if ok.sum() > 2 else float("nan")
    m = exact.meta
    result = {
        "model": name, "nodes": args.nodes, "tokens": int(setup.clean.shape[1]), "steps": kw["steps"],
        "sites": len(all_sites), "threads": torch.get_num_threads(), "hardware": _hardware(),
        "seconds": {"exact": t_exact, "attribution": t_attr, "loop_extrapolated": t_loop,
                    "loop_per_site": per_site, "loop_sample": t_loop_sample},
        "loop_sites_timed": int(len(pick)), "loop_extrapolated": args.loop_sites > 0,
        "max_abs_diff_vs_loop": diff,
        "speedup_exact": t_loop / t_exact, "speedup_attribution": t_loop / t_attr,
        "attribution_correlation": corr, "attribution_sites_with_gradient": int(ok.sum()),
        "exact_meta": {k: m[k] for k in ("sites_noop", "copies_per_forward", "forwards", "copies_run",
                                         "copies_settled", "metric_clean", "metric_corrupted")},
    }
    print(f"reasoner ({name}), one problem N={args.nodes} ({result['tokens']} tokens), {kw['steps']} steps, "
          f"{len(all_sites)} sites ({args.sites} x position), {torch.get_num_threads()} thread(s)")
    loop_note = (f"extrapolated from {len(pick)} sites at {per_site:.3f} s/site" if args.loop_sites > 0
                 else "all sites")
    print(f"  per-site loop            {t_loop:9.1f} s   ({loop_note})")
    print(f"  exact patching           {t_exact:9.1f} s   speedup {t_loop / t_exact:7.1f}x (target >= 20x); "
          f"max |diff| vs loop {diff:.2e} (target <= 1e-5)")
    print(f"  attribution patching     {t_attr:9.2f} s   speedup {t_loop / t_attr:7.1f}x (target >= 100x); "
          f"correlation with exact {corr:.3f} over {int(ok.sum())} sites with a gradient path")
    print(f"  exact: {m['sites_noop']} no-op sites, {m['copies_run']} copies run, {m['copies_settled']} settled "
          f"after their step, {m['forwards']} forwards of up to {m['copies_per_forward']} copies")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out}")


def _hardware() -> str:
    return f"{platform.machine()} {os.cpu_count()} CPU cores, torch {torch.__version__}"


if __name__ == "__main__":
    main()
