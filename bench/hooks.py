"""Cost of the hook layer on the reasoner, measured side by side in one run.

1. forward with no hooks attached vs the same computation with the HookPoints removed
   (each replaced by a plain Python identity function): target <= 1.05x;
2. ``run_with_cache`` of every hook vs a plain forward: target <= 1.3x. Also printed: the minor
   page faults per call. The three are timed interleaved, round by round.

The cache keeps every activation (~2 GB at the defaults). Measured twice, each in a process of its
own: as ``import workbench`` leaves the C allocator (keeping the memory a freed cache held, so
the next cache reuses it: ``workbench/memory.py``), and with glibc's defaults
(``WORKBENCH_KEEP_FREED_MEMORY=0``), which hand most of it back to the kernel, so that every
cache takes its pages fresh, zeroed one by one on first touch.

    python bench/hooks.py [--model reasoner] [--batch 64] [--nodes N] [--repeats 7] [--threads 1]
                          [--allocator both|kept|returned]
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from workbench.hooks import HookPoint


def strip_hook_points(model: torch.nn.Module) -> torch.nn.Module:
    """A copy of the model whose HookPoints are plain identity functions (not modules)."""
    bare = copy.deepcopy(model)
    for module in list(bare.modules()):
        for name, child in list(module._modules.items()):
            if isinstance(child, HookPoint):
                del module._modules[name]
                object.__setattr__(module, name, _identity)
    return bare


def _identity(x):
    return x


def page_faults() -> int:
    """Minor page faults of this process so far: each is a fresh 4 KiB page the kernel zeroes."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def timed(fns: dict, repeats: int) -> dict[str, tuple[float, float]]:
    """{name: (median seconds, mean minor page faults) per call}.

    The calls are interleaved (each round runs every function once, in a rotated order), so a
    machine that speeds up or slows down during the run moves all of them alike.
    """
    names = list(fns)
    for name in names:
        fns[name]()  # warm-up
    times = {name: [] for name in names}
    faults = dict.fromkeys(names, 0)
    for r in range(repeats):
        for name in names[r % len(names):] + names[: r % len(names)]:
            before = page_faults()
            t0 = time.perf_counter()
            fns[name]()
            times[name].append(time.perf_counter() - t0)
            faults[name] += page_faults() - before
    return {name: (statistics.median(times[name]), faults[name] / repeats) for name in names}


def main() -> None:
    import models
    from models.reasoner import Reasoner, ReasonerConfig
    from models.reasoner_data import tokens
    from probes.reasoner import task_of
    from workbench.tasks import graph_arith as ga

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="reasoner")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--nodes", type=int, default=None, help="graph size (default: the training size)")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: the steadiest ratios on a busy machine)")
    parser.add_argument("--allocator", choices=("both", "kept", "returned"), default="both",
                        help="kept: as workbench sets it; returned: glibc's defaults; both: each in its own process")
    parser.add_argument("--out", default="out/bench/hooks.json")
    args = parser.parse_args()
    if args.allocator == "both":
        return both(args)
    from workbench.memory import keeps_freed_memory

    if keeps_freed_memory() != (args.allocator == "kept"):
        raise SystemExit(f"--allocator {args.allocator} needs WORKBENCH_KEEP_FREED_MEMORY="
                         f"{'1' if args.allocator == 'kept' else '0'} in the environment (or --allocator both)")
    torch.set_num_threads(args.threads)

    try:
        model = models.load(args.model)
    except ValueError:
        model = Reasoner(ReasonerConfig()).eval()
    task = task_of(model, n_nodes=args.nodes)
    args.nodes = task.n_nodes
    problems = ga.sample(task, args.batch, np.random.default_rng(0))
    x = tokens(problems, model.cfg)
    steps = model.cfg.steps_for_depth(max(p.depth for p in problems))
    bare = strip_hook_points(model)
    n_hooks = len(model.hook_dict)

    with torch.no_grad():
        runs = timed({"bare": lambda: bare(x, steps=steps), "hooked": lambda: model(x, steps=steps),
                      "cache": lambda: model.run_with_cache(x, steps=steps)}, args.repeats)
        (t_bare, _), (t_hooked, f_hooked), (t_cache, f_cache) = runs["bare"], runs["hooked"], runs["cache"]
        kept = sum(v.numel() * v.element_size() for v in model.run_with_cache(x, steps=steps)[1].values())
        assert torch.equal(bare(x, steps=steps).codes, model(x, steps=steps).codes)

    result = {
        "model": args.model, "batch": args.batch, "nodes": args.nodes, "tokens": x.shape[1], "steps": steps,
        "hook_points": n_hooks, "threads": torch.get_num_threads(), "allocator": args.allocator,
        "seconds": {"no_hook_points": t_bare, "hooked_no_hooks": t_hooked, "run_with_cache_all": t_cache},
        "ratio_hooked_vs_removed": t_hooked / t_bare, "ratio_cache_vs_forward": t_cache / t_hooked,
        "page_faults_per_call": {"hooked_no_hooks": f_hooked, "run_with_cache_all": f_cache},
        "cache_mb": kept / 2**20,
    }
    print(f"reasoner '{args.model}', batch {args.batch}, N={args.nodes} ({x.shape[1]} tokens), {steps} steps, "
          f"{n_hooks} hook points, {torch.get_num_threads()} threads; median of {args.repeats}; "
          f"freed memory {'kept' if args.allocator == 'kept' else 'returned to the kernel'}")
    print(f"  forward, HookPoints removed     {t_bare * 1e3:8.1f} ms")
    print(f"  forward, no hooks attached      {t_hooked * 1e3:8.1f} ms   ratio {t_hooked / t_bare:.3f} (target <= 1.05)")
    print(f"  run_with_cache, every hook      {t_cache * 1e3:8.1f} ms   ratio {t_cache / t_hooked:.3f} vs forward "
          "(target <= 1.3)")
    print(f"  page faults per call: forward {f_hooked:,.0f}, run_with_cache {f_cache:,.0f} "
          f"(fresh 4 KiB pages; the cache keeps {kept / 2**20:,.0f} MB = {kept / 4096:,.0f} pages)")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out}")


def both(args) -> None:
    """Run the bench in two processes, freed memory kept and returned, and print their ratios."""
    results = {}
    for mode in ("kept", "returned"):
        out = Path(args.out).with_name(f"{Path(args.out).stem}_{mode}.json")
        env = dict(os.environ, WORKBENCH_KEEP_FREED_MEMORY="1" if mode == "kept" else "0")
        # later options win: this run's --allocator and --out replace any given
        subprocess.run([sys.executable, __file__, *sys.argv[1:], "--allocator", mode, "--out", str(out)],
                       env=env, check=True)
        results[mode] = json.loads(out.read_text())
    print("side by side:")
    for mode, r in results.items():
        print(f"  freed memory {mode:8s}  no hooks {r['ratio_hooked_vs_removed']:.3f}x (target <= 1.05), "
              f"cache every hook {r['ratio_cache_vs_forward']:.3f}x (target <= 1.3), "
              f"{r['page_faults_per_call']['run_with_cache_all']:,.0f} fresh pages per cache")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
