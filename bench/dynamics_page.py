"""How long each analysis of the Dynamics page takes on each family's default example.

For every family with a loop, loads its page model (``registry.get(family).dynamics_example``),
then times each analysis that applies at the page's defaults (``models.dynamics_adapters.page_defaults``:
a small draw, few steps and sizes, every perturbation of the basin grid in one forward):
``run`` (drawing the inputs and the analysis), ``figure`` (the Plotly figure) and ``table`` (the
DataFrame the page shows, turned into Arrow as Streamlit does). Target: run + figure + table
<= 3 s after the model is loaded.

Imports the page has already made (scikit-learn, Plotly, the digits data) are made first, outside
the timings; each analysis runs once untimed (``--seed 1``) and then ``--repeats`` times timed
(``--seed 0``), and the median is kept. Wall time is what the target is judged on; the process's CPU
time is printed beside it (on a machine busy with other work the wall time grows, the CPU time
much less: it is about what an idle core would take).

    python bench/dynamics_page.py [--families reasoner act ...] [--repeats 3] [--threads 1]
                                  [--out out/bench/dynamics_page.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

TARGET_S = 3.0


def _warm_imports() -> None:
    import plotly.graph_objects  # noqa: F401
    import pyarrow  # noqa: F401
    import sklearn.linear_model  # noqa: F401
    import sklearn.model_selection  # noqa: F401


def time_family(family: str, repeats: int) -> list[dict]:
    import pyarrow as pa

    import models
    from models import dynamics_adapters as da
    from models import registry

    example = registry.get(family).dynamics_example
    t0 = time.perf_counter()
    model = models.load(example)
    load_s = time.perf_counter() - t0
    a = da.adapters(model)
    rows = []
    for analysis in a.analyses:
        kw = da.page_defaults(a, analysis)
        da.run(model, analysis, **{**kw, "seed": 1})  # untimed: first-call costs (lazy imports, data)
        runs, figs, tables, cpus = [], [], [], []
        for _ in range(repeats):
            c0, t0 = time.process_time(), time.perf_counter()
            res = da.run(model, analysis, **{**kw, "seed": 0})
            t1 = time.perf_counter()
            res.figure()
            t2 = time.perf_counter()
            pa.Table.from_pandas(res.df)
            t3 = time.perf_counter()
            cpus.append(time.process_time() - c0)
            runs.append(t1 - t0)
            figs.append(t2 - t1)
            tables.append(t3 - t2)
        r, f, t, c = (statistics.median(x) for x in (runs, figs, tables, cpus))
        rows.append({"family": family, "model": example, "analysis": analysis, "load_s": load_s,
                     "run_s": r, "figure_s": f, "table_s": t, "total_s": r + f + t, "cpu_s": c, "rows": len(res.df),
                     "options": {k: list(v) if isinstance(v, tuple) else v for k, v in kw.items()},
                     "meets_target": r + f + t <= TARGET_S})
        print(f"{example:16s} {analysis:13s} run {r:6.2f}  figure {f:5.2f}  table {t:5.2f}  total {r + f + t:6.2f} s "
              f"(cpu {c:5.2f} s)  {'ok' if r + f + t <= TARGET_S else 'SLOW'}  [{len(res.df)} rows]", flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    from models import registry

    looped = [name for name, fam in registry.families().items() if fam.dynamics is not None]
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--families", nargs="+", default=looped, choices=looped, help="families to time")
    p.add_argument("--repeats", type=int, default=3, help="timed runs per analysis (the median is kept)")
    p.add_argument("--threads", type=int, default=1, help="torch threads")
    p.add_argument("--out", default="out/bench/dynamics_page.json", help="JSON file for the numbers")
    args = p.parse_args(argv)
    if args.repeats < 1 or args.threads < 1:
        p.error("--repeats and --threads must be >= 1")

    import torch

    torch.set_num_threads(args.threads)
    _warm_imports()
    rows = []
    for family in args.families:
        rows.extend(time_family(family, args.repeats))
    slow = [f"{r['model']} {r['analysis']}" for r in rows if not r["meets_target"]]
    print(f"\n{len(rows) - len(slow)} of {len(rows)} analyses within {TARGET_S:g} s"
          + (f"; slow: {', '.join(slow)}" if slow else ""))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"target_s": TARGET_S, "threads": args.threads, "repeats": args.repeats,
                               "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                                           "load_avg": os.getloadavg()},
                               "rows": rows}, indent=2))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
