"""Render time of every page of the explorer on its default example, once the models are loaded.

For each page, under Streamlit's AppTest (the script runs as in ``streamlit run``, without a
browser):

1. ``cold``: the first run of the page in the process loads its models into
   ``st.cache_resource`` (and imports everything): a cold start, less the server's own start;
2. ``fresh``: the data caches are cleared (``st.cache_data``: rollouts, patching, probes, ...)
   and a new session renders the page: the first render of the default example after the
   models are cached. Target: <= 3 s on the CPU;
3. ``rerun``: the same session runs again, everything cached (what a widget change that
   touches no computation costs);
4. ``change``: on the model pages, one widget of one view changed in the warm session (the
   reasoner's attention marks, ACT's halting-logit offset, WARP's PCA components): what a
   click costs. The view is chosen first (untimed) where the page has a view selector, so the
   same number can be taken on a version of the app with tabs (``--app``).

    python bench/app_render.py [--reasoner runs/my-reasoner] [--repeats 3] [--out out/bench/app_render.json]
                               [--app path/to/explorer.py]

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
# page -> (its view selector's key, the view, widget kind, widget key, new value): one click
CHANGES = {"reasoner": ("reasoner_view", "Attention", "checkbox", "reasoner_attn_marks", False),
           "act": ("act_view", "Patch the halting logit", "slider", "act_patch_offset", -10.0),
           "warp": ("warp_view", "theta_t (PCA)", "radio", "warp_pca_k", 3)}


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


def timed_change(at: AppTest, page: str) -> float | None:
    """Seconds of one widget change on ``page`` in a warm session (None: the page has none here)."""
    if page not in CHANGES:
        return None
    view_key, view, kind, key, value = CHANGES[page]
    if any(b.key == view_key for b in at.get("button_group")):
        at.button_group(key=view_key).set_value(view)
        timed_run(at)
    widgets = [w for w in getattr(at, kind) if w.key == key]
    if not widgets:
        return None
    widgets[0].set_value(value)
    return timed_run(at)


def measure(page: str, model: str | None, repeats: int) -> dict:
    cold = timed_run(session(page, model))  # the first run: models into st.cache_resource
    fresh, rerun, change = [], [], []
    for _ in range(repeats):
        set_log_level("error")  # AppTest outside a server warns at every cache clear (new loggers each time)
        st.cache_data.clear()
        at = session(page, model)
        fresh.append(timed_run(at))
        rerun.append(timed_run(at))
        change.append(timed_change(at, page))
    errors = [e.value for e in at.error]
    changed = [c for c in change if c is not None]
    return {"page": page, "model": model or "(default)", "cold_s": cold, "fresh_s": statistics.median(fresh),
            "fresh_all_s": fresh, "rerun_s": statistics.median(rerun),
            "change_s": statistics.median(changed) if changed else None, "charts": len(at.get("plotly_chart")),
            "messages": errors + [i.value for i in at.info], "errors": errors,
            "within_target": statistics.median(fresh) <= TARGET_S}


def main() -> None:
    global APP
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--reasoner", default=None, help="checkpoint folder for the reasoner-family pages")
    p.add_argument("--pages", nargs="+", default=list(PAGES), choices=PAGES)
    p.add_argument("--repeats", type=int, default=3, help="fresh renders per page (the median is reported)")
    p.add_argument("--out", default="out/bench/app_render.json")
    p.add_argument("--app", default=APP, help="the entry script (default: apps/explorer.py)")
    args = p.parse_args()
    APP = str(Path(args.app).resolve())
    torch.set_num_threads(1)
    set_log_level("error")
    rows = []
    print(f"{'page':10s} {'cold (s)':>9s} {'fresh (s)':>10s} {'rerun (s)':>10s} {'change (s)':>11s} {'charts':>7s}"
          f"  <= {TARGET_S:g} s   model")
    for page in args.pages:
        model = args.reasoner if page in REASONER_PAGES else None
        r = measure(page, model, args.repeats)
        rows.append(r)
        note = f"  {r['messages'][0][:70]}" if r["charts"] == 0 and r["messages"] else ""
        change = "-" if r["change_s"] is None else f"{r['change_s']:.2f}"
        print(f"{page:10s} {r['cold_s']:9.2f} {r['fresh_s']:10.2f} {r['rerun_s']:10.2f} {change:>11s} "
              f"{r['charts']:7d}  "
              f"{'yes' if r['within_target'] else 'NO':>6s}   {r['model']}{note}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"target_s": TARGET_S, "machine": f"{platform.machine()}, {torch.get_num_threads()} "
                                                               "torch thread(s)", "pages": rows}, indent=2))
    print(f"all pages within {TARGET_S:g} s: {all(r['within_target'] for r in rows)}; wrote {out}")


if __name__ == "__main__":
    main()
