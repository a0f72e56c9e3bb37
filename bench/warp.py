"""WARP's two execution modes side by side: parallel (FFT convolution + batched decoding)
vs recurrent (one step at a time, per-step hooks), at T = 256 by default.

Both modes run in the same process, interleaved round by round, so the ratio is measured
under the same machine load. Prints a table and writes JSON.

    python bench/warp.py --threads 1 --out out/bench_warp.json
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from models.warp import Warp, WarpConfig  # noqa: E402


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--T", type=int, default=256, help="sequence length")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--d-in", type=int, default=2)
    p.add_argument("--root-width", type=int, default=16)
    p.add_argument("--root-depth", type=int, default=2)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default="out/bench_warp.json")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = Warp(WarpConfig(d_in=args.d_in, seq_len=args.T, root_width=args.root_width, root_depth=args.root_depth))
    with torch.no_grad():  # a trained-looking A and B, so that theta moves
        D = model.cfg.d_theta
        model.A_raw.copy_((torch.randn(D, D) * 0.02 / D ** 0.5 - 0.02 * torch.eye(D)) / model.cfg.a_scale)
        model.B.normal_(0, 0.1)
    x = torch.randn(args.batch, args.T, args.d_in).cumsum(1) * 0.1

    def forward(mode):
        with torch.no_grad():
            model(x, mode=mode)

    def train_step(mode):
        model.zero_grad()
        out = model(x, mode=mode)
        ((out.mean[:, :-1] - x[:, 1:]) ** 2).mean().backward()

    cases = {(kind, mode): (fn, mode) for kind, fn in (("forward", forward), ("forward+backward", train_step))
             for mode in ("parallel", "recurrent")}
    times = {key: [] for key in cases}
    for fn, mode in cases.values():  # warm-up
        fn(mode)
    for _ in range(args.rounds):
        for key, (fn, mode) in cases.items():
            t0 = time.perf_counter()
            fn(mode)
            times[key].append(time.perf_counter() - t0)
    agree = (model(x, mode="parallel").mean - model(x, mode="recurrent").mean).abs().max().item()
    rows = []
    print(f"WARP, T={args.T}, batch={args.batch}, D={model.cfg.d_theta}, {args.threads} thread(s); "
          f"median of {args.rounds} interleaved rounds")
    print(f"{'':18s} {'parallel (ms)':>14s} {'recurrent (ms)':>15s} {'recurrent/parallel':>19s}")
    for kind in ("forward", "forward+backward"):
        par = statistics.median(times[(kind, "parallel")]) * 1000
        rec = statistics.median(times[(kind, "recurrent")]) * 1000
        rows.append({"case": kind, "parallel_ms": round(par, 2), "recurrent_ms": round(rec, 2),
                     "ratio": round(rec / par, 2)})
        print(f"{kind:18s} {par:14.1f} {rec:15.1f} {rec / par:18.2f}x")
    print(f"max |parallel - recurrent| of the outputs: {agree:.2e}")
    result = {"benchmark": "warp_modes", "T": args.T, "batch": args.batch, "D": model.cfg.d_theta,
              "threads": args.threads, "rounds": args.rounds, "rows": rows, "max_abs_diff": agree,
              "torch": torch.__version__, "machine": platform.machine()}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")
    return result


if __name__ == "__main__":
    main()
