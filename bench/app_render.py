"""Render time of every page of the explorer on its default example, once the models are loaded.

For each page, under Streamlit's AppTest (the script runs as in ``streamlit run``, without a
browser):

1. a warm-up run loads the page's models into ``st.cache_resource`` (and imports everything);
2. ``fresh``: the data caches are cleared (``st.cache_data``: rollouts, patching, probes, ...)
   and a new session renders the page: the first render of the default example after the
   models are cached. Target: <= 3 s on the CPU;
3. ``rerun``: the same session runs again, everything cached (what a widget change that
   touches no computation costs).

    python bench/app_render.py [--reasoner runs/my-reasoner] [--repeats 3] [--out out/bench/app_render.json]

``--reasoner`` opens the reasoner, patching, probing and codebook pages on that checkpoint
folder (default: what the zoo holds; with no reasoner shipped the reasoner page only says so).
Writes the numbers as JSON; prints one line per page.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import streamlit as st
import torch
from streamlit.logger import set_log_level
from streamlit.testing.v1 import AppTest

APP = str(Path(__file__).resolve().parents[1] / "apps" / "explorer.py")
PAGES = ("home", "reasoner", "act", "warp", "gain", "patching", "probing", "codebook")
REASONER_PAGES = ("reasoner", "patching", "probing", "codebook")
TARGET_S = 3.0


def session(page: str, model: str | None) -> AppTest:
    """A new session on ``page`` (the entry script ran once to register the pages)."""
    at = AppTest.from_file(APP, default_timeout=600)
    at.run()
    if page != "home":
        at.switch_page(f"pages/{page}.py")
    if model:
        at.query_params["model"] = model
    return at


def timed_run(at: AppTest) -> float:
    t0 = time.perf_counter()
    at.run()
    seconds = time.perf_counter() - t0
    if at.exception:
        raise RuntimeError(f"the page raised: {at.exception[0].message}")
    return seconds


def measure(page: str, model: str | None, repeats: int) -> dict:
    timed_run(session(page, model))  # warm-up: models into st.cache_resource
    fresh, rerun = [], []
    for _ in range(repeats):
        set_log_level("error")  # AppTest outside a server warns at every cache clear (new loggers each time)
        st.cache_data.clear()
        at = session(page, model)
        fresh.append(timed_run(at))
        rerun.append(timed_run(at))
    errors = [e.value for e in at.error]
    return {"page": page, "model": model or "(default)", "fresh_s": statistics.median(fresh),
            "fresh_all_s": fresh, "rerun_s": statistics.median(rerun), "charts": len(at.get("plotly_chart")),
            "messages": errors + [i.value for i in at.info], "errors": errors,
            "within_target": statistics.median(fresh) <= TARGET_S}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--reasoner", default=None, help="checkpoint folder for the reasoner-family pages")
    p.add_argument("--pages", nargs="+", default=list(PAGES), choices=PAGES)
    p.add_argument("--repeats", type=int, default=3, help="fresh renders per page (the median is reported)")
    p.add_argument("--out", default="out/bench/app_render.json")
    args = p.parse_args()
    torch.set_num_threads(1)
    set_log_level("error")
    rows = []
    print(f"{'page':10s} {'fresh (s)':>10s} {'rerun (s)':>10s} {'charts':>7s}  <= {TARGET_S:g} s   model")
    for page in args.pages:
        model = args.reasoner if page in REASONER_PAGES else None
        r = measure(page, model, args.repeats)
        rows.append(r)
        note = f"  {r['messages'][0][:70]}" if r["charts"] == 0 and r["messages"] else ""
        print(f"{page:10s} {r['fresh_s']:10.2f} {r['rerun_s']:10.2f} {r['charts']:7d}  "
              f"{'yes' if r['within_target'] else 'NO':>6s}   {r['model']}{note}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"target_s": TARGET_S, "machine": f"{platform.machine()}, {torch.get_num_threads()} "
                                                               "torch thread(s)", "pages": rows}, indent=2))
    print(f"all pages within {TARGET_S:g} s: {all(r['within_target'] for r in rows)}; wrote {out}")


if __name__ == "__main__":
    main()
