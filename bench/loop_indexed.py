"""Cost of ``loop_indexed`` on a Huginn-style looped transformer, measured side by side in one run.

1. the wrapped model with no hooks attached vs the unwrapped model: target <= 1.05x;
2. ``run_with_cache`` of every hook (``steps.{t}.hook_in`` / ``hook_out``) vs the unwrapped model:
   target <= 1.5x.

The three are timed in interleaved rounds (one call of each per round, a different one first in
each round) and the medians compared, so a machine busy with other work slows all three alike.

    python bench/loop_indexed.py [--batch 16] [--pos 32] [--d 128] [--steps 16] [--repeats 21]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # the test models live in tests/looped_models.py

from tests.looped_models import Huginn, MapLoop  # noqa: E402
from workbench.loops import loop_indexed  # noqa: E402


def interleaved(fns: dict, repeats: int) -> dict[str, float]:
    """Median seconds per call of each function, timed in interleaved rounds after a warm-up."""
    for fn in fns.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    names = list(fns)
    for r in range(repeats):
        for name in names[r % len(names):] + names[: r % len(names)]:  # a different one goes first each round
            t0 = time.perf_counter()
            fns[name]()
            times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(ts) for name, ts in times.items()}


def per_step_overhead(steps: int, calls: int = 200, rounds: int = 7) -> dict[str, float]:
    """Microseconds a wrapped loop step costs on top of a plain one, on a core that costs almost
    nothing (the best of ``rounds`` timings of ``calls`` forwards: interference only adds time)."""
    model = MapLoop(torch.nn.Linear(8, 8)).eval()
    hooked = loop_indexed(model, loops={"steps": model.step}, max_steps=steps)
    x = torch.randn(2, 8)
    best = {}
    for name, fn in {"plain": lambda: model(x, steps=steps), "no_hooks": lambda: hooked(x, steps=steps),
                     "cache_all": lambda: hooked.run_with_cache(x, steps=steps)}.items():
        fn()
        times = []
        for _ in range(rounds):
            t0 = time.perf_counter()
            for _ in range(calls):
                fn()
            times.append((time.perf_counter() - t0) / calls)
        best[name] = min(times)
    return {name: (best[name] - best["plain"]) / steps * 1e6 for name in ("no_hooks", "cache_all")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--pos", type=int, default=32)
    parser.add_argument("--d", type=int, default=128)
    parser.add_argument("--core-layers", type=int, default=2)
    parser.add_argument("--steps", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=21)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default="out/bench/loop_indexed.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    model = Huginn(vocab=64, d=args.d, n_heads=4, d_mlp=4 * args.d, core_layers=args.core_layers,
                   n_ctx=args.pos).eval()
    hooked = loop_indexed(model, loops={"steps": model.core}, max_steps=args.steps)
    x = torch.randint(0, 64, (args.batch, args.pos), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(model(x, steps=args.steps), hooked(x, steps=args.steps))
        t = interleaved({
            "unwrapped": lambda: model(x, steps=args.steps),
            "loop_indexed_no_hooks": lambda: hooked(x, steps=args.steps),
            "run_with_cache_all": lambda: hooked.run_with_cache(x, steps=args.steps),
        }, args.repeats)
        overhead = per_step_overhead(args.steps)
    r_hooked = t["loop_indexed_no_hooks"] / t["unwrapped"]
    r_cache = t["run_with_cache_all"] / t["unwrapped"]
    result = {"model": "Huginn-style (tests/looped_models.py)", "batch": args.batch, "pos": args.pos, "d": args.d,
              "core_layers": args.core_layers, "steps": args.steps, "hook_points": len(hooked.hook_dict),
              "threads": torch.get_num_threads(), "repeats": args.repeats, "seconds": t,
              "ratio_loop_indexed_vs_unwrapped": r_hooked, "ratio_cache_vs_unwrapped": r_cache,
              "per_step_overhead_us": overhead,
              "ratio_from_per_step_overhead": 1 + overhead["no_hooks"] * 1e-6 * args.steps / t["unwrapped"]}
    print(f"Huginn-style model: batch {args.batch}, {args.pos} tokens, d={args.d}, {args.core_layers} core layers, "
          f"{args.steps} steps, {len(hooked.hook_dict)} hook points, {torch.get_num_threads()} thread(s); "
          f"median of {args.repeats} interleaved rounds")
    print(f"  unwrapped model                 {t['unwrapped'] * 1e3:8.2f} ms")
    print(f"  loop_indexed, no hooks          {t['loop_indexed_no_hooks'] * 1e3:8.2f} ms   ratio {r_hooked:.3f} "
          "(target <= 1.05)")
    print(f"  run_with_cache, every hook      {t['run_with_cache_all'] * 1e3:8.2f} ms   ratio {r_cache:.3f} "
          "(target <= 1.5)")
    print(f"  cost per loop step on a trivial core (nn.Linear(8, 8), best of 7 x 200 calls): "
          f"{overhead['no_hooks']:.1f} us without hooks, {overhead['cache_all']:.1f} us caching both hooks; "
          f"on this model that is {result['ratio_from_per_step_overhead']:.4f}x")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
