"""Exact patching against the per-site reference and against its own lower bound, per family and size.

Measured in one run, one row per case (the reasoner at N=16 over several problem seeds and at
N=32, ACT's ponder steps on parity and on addition, WARP's time steps):

1. ``workbench.patching.patch`` over the case's grid of sites (its best round, see below; the
   first call, which pays one-time costs such as the model's resume names, is in the JSON);
2. the per-site reference the tests check ``patch`` against (``tests.test_oracles.reference_patch``:
   one ``run_with_hooks`` per site, as TransformerLens's ``generic_activation_patch``, sharing
   no code with ``workbench.patching``) on a random sample of ``--loop-sites`` sites, checked
   against (1) on those sites (target: max abs difference <= 1e-5) and extrapolated to the grid;
3. the lower bound of (1): the block applications patching cannot avoid (for every site that is
   not a no-op, each batch row's blocks after the site's point in the run, up to the end of the
   loop step where the patched run rejoined the base run, or to the end; a block is a layer of one
   reasoner step, one ACT ponder step, one WARP time step) divided by the throughput of plain
   large-batch forwards (block applications per second, no hooks) with the kernels ``patch`` runs
   its copies with (``model.patching_kernels()``: the reasoner's fused attention);
4. for the reasoner, ``workbench.attribution.attribute`` over the same grid (one forward + one backward);
5. the floor: what any exact method needs by a cost model fitted in the same run (see
   ``lower_bound``), as a speed-up over the loop and a ratio to the bound: where a target is
   missed, it says whether any method could meet it on that case;
6. the floor of ``patch``'s own schedule: the floor with the block firings ``patch`` runs (counted
   in one more call, over all its forwards) in place of one run's, against the bound. Where it is
   above the floor, the order ``patch`` runs its blocks in costs more than the least any method
   needs (ACT's single pass steps every row through the same ponder steps, so copies that ponder
   longer than the base runs add firings); where ``patch`` is above it, its own overheads do.

Targets: (1) >= 20x faster than the loop, <= 1.5x its lower bound, identical scores; (4) >= 100x.

(1) and the forwards of (3) are timed in rounds, each a ``patch`` call then the two plain forwards
(the case's batch, and ``--rows`` rows), at least ``--min-rounds`` rounds (default 5) and more
while a case's rounds have taken under ``--seconds``; each is its best round. Interleaving them
keeps a machine whose speed drifts from favouring one side of the ratio.

Every time is the process's CPU time (``time.process_time``): on a busy machine the time other
processes hold the core stretches wall-clock time, not CPU time. With one torch thread (the
default) the two agree on an idle machine; with ``--threads`` > 1 CPU time adds up the threads'.
The JSON also has ``patch``'s wall-clock seconds.

    python bench/patching.py [--cases reasoner-16-s0,...] [--loop-sites 32] [--seconds 20] [--out out/bench/patching.json]

Without a shipped reasoner the model is freshly initialised with the shipped architecture.
"""

from __future__ import annotations

import argparse
import contextlib
import fnmatch
import json
import os
import platform
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repository root: tests/ is importable

import models  # noqa: E402
from models.reasoner import Reasoner, ReasonerConfig  # noqa: E402
from models.recipes.reasoner import PRESETS  # noqa: E402
from tests.test_oracles import reference_patch  # noqa: E402
from workbench.attribution import attribute  # noqa: E402
from workbench.hooks import HookName, repeat_batch  # noqa: E402
from workbench.patching import patch  # noqa: E402
from workbench.sites import Site, Sites  # noqa: E402
from workbench.tasks import graph_arith as ga  # noqa: E402

DEFAULT_CASES = "reasoner-16-s0,reasoner-16-s1,reasoner-16-s2,reasoner-32-s0,act,act-addition,warp"


@dataclass
class Case:
    name: str
    model: Any
    clean: Any
    corrupted: Any
    metric: Callable
    forward_kwargs: dict
    grid: Any
    block: str  # glob of the hook that ends one block application
    reasoner: bool = False


def reasoner(name: str = "reasoner"):
    """The zoo / folder model, or a fresh one with the shipped architecture."""
    if name != "reasoner" or "reasoner" in models.zoo_names():
        return models.load(name), name
    arch = {k: v for k, v in PRESETS["full"]["args"].items()
            if k in ("d_model", "n_layers", "n_heads", "d_mlp", "causal", "scheme", "segment_window")}
    torch.manual_seed(0)
    return Reasoner(ReasonerConfig(**arch, task=asdict(ga.GraphArithConfig()))).eval(), f"fresh {arch}"


def make_case(spec: str, model_name: str) -> Case:
    if spec.startswith("reasoner"):
        from probes.reasoner import patching_setup

        _, nodes, seed = spec.split("-")
        model, _ = reasoner(model_name)
        s = patching_setup(model, n=1, n_nodes=int(nodes), seed=int(seed[1:]))
        return Case(spec, model, s.clean, s.corrupted, s.metric, s.forward_kwargs,
                    Sites("steps.*.blocks.*.hook_resid_pre", positions="each"), "steps.*.blocks.*.hook_resid_post", True)
    if spec == "act":
        from probes.act import patching_setup

        model = models.load("act-parity")
        s = patching_setup(model, n=8, seed=0)
        return Case(spec, model, s.clean, s.corrupted, s.metric, dict(s.forward_kwargs),
                    Sites("time.*.ponder.*.hook_state"), "time.*.ponder.*.hook_state")
    if spec == "act-addition":
        model = models.load("act-addition")
        clean, corrupted, metric = addition_pairs(model, n=8, seed=0)
        return Case(spec, model, clean, corrupted, metric, {}, Sites("time.*.ponder.*.hook_state"),
                    "time.*.ponder.*.hook_state")
    if spec == "warp":
        from probes.warp import patching_setup

        model = models.load("warp-msd")
        s = patching_setup(model, n=2, seed=0)
        return Case(spec, model, s.clean, s.corrupted, s.metric, dict(s.forward_kwargs),
                    Sites("time.*.hook_theta"), "time.*.hook_output")
    raise ValueError(f"unknown case {spec!r}; known: {DEFAULT_CASES}")


def addition_pairs(model, n: int, seed: int):
    """ACT's addition at its longest: n sequences of 5 three-digit numbers, each corrupted by a
    different last digit of its first number (so every running sum's last digit changes); the
    metric is the final sum's last-digit logit of the clean answer minus the corrupted one's."""
    from workbench.tasks import addition as add

    config = add.AdditionConfig(**model.cfg.task)
    rng = np.random.default_rng(seed)
    clean, corrupted = [], []
    for _ in range(n):
        numbers = [int(v) for v in rng.integers(100, 1000, config.max_numbers)]
        other = [numbers[0] - numbers[0] % 10 + (numbers[0] + int(rng.integers(1, 10))) % 10] + numbers[1:]
        clean.append(add.make_problem(numbers, config))
        corrupted.append(add.make_problem(other, config))
    digit = lambda ps: torch.tensor([add.digits_of(p.sums[-1], config.out_digits)[0] for p in ps])  # noqa: E731
    right, wrong = digit(clean), digit(corrupted)

    def metric(out):
        logits = out.outputs[:, -1].reshape(len(out.outputs), config.out_digits, add.N_CLASSES)[:, 0]
        return logits.gather(1, right[:, None])[:, 0] - logits.gather(1, wrong[:, None])[:, 0]

    inputs = lambda ps: torch.from_numpy(add.encode(ps, config)["inputs"])  # noqa: E731
    return inputs(clean), inputs(corrupted), metric


def clock() -> float:
    """CPU seconds of this process (all timings here; see the module docstring)."""
    return time.process_time()


def _args(x) -> tuple:
    return tuple(x) if isinstance(x, (tuple, list)) else (x,)


@torch.no_grad()
def firing_order(case: Case) -> list[str]:
    """Every hook name of the corrupted run, in the order they fire."""
    order: list[str] = []
    case.model.run_with_hooks(*_args(case.corrupted), fwd_hooks=[(lambda n: True, lambda a, hook: order.append(hook.name))],
                              **case.forward_kwargs)
    return order


def block_counts(case: Case, hooks: list[str], res, rows: int) -> dict:
    """What the lower bound counts: {"needed", "to_end" (block applications), "S" (block firings per
    run), "B" (the case's batch rows), "k" (copies of the batch in a throughput forward)}.

    The block applications each non-no-op site needs: those after the site, up to the end of the
    loop step where its copy rejoined the base run (``res.meta["last_step"]``: a patched run is
    identical to the base run after that, so no exact method has to compute it), or up to the end
    of the run (``to_end``)."""
    first = {}
    for i, name in enumerate(hooks):
        first.setdefault(name, i)
    blocks = np.array([fnmatch.fnmatchcase(n, case.block) for n in hooks])
    after = np.append(np.cumsum(blocks[::-1])[::-1], 0)  # block firings at positions >= i
    step = np.array([(HookName.parse(n).loops or ((None, -1),))[0][1] for n in hooks])
    beyond = {u: int((blocks & (step > u)).sum()) for u in set(step.tolist())}  # block firings after step u
    B = _args(case.corrupted)[0].shape[0]
    needed = to_end = 0
    last = res.meta.get("last_step", [-1] * len(res.df))
    for r, u in zip(res.df.itertuples(), last):
        if r.status == "ok" and r.hook in first:  # a hook the corrupted run never fires: nothing to recompute
            i = first[r.hook]
            to_end += int(after[i + 1])
            needed += int(after[i + 1]) - (beyond.get(u, 0) if u >= 0 else 0)
    return {"needed": needed * B, "to_end": to_end * B, "S": int(blocks.sum()), "B": B, "k": max(2, rows // B)}


def lower_bound(counts: dict, t_batch: float, t_rows: float) -> dict:
    """{"seconds", "without_settling", "throughput" (block applications per second), "floor", ...}
    from ``block_counts`` and the times of a plain forward of the case's batch (``t_batch``) and of
    ``k`` copies of it (``t_rows``).

    ``seconds``: the needed block applications divided by the throughput of the large forward.
    ``floor``: the least any exact method needs on this case by the cost model ``a + b * rows`` per
    block firing (``a`` fitted as the fixed cost, ``b`` the cost per batch row, from the two
    forwards): every block firing of one run, one after another, at ``a`` each, plus the needed
    block applications at ``b`` each. The bound counts ``a`` only amortised over the large batch;
    where ``a`` dominates, no method gets near the bound. ``floor_two_passes``: the same for a
    method that runs the base runs first and the copies after (as ``patch`` does whenever it
    resumes): one more run's firings in sequence."""
    S, B, k, needed = counts["S"], counts["B"], counts["k"], counts["needed"]
    throughput = S * k * B / t_rows
    b = max(0.0, (t_rows - t_batch) / (S * (k - 1) * B))  # per block and batch row
    a = max(0.0, t_batch / S - B * b)  # per block firing, whatever the batch
    return {"seconds": needed / throughput, "without_settling": counts["to_end"] / throughput,
            "throughput": throughput, "floor": S * a + needed * b, "floor_two_passes": 2 * S * a + needed * b,
            "a": a, "b": b}


@torch.no_grad()
def block_firings(case: Case, call) -> int:
    """How many times a block fires in one ``call`` (``patch``), over all its forwards, each firing
    one block for that forward's whole batch: counted by forward hooks of the block modules' own,
    which ``patch``'s hooks leave in place."""
    count = [0]

    def fired(*_) -> None:
        count[0] += 1

    handles = [point.register_forward_hook(fired) for name, point in case.model.hook_dict.items()
               if fnmatch.fnmatchcase(name, case.block)]
    try:
        call()
    finally:
        for handle in handles:
            handle.remove()
    return count[0]


def per_site_loop(case: Case, sites):
    t0 = clock()
    triples = [(s.name, s.pos, s.head) for s in sites]
    values, _, _ = reference_patch(case.model, case.clean, case.corrupted, case.metric, triples,
                                   forward_kwargs=case.forward_kwargs)
    return values, clock() - t0


def timed(fn) -> tuple[float, float]:
    """(CPU seconds, wall-clock seconds) of one call of ``fn``."""
    t0, w0 = clock(), time.perf_counter()
    fn()
    return clock() - t0, time.perf_counter() - w0


def timed_rounds(case: Case, call, k: int, seconds: float, least: int, most: int = 20) -> dict[str, list[float]]:
    """Rounds of three calls, one after another: ``call`` (``patch``), a plain forward of the case's
    batch and one of ``k`` copies of it (the bound's forwards, with the kernels ``patch`` gives its
    copies). At least ``least`` rounds, more while they have taken under ``seconds`` (at most ``most``).

    Interleaved so that a machine whose speed drifts (other processes, its clock) slows ``patch``
    and its bound alike; each is taken as its best round."""
    kernels = getattr(case.model, "patching_kernels", None)
    batch, copies = _args(case.corrupted), repeat_batch(_args(case.corrupted), k)

    def plain(args) -> float:
        with torch.no_grad(), kernels() if kernels else contextlib.nullcontext():
            return timed(lambda: case.model(*args, **case.forward_kwargs))[0]

    times: dict[str, list[float]] = {"exact": [], "exact_wall": [], "batch": [], "rows": []}
    plain(copies)  # warm up
    start = clock()
    while len(times["exact"]) < least or (clock() - start < seconds and len(times["exact"]) < most):
        cpu, wall = timed(call)
        times["exact"].append(cpu)
        times["exact_wall"].append(wall)
        times["batch"].append(plain(batch))
        times["rows"].append(plain(copies))
    return times


def run_case(case: Case, loop_sites: int, memory_mb: float, seed: int, rows: int, seconds: float,
             min_rounds: int) -> dict:
    kw = case.forward_kwargs
    case.model(*_args(case.corrupted), **kw)  # warm up
    exact = None

    def call():
        nonlocal exact
        exact = patch(case.model, case.clean, case.corrupted, case.metric, case.grid, forward_kwargs=kw,
                      memory_mb=memory_mb)

    t_first = timed(call)[0]  # the first call pays one-time costs (resume names, hook-name parsing): kept apart
    counts = block_counts(case, firing_order(case), exact, rows)
    fired = block_firings(case, call)
    times = timed_rounds(case, call, counts["k"], seconds, least=min_rounds)
    t_exact = min(times["exact"])
    bound = lower_bound(counts, min(times["batch"]), min(times["rows"]))
    schedule = fired * bound["a"] + counts["needed"] * bound["b"]  # the cost model over patch's own firings

    t0 = clock()
    per_site_loop(case, [])
    t_base = clock() - t0
    all_sites = [Site(r.hook, None if "pos" not in exact.df or r.pos is None or r.pos != r.pos else int(r.pos))
                 for r in exact.df.itertuples()]
    rng = np.random.default_rng(seed)
    pick = np.arange(len(all_sites)) if loop_sites <= 0 else \
        np.sort(rng.choice(len(all_sites), min(loop_sites, len(all_sites)), replace=False))
    loop_metric, t_sample = per_site_loop(case, [all_sites[i] for i in pick])
    per_site = max(0.0, t_sample - t_base) / len(pick)
    t_loop = t_base + per_site * len(all_sites)
    diff = float(np.abs(exact.df.metric.to_numpy()[pick] - loop_metric).max())

    t_bound, t_to_end, throughput = bound["seconds"], bound["without_settling"], bound["throughput"]
    m = exact.meta
    out = {
        "case": case.name, "sites": len(all_sites), "sites_noop": m["sites_noop"],
        "seconds": {"exact": t_exact, "exact_first_call": t_first, "exact_wall": min(times["exact_wall"]),
                    "loop_extrapolated": t_loop, "loop_per_site": per_site, "lower_bound": t_bound,
                    "lower_bound_without_settling": t_to_end, "floor": bound["floor"], "floor_schedule": schedule},
        "cost_per_block_firing_s": bound["a"], "cost_per_block_and_row_s": bound["b"],
        "floor_vs_loop": t_loop / bound["floor"], "floor_to_lower_bound": bound["floor"] / t_bound,
        "floor_two_passes_to_lower_bound": bound["floor_two_passes"] / t_bound,
        "block_firings": {"run": counts["S"], "patch": fired}, "floor_schedule_to_lower_bound": schedule / t_bound,
        "blocks_per_second": throughput, "rounds": len(times["exact"]), "round_seconds": times,
        "loop_sites_timed": int(len(pick)),
        "max_abs_diff_vs_loop": diff, "speedup_vs_loop": t_loop / t_exact, "ratio_to_lower_bound": t_exact / t_bound
        if t_bound > 0 else float("inf"),
        "exact_meta": {k: m.get(k) for k in ("copies_per_forward", "forwards", "copies_run", "copies_settled", "resume",
                                             "refill", "joined")},
    }
    if case.reasoner:
        t0 = clock()
        approx = attribute(case.model, case.clean, case.corrupted, case.metric, case.grid, forward_kwargs=kw)
        t_attr = clock() - t0
        ok = approx.df.status == "ok"
        out["seconds"]["attribution"] = t_attr
        out["speedup_attribution"] = t_loop / t_attr
        out["attribution_correlation"] = float(np.corrcoef(exact.df.score[ok], approx.df.score[ok])[0, 1]) \
            if ok.sum() > 2 else float("nan")
        out["tokens"], out["steps"] = int(case.clean.shape[1]), kw.get("steps")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="reasoner", help="the reasoner to use (zoo name or folder)")
    parser.add_argument("--cases", default=DEFAULT_CASES,
                        help="comma-separated: reasoner-<nodes>-s<seed>, act, act-addition, warp")
    parser.add_argument("--loop-sites", type=int, default=32, help="sites timed in the loop per case (0 = all)")
    parser.add_argument("--memory-mb", type=float, default=512)
    parser.add_argument("--rows", type=int, default=256, help="batch rows of the throughput forwards")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=20.0,
                        help="CPU seconds per case for the rounds timing patch and the bound's forwards")
    parser.add_argument("--min-rounds", type=int, default=5,
                        help="rounds per case at least, whatever --seconds: on a noisy machine each side's best of more "
                             "rounds is nearer its time undisturbed")
    parser.add_argument("--out", default="out/bench/patching.json")
    args = parser.parse_args()
    if not 1 <= args.min_rounds <= 20:
        parser.error(f"--min-rounds must be 1 to 20 (the most rounds a case runs); got {args.min_rounds}")
    torch.set_num_threads(args.threads)

    results = []
    print(f"{'case':16s} {'sites':>6s} {'no-op':>6s} {'exact s':>8s} {'loop s':>8s} {'bound s':>8s} "
          f"{'x loop':>7s} {'/bound':>7s} {'max|diff|':>9s} {'floor: x loop':>13s} {'/bound':>7s} {'schedule /bound':>15s}")
    for spec in args.cases.split(","):
        case = make_case(spec.strip(), args.model)
        r = run_case(case, args.loop_sites, args.memory_mb, 0, args.rows, args.seconds, args.min_rounds)
        results.append(r)
        s = r["seconds"]
        extra = (f"   attribution {r['speedup_attribution']:.0f}x loop, corr {r['attribution_correlation']:.3f}"
                 if "speedup_attribution" in r else "")
        print(f"{r['case']:16s} {r['sites']:6d} {r['sites_noop']:6d} {s['exact']:8.2f} {s['loop_extrapolated']:8.1f} "
              f"{s['lower_bound']:8.2f} {r['speedup_vs_loop']:6.1f}x {r['ratio_to_lower_bound']:6.2f}x "
              f"{r['max_abs_diff_vs_loop']:9.1e} {r['floor_vs_loop']:12.1f}x {r['floor_to_lower_bound']:6.2f}x "
              f"{r['floor_schedule_to_lower_bound']:14.2f}x{extra}",
              flush=True)
    print("targets: >= 20x the per-site loop, <= 1.5x the lower bound, max |diff| <= 1e-5")
    print("floor: the least any exact method needs by the cost model a + b * rows per block firing (every "
          "firing of one run in sequence, plus the needed block applications), against the loop and the bound")
    print("schedule: the floor with the block firings patch itself runs in place of one run's, against the bound")
    summary = {"threads": torch.get_num_threads(), "hardware": _hardware(), "cases": results}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(summary, indent=2))
    print(f"wrote {args.out}")


def _hardware() -> str:
    return f"{platform.machine()} {os.cpu_count()} CPU cores, torch {torch.__version__}"


if __name__ == "__main__":
    main()
