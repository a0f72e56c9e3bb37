"""The explorer served by ``streamlit run`` and read from a headless browser: shared by the browser
test (``tests/test_browser.py``) and the render benchmark (``bench/app_render.py``)."""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BROWSERS = ("chromium", "chromium-browser", "google-chrome")

# where the page stands: the script's state, elements stale or still loading their code, charts
# drawn (and the nodes they hold), error and info boxes, script runs counted by WATCH_JS, and a
# digest of the page's text. A quick run's start and end can reach the page in one update, which
# then never shows "running": a changed digest says the page changed all the same (``textContent``,
# which forces no layout while the page draws).
STATE_JS = """
const app = document.querySelector('[data-testid="stApp"]');
if (!app) return null;
const charts = Array.from(document.querySelectorAll('[data-testid="stPlotlyChart"]'));
const drawn = charts.filter(c => { const p = c.querySelector('.js-plotly-plot');
                                   return p && p._fullLayout && p.querySelector('.main-svg'); }).length;
return {state: app.getAttribute('data-test-script-state'),
        stale: document.querySelectorAll('[data-stale="true"]').length,
        loading: document.querySelectorAll('[data-testid="stStatusWidget"], [data-testid="stSpinner"], '
                                           + '[data-testid="stSkeleton"]').length,
        main: document.querySelectorAll('[data-testid="stMain"] [data-testid="stElementContainer"]').length,
        charts: charts.length, drawn: drawn,
        nodes: Array.from(document.querySelectorAll('.js-plotly-plot')).reduce(
            (n, p) => n + p.getElementsByTagName('*').length, 0),
        errors: Array.from(document.querySelectorAll('[data-testid="stAlertContentError"]')).map(e => e.innerText),
        tracebacks: Array.from(document.querySelectorAll('[data-testid="stException"]')).map(e => e.innerText),
        infos: document.querySelectorAll('[data-testid="stAlertContentInfo"]').length,
        runs: window.__scriptRuns || 0,
        digest: Array.from((document.querySelector('[data-testid="stMain"]') || app).textContent)
                     .reduce((h, c) => (Math.imul(h, 31) + c.charCodeAt(0)) | 0, 0)};
"""

# count the script runs that end from now on (a click starts one): STATE_JS's ``runs``. Every
# change of the script state anywhere in the page is seen (the app's root may be re-created), and
# a run that starts and ends between two observer callbacks still leaves a record ending "running"
WATCH_JS = """
window.__scriptRuns = 0;
new MutationObserver(records => {
  for (const r of records) if (r.oldValue === 'running') window.__scriptRuns++;
}).observe(document.documentElement, {subtree: true, attributes: true, attributeOldValue: true,
                                      attributeFilter: ['data-test-script-state']});
"""


def find_browser() -> tuple[str, str] | None:
    """(browser binary, chromedriver) if both are installed and selenium imports."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        return None
    binary = next((shutil.which(b) for b in BROWSERS if shutil.which(b)), None)
    driver = shutil.which("chromedriver")
    return (binary, driver) if binary and driver else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serve(app: Path, env: dict, log: Path, timeout_s: float, poll_s: float = 0.05):
    """``streamlit run app`` on a free port, stopped on exit; yields (base URL, launch time
    (``time.perf_counter``), seconds until its health check answered)."""
    base = f"http://127.0.0.1:{free_port()}"
    cmd = [sys.executable, "-m", "streamlit", "run", str(app), "--server.headless", "true",
           "--server.port", base.rsplit(":", 1)[1], "--server.address", "127.0.0.1",
           "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none"]
    with open(log, "w") as out:
        t_launch = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        end = time.perf_counter() + timeout_s
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"streamlit exited ({proc.poll()}):\n{log.read_text()[-3000:]}")
            try:
                if urllib.request.urlopen(f"{base}/_stcore/health", timeout=5).read() == b"ok":
                    break
            except OSError:
                pass
            if time.perf_counter() > end:
                raise RuntimeError(f"streamlit did not answer within {timeout_s:g} s:\n{log.read_text()[-3000:]}")
            time.sleep(poll_s)
        yield base, t_launch, time.perf_counter() - t_launch
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


def open_browser(width: int, timeout_s: float):
    """Headless Chromium driven by Selenium, ``width`` px wide; commands wait up to ``timeout_s``
    (a browser busy drawing a large figure answers late, not never)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    found = find_browser()
    if found is None:
        raise RuntimeError("no headless browser: install chromium and chromium-driver (and the selenium package)")
    options = webdriver.ChromeOptions()
    options.binary_location = found[0]
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                f"--window-size={width},1200"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(executable_path=found[1]), options=options)
    driver.set_page_load_timeout(timeout_s)
    driver.set_script_timeout(timeout_s)
    driver.command_executor.client_config.timeout = timeout_s
    return driver
