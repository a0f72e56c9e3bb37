"""Probing every (step, layer) site of the reasoner for variable values, with bounded memory.

Collects the residual stream after every layer of every step (``steps.*.blocks.*.hook_resid_post``)
at one defining position per problem with ``probes.reasoner.collect`` (problems stop running
once settled, later steps are copies; with causal attention only the tokens up to the kept
position run), then fits a logistic-regression probe per site for the variable's value, with
the control task. Reports the time of each phase, the peak memory of the process, and the
memory a full ``run_with_cache`` of the same hooks would have needed.
Side by side on the first ``--compare`` problems: the plain collection (``probes.collect`` over
``probes.reasoner.batches``, every step of every problem, einsum attention) against this one,
with the ratio of their times and the largest difference between their rows.

Also prints the collection's achieved fraction of the machine's matmul throughput (measured on the
model's MLP shapes at the same thread count, before and after, the faster reading; the FLOPs
counted are those of the tokens the forwards ran, padding not counted), and the share of a plain
collection's token-steps that ran.

Target: 10,000 problems at the training size in <= 2 minutes on 2 CPU cores, peak memory <= 1.5 GB.

    python bench/probing.py [--model reasoner] [--n 10000] [--nodes 32] [--threads 2] [--out out/bench/probing.json]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path

import numpy as np
import torch


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def matmul_flops_per_second(d_model: int, d_mlp: int, rows: int = 8192, repeats: int = 7) -> float:
    """The machine's float32 matmul throughput at the current thread count, on the model's own
    shapes: [rows, d_model] x [d_model, d_mlp] and back (the MLP, the bulk of a forward)."""
    x, w_in, w_out = torch.randn(rows, d_model), torch.randn(d_model, d_mlp), torch.randn(d_mlp, d_model)
    h = x @ w_in
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        torch.mm(x, w_in, out=h)
        torch.mm(h, w_out)
        best = min(best, time.perf_counter() - t0)
    return 2 * 2 * rows * d_model * d_mlp / best


def forward_flops(cfg, token_steps: int, pair_steps: int) -> float:
    """Multiply-add FLOPs (x2) of reasoner forwards that ran ``token_steps`` tokens and ``pair_steps``
    query-key pairs, summed over steps: per token and layer Q, K, V, O and the MLP, per pair and
    layer the score and the weighted value; per token the factor heads."""
    d, m = cfg.d_model, cfg.d_mlp
    mlp = (3 if cfg.mlp == "bilinear" else 2) * d * m
    vocab = sum(cfg.factor_sizes.values())
    per_token = cfg.n_layers * (4 * d * d + mlp) + d * vocab
    return 2 * (per_token * token_steps + cfg.n_layers * 2 * d * pair_steps)


def main() -> None:
    import probes
    sys.path.insert(0, str(Path(__file__).parent))
    from patching import _hardware, reasoner  # bench/patching.py: the same model choice
    from probes import reasoner as pr
    from workbench.sites import Sites
    from workbench.tasks import graph_arith as ga

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="reasoner")
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--nodes", type=int, default=None, help="graph size (default: the training size)")
    parser.add_argument("--per-problem", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="torch threads for the forward passes")
    parser.add_argument("--fit-threads", type=int, default=1,
                        help="BLAS threads of each probe's fit (more are much slower for these small fits)")
    parser.add_argument("--fit-jobs", type=int, default=None,
                        help="probes fitted at once, in threads (default: one per CPU core)")
    parser.add_argument("--compare", type=int, default=512,
                        help="problems collected both ways, side by side (0: skip)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="out/bench/probing.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    model, name = reasoner(args.model)
    model = model.to(args.device)
    task = pr.task_of(model, n_nodes=args.nodes)
    # the machine's speed drifts: measured before and after, the faster reading is the reference
    peak_before = matmul_flops_per_second(model.cfg.d_model, model.cfg.d_mlp)
    rss0 = peak_rss_mb()
    t0 = time.perf_counter()
    problems = ga.sample(task, args.n, np.random.default_rng(args.seed))
    steps = model.cfg.steps_for_depth(task.max_depth)
    t_sample = time.perf_counter() - t0

    sel = Sites("steps.*.blocks.*.hook_resid_post")
    t0 = time.perf_counter()
    acts = pr.collect(model, problems, sel, batch_size=args.batch_size, per_problem=args.per_problem, steps=steps,
                      device=args.device, progress=True)
    t_collect = time.perf_counter() - t0
    rss1 = peak_rss_mb()

    t0 = time.perf_counter()
    res = probes.fit(acts, "value", groups="problem", seed=args.seed, threads=args.fit_threads,
                     jobs=args.fit_jobs, progress=True)
    t_fit = time.perf_counter() - t0
    rss2 = peak_rss_mb()

    tokens = float(np.mean([ga.n_tokens(p) for p in problems]))
    full_cache_mb = args.n * len(acts.data) * tokens * model.cfg.d_model * 4 / 2**20
    total = t_sample + t_collect + t_fit
    peak_after = matmul_flops_per_second(model.cfg.d_model, model.cfg.d_mlp)
    peak_flops = max(peak_before, peak_after)
    flops = forward_flops(model.cfg, acts.meta["forward_tokens"], acts.meta["forward_pairs"])
    token_share = acts.meta["forward_tokens"] / (args.n * steps * tokens)  # of every token of every step
    achieved = flops / t_collect / peak_flops
    side = compare(model, problems[: args.compare], sel, args, steps) if args.compare else None
    best = res.df.loc[res.df.accuracy.idxmax()]
    result = {
        "model": name, "n": args.n, "nodes": task.n_nodes, "steps": steps, "sites": len(acts.data),
        "rows": acts.n, "device": args.device, "threads": torch.get_num_threads(), "fit_jobs": args.fit_jobs,
        "hardware": _hardware(),
        "seconds": {"sample": t_sample, "collect": t_collect, "fit": t_fit, "total": total},
        "peak_rss_mb": {"start": rss0, "after_collect": rss1, "after_fit": rss2},
        "activations_mb": acts.nbytes / 2**20, "full_cache_would_need_mb": full_cache_mb,
        "matmul_gflops": peak_flops / 1e9, "matmul_gflops_before_after": [peak_before / 1e9, peak_after / 1e9],
        "collect_gflops": flops / t_collect / 1e9,
        "fraction_of_matmul_throughput": achieved,
        "best_site": best.site, "best_accuracy": float(best.accuracy), "chance": float(best.chance),
        "mean_control": float(res.df.control.mean()),
        "forward_steps": acts.meta["forward_steps"], "all_steps": args.n * steps, "reruns": acts.meta["reruns"],
        "forward_tokens": acts.meta["forward_tokens"], "share_of_all_token_steps": token_share,
        "side_by_side": side,
    }
    print(f"reasoner ({name}), {args.n} problems N={task.n_nodes} (~{tokens:.0f} tokens), {steps} steps, "
          f"{len(acts.data)} sites, {acts.n} rows, device {args.device}, {torch.get_num_threads()} thread(s)")
    print(f"  sample problems   {t_sample:8.1f} s")
    print(f"  collect           {t_collect:8.1f} s   (the model's forward passes: {acts.meta['forward_steps']} "
          f"problem-steps of {args.n * steps}, {token_share:.0%} of every problem's token-steps; "
          f"{acts.meta['reruns']} problems run again unsettled)")
    print(f"  collect throughput {flops / t_collect / 1e9:.1f} GFLOP/s of a measured {peak_flops / 1e9:.1f} GFLOP/s "
          f"matmul on {torch.get_num_threads()} thread(s): {achieved:.0%} (the FLOPs of the tokens run, "
          f"no padding counted; matmul measured before and after: {peak_before / 1e9:.1f}, {peak_after / 1e9:.1f})")
    print(f"  fit {len(acts.data)} probes x2  {t_fit:8.1f} s   (probe + control task per site; "
          f"{args.fit_jobs or 'one per core'} at once)")
    print(f"  total             {total:8.1f} s   target <= 120 s")
    print(f"  peak memory {rss2:.0f} MB (target <= 1536 MB; start {rss0:.0f} MB); "
          f"kept activations {acts.nbytes / 2**20:.0f} MB; "
          f"a full cache of these hooks would need {full_cache_mb:.0f} MB")
    print(f"  best site {best.site}: value accuracy {best.accuracy:.3f} (chance {best.chance:.3f}, "
          f"mean control {res.df.control.mean():.3f})")
    if side:
        print(f"  side by side on {side['problems']} problems: plain collection {side['plain_s']:.1f} s, "
              f"this one {side['settled_s']:.1f} s = {side['ratio']:.2f}x; largest row difference "
              f"{side['max_abs_diff']:.1e}, same rows: {side['same_rows']}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out}")


def compare(model, problems, sel, args, steps) -> dict:
    """The plain collection and ``probes.reasoner.collect`` on the same problems, one after the other."""
    import probes
    from probes import reasoner as pr

    kw = {"per_problem": args.per_problem, "steps": steps}
    t0 = time.perf_counter()
    plain = probes.collect(model, pr.batches(model, problems, batch_size=args.batch_size, **kw), sel,
                           device=args.device)
    t1 = time.perf_counter()
    fast = pr.collect(model, problems, sel, batch_size=args.batch_size, device=args.device, **kw)
    t2 = time.perf_counter()
    diff = max(float(np.abs(plain.data[k] - fast.data[k]).max()) for k in plain.data)
    return {"problems": len(problems), "plain_s": t1 - t0, "settled_s": t2 - t1, "ratio": (t1 - t0) / (t2 - t1),
            "max_abs_diff": diff, "same_rows": bool(plain.rows.equals(fast.rows))}


if __name__ == "__main__":
    main()
