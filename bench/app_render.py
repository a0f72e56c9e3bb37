"""How fast the explorer opens and answers, measured in a real browser (headless Chromium).

Starts ``streamlit run apps/explorer.py`` on a free port, as a user would, and drives headless
Chromium (Selenium with Debian's ``chromium`` and ``chromium-driver``) through every page's
default view:

1. ``start``: from launching ``streamlit run`` to the Home page rendered in the browser (the
   script finished, every Plotly figure drawn). Target: <= 8 s on an idle 2-core machine;
2. ``cold``: the first visit of each page in that server (its imports, its models loaded into
   ``st.cache_resource``, its data computed), from opening the URL to the page rendered;
3. ``warm``: the same URL opened again, a new session with the caches warm;
4. ``change``: one click in the warm session (a page's view selector), from the click to the
   page rendered again. Target: <= 1 s.

"Rendered" means: the script is no longer running (``stApp``'s script state), no element is
stale or still loading its code (a skeleton), every Plotly chart on the page has been drawn,
and all of that held for two polls in a row. Polls are 50 ms apart, so each number is late by
at most about 0.1 s.

    python bench/app_render.py [--pages home reasoner ...] [--width 1600] [--reasoner runs/my-reasoner]
                               [--out out/bench/app_render.json]

``--reasoner`` opens the reasoner, patching, probing, codebook and dynamics pages on that checkpoint
folder (it must lie under ``WORKBENCH_MODELS_ROOT``, which is set to its parent). The numbers
are written as JSON; the table is printed. On a busy machine they are upper bounds.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
import urllib.parse
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the repository root: tests/ is importable

from tests.streamlit_server import STATE_JS, WATCH_JS, open_browser, serve  # noqa: E402

START_TARGET_S = 8.0
CHANGE_TARGET_S = 1.0
POLL_S = 0.05
PAGES = ("home", "reasoner", "act", "warp", "gain", "patching", "probing", "codebook", "dynamics")
REASONER_PAGES = ("reasoner", "patching", "probing", "codebook", "dynamics")
# page -> the clicks done in a warm session, the last one timed: (view selector's widget key, the option's label,
# None for the second option)
CHANGES = {
    "home": [("home_view", "Headline metrics")],
    "reasoner": [("reasoner_view", "Attention")],
    "act": [("act_view", "Ponder time vs difficulty")],
    "warp": [("warp_view", "theta_t (PCA)")],
    "gain": [("gain_view", None)],
    "patching": [("patch_view", "Step x layer")],
    "probing": [("probe_view", None)],
    "codebook": [("codebook_view", None)],
    "dynamics": [("dynamics_view", None)],
}


def wait(condition, timeout_s: float, what: str):
    """Poll ``condition()`` every POLL_S until it returns something true; that value."""
    end = time.perf_counter() + timeout_s
    while time.perf_counter() < end:
        try:
            value = condition()
        except Exception:  # noqa: BLE001 - a page replaced while we look: look again
            value = None
        if value:
            return value
        time.sleep(POLL_S)
    raise TimeoutError(f"{what}: not within {timeout_s:g} s")


def rendered(driver, timeout_s: float, since: dict | None = None) -> dict:
    """Wait until the page is rendered (twice in a row), and changed since the state ``since`` (a
    script run ended, or the page's text is another) when given; its state."""
    last = {}

    def done():
        s = driver.execute_script(STATE_JS)
        ok = (s and s["state"] == "notRunning" and not s["stale"] and not s["loading"] and s["main"] > 0
              and s["drawn"] == s["charts"] and (since is None or s["runs"] >= 1 or s["digest"] != since["digest"]))
        key = ok and (s["charts"], s["drawn"], s["nodes"], s["main"])
        hit = ok and last.get("key") == key
        last["key"] = key
        return s if hit else None

    return wait(done, timeout_s, "the page rendered")


def visit(driver, url: str, timeout_s: float) -> tuple[float, dict]:
    t0 = time.perf_counter()
    driver.get(url)
    state = rendered(driver, timeout_s)
    return time.perf_counter() - t0, state


def click(driver, steps, timeout_s: float) -> tuple[float | None, str]:
    """Do ``steps`` (the last one timed) in the current session: (seconds, what was clicked), or
    (None, why not) when a control is not on the page (a page changed and this table did not)."""
    from selenium.webdriver.common.by import By

    seconds = None
    for key, label in steps:
        scope = driver.find_elements(By.CSS_SELECTOR, f".st-key-{key}")
        if not scope:
            return None, f"NOT FOUND: no control with key {key!r}"
        options = scope[0].find_elements(By.CSS_SELECTOR, "button")  # a segmented control's options
        options = [o for o in options if o.is_displayed()]
        target = [o for o in options if o.text.strip() == label] if label is not None else options[1:2]
        if not target:
            return None, f"NOT FOUND: {key!r} has no option {label or 'but the first'!r}"
        what = f"{key} -> {target[0].text.strip()}"
        driver.execute_script(WATCH_JS)
        before = driver.execute_script(STATE_JS)
        t0 = time.perf_counter()
        target[0].click()
        rendered(driver, timeout_s, since=before)
        seconds = time.perf_counter() - t0
    return seconds, what


# the floor: the least a Streamlit page with one Plotly chart costs in this browser on this machine,
# and the least a click that swaps that chart for another costs
FLOOR_APP = """
import plotly.graph_objects as go
import streamlit as st
view = st.segmented_control("View", ["a", "b"], default="a", required=True, key="floor_view")
st.title(f"floor: view {view}")
st.plotly_chart(go.Figure(go.Scatter(y=[1, 3, 2] if view == "a" else [2, 1, 3])))
"""
FLOOR_CHANGE = [("floor_view", "b")]


def floor(driver, env: dict, log: Path, timeout_s: float) -> dict:
    """Start and warm visit of ``FLOOR_APP``, measured like the explorer's Home."""
    with tempfile.TemporaryDirectory() as tmp:
        app = Path(tmp) / "floor.py"
        app.write_text(FLOOR_APP)
        with serve(app, env, log, timeout_s) as (base, t_launch, _):
            visit(driver, base, timeout_s)
            start = time.perf_counter() - t_launch
            warm, _ = visit(driver, base, timeout_s)
            change = click(driver, FLOOR_CHANGE, timeout_s)
    return {"start_s": start, "warm_s": warm, "change_s": change[0]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pages", nargs="+", default=list(PAGES), choices=PAGES)
    p.add_argument("--width", type=int, default=1600, help="browser window width in px")
    p.add_argument("--reasoner", default=None, help="checkpoint folder for the reasoner-family pages")
    p.add_argument("--timeout", type=float, default=600, help="seconds a page may take before it counts as failed")
    p.add_argument("--out", default="out/bench/app_render.json")
    args = p.parse_args()

    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    if args.reasoner:
        env["WORKBENCH_MODELS_ROOT"] = str(Path(args.reasoner).resolve().parent)
    driver = open_browser(args.width, args.timeout)  # the browser first: its start is not the app's
    log = Path(args.out).with_suffix(".log")
    log.parent.mkdir(parents=True, exist_ok=True)
    rows, start = [], {}
    try:
        base_floor = floor(driver, env, log.with_suffix(".floor.log"), args.timeout)
        with serve(ROOT / "apps" / "explorer.py", env, log, args.timeout) as (base, t_launch, server_s):
            start["server_s"] = server_s
            for page in ["home"] + [q for q in args.pages if q != "home"]:
                query = (f"?{urllib.parse.urlencode({'model': args.reasoner})}"
                         if args.reasoner and page in REASONER_PAGES else "")
                url = f"{base}/{'' if page == 'home' else page}{query}"
                cold, state = visit(driver, url, args.timeout)
                if page == "home":
                    start["home_s"] = time.perf_counter() - t_launch
                warm, state = visit(driver, url, args.timeout)
                change = click(driver, CHANGES[page], args.timeout) if page in CHANGES else (None, "")
                rows.append({"page": page, "url": url.removeprefix(base), "cold_s": cold, "warm_s": warm,
                             "change_s": change[0], "change": change[1],
                             "charts": state["charts"], "plot_nodes": state["nodes"],
                             "errors": state["errors"] + state["tracebacks"]})
                if page == "home" and "home" not in args.pages:
                    rows.pop()
    finally:
        driver.quit()

    floor_change = "-" if base_floor["change_s"] is None else f"{base_floor['change_s']:.2f} s"
    print(f"floor (a one-chart Streamlit page, same browser): start {base_floor['start_s']:.2f} s, "
          f"warm visit {base_floor['warm_s']:.2f} s, a click that swaps its chart {floor_change}")
    ratio = start["home_s"] / base_floor["start_s"]
    print(f"cold start, `streamlit run` -> Home rendered: {start['home_s']:.2f} s (target <= {START_TARGET_S:g} s; "
          f"server answering after {start['server_s']:.2f} s; {ratio:.1f}x the floor)")
    print(f"{'page':10s} {'cold (s)':>9s} {'warm (s)':>9s} {'warm/floor':>11s} {'change (s)':>11s} {'charts':>7s} "
          f"{'plot nodes':>11s}  change clicked")
    for r in rows:
        change = "-" if r["change_s"] is None else f"{r['change_s']:.2f}"
        note = f"  ERROR: {r['errors'][0][:60]!r}" if r["errors"] else ""
        print(f"{r['page']:10s} {r['cold_s']:9.2f} {r['warm_s']:9.2f} {r['warm_s'] / base_floor['warm_s']:11.1f} "
              f"{change:>11s} {r['charts']:7d} {r['plot_nodes']:11d}  {r['change'] or '-'}{note}")
    changes = [r["change_s"] for r in rows if r["change_s"] is not None]
    unclicked = [r["page"] for r in rows if r["page"] in CHANGES and r["change_s"] is None]
    failed = [r["page"] for r in rows if r["errors"]]  # a page that shows an error is fast for the wrong reason
    print(f"start within {START_TARGET_S:g} s: {start['home_s'] <= START_TARGET_S}; "
          f"every change within {CHANGE_TARGET_S:g} s: "
          f"{all(c <= CHANGE_TARGET_S for c in changes) and not unclicked}"
          + (f"; NOT MET, pages showing an error: {', '.join(failed)}" if failed else "")
          + (f"; NOT MEASURED, no control to click on: {', '.join(unclicked)}" if unclicked else ""))
    out_path = Path(args.out)
    out_path.write_text(json.dumps({
        "start_target_s": START_TARGET_S, "change_target_s": CHANGE_TARGET_S, "width_px": args.width,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU(s), load average {os.getloadavg()[0]:.2f}",
        "floor": base_floor, **start, "pages": rows}, indent=2))
    print(f"wrote {out_path}")


if __name__ == "__main__":
    main()
