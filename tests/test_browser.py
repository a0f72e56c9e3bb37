"""The explorer in a real browser: ``streamlit run apps/explorer.py`` on a free port, every page
visited by headless Chromium (Selenium with Debian's ``chromium`` and ``chromium-driver``), a plot
rendered and no error box on each; screenshots go to ``test-output/screenshots/``.

``.ci/run`` installs the browser. Where none is installed this test is skipped, except under CI
(``CI`` set), where a missing browser is a failure.

Every wait is a wait for a condition (the server's health check, a page settled, an error box)
with limits of minutes, so a busy machine is slow, not a failure.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from tests import app_models
from tests.app_models import shipped

ROOT = Path(__file__).resolve().parents[1]
SHOTS = ROOT / "test-output" / "screenshots"
BROWSERS = ("chromium", "chromium-browser", "google-chrome")
PAGE_TIMEOUT_S = 300  # a page settles (its script done, a plot drawn) within this
START_TIMEOUT_S = 300  # the server answers its health check within this
POLL_S = 0.5

pytestmark = pytest.mark.slow


def _browser() -> tuple[str, str] | None:
    """(browser binary, chromedriver) if both are installed and selenium imports."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        return None
    binary = next((shutil.which(b) for b in BROWSERS if shutil.which(b)), None)
    driver = shutil.which("chromedriver")
    return (binary, driver) if binary and driver else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def browser():
    found = _browser()
    if found is None:
        reason = ("no headless browser: install Debian's chromium and chromium-driver (apt-get install chromium "
                  "chromium-driver) and the selenium package (`.ci/run` does both)")
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = found[0]
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1400,2400"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(executable_path=found[1]), options=options)
    driver.set_page_load_timeout(PAGE_TIMEOUT_S)
    driver.set_script_timeout(PAGE_TIMEOUT_S)
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """The explorer served by ``streamlit run`` on a free port; yields (base URL, tiny checkpoints)."""
    if _browser() is None:  # the browser fixture reports why; don't start a server for nothing
        yield None, {}
        return
    root = tmp_path_factory.mktemp("browser_models")
    tiny = {k: str(v) for k, v in app_models.all_families(root).items()}
    port = _free_port()
    log = tmp_path_factory.mktemp("streamlit") / "streamlit.log"
    # the tiny checkpoints lie outside the zoo: allow their folder, as whoever starts the app would
    env = {**os.environ, "WORKBENCH_THREADS": "1", "PYTHONUNBUFFERED": "1", "WORKBENCH_MODELS_ROOT": str(root)}
    cmd = [sys.executable, "-m", "streamlit", "run", "apps/explorer.py", "--server.headless", "true",
           "--server.port", str(port), "--server.address", "127.0.0.1", "--browser.gatherUsageStats", "false",
           "--server.fileWatcherType", "none"]
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"

    def up() -> bool:
        if proc.poll() is not None:
            raise RuntimeError(f"streamlit exited ({proc.poll()}):\n{log.read_text()[-3000:]}")
        try:
            return urllib.request.urlopen(f"{base}/_stcore/health", timeout=10).read() == b"ok"
        except OSError:
            return False

    try:
        if not _wait_for(up, START_TIMEOUT_S):
            raise RuntimeError(f"streamlit did not answer within {START_TIMEOUT_S} s:\n{log.read_text()[-3000:]}")
        yield base, tiny
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


def _wait_for(condition, timeout_s: float) -> bool:
    """Poll ``condition()`` until it is true (True) or ``timeout_s`` passes (False)."""
    from selenium.common.exceptions import JavascriptException, StaleElementReferenceException, TimeoutException
    from selenium.webdriver.support.wait import WebDriverWait

    try:  # a page replaced while we look is not there yet: look again
        WebDriverWait(None, timeout_s, poll_frequency=POLL_S,
                      ignored_exceptions=(JavascriptException, StaleElementReferenceException)).until(
            lambda _: condition())
        return True
    except TimeoutException:
        return False


def _count(driver, css: str) -> int:
    """Visible elements matching ``css`` (elements replaced while we look count as gone)."""
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By

    n = 0
    for e in driver.find_elements(By.CSS_SELECTOR, css):
        try:
            n += e.is_displayed()
        except StaleElementReferenceException:
            pass
    return n


def _texts(driver, css: str) -> list[str]:
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By

    out = []
    for e in driver.find_elements(By.CSS_SELECTOR, css):
        try:
            out.append(e.text)
        except StaleElementReferenceException:
            pass
    return out


def _settled(driver, want_plot: bool) -> bool:
    """The script finished (no running indicator) and the page shows its content."""
    if _count(driver, '[data-testid="stStatusWidget"]') or _count(driver, '[data-testid="stSpinner"]'):
        return False
    if _count(driver, '[data-testid="stException"]') or _count(driver, '[data-testid="stAlertContentError"]'):
        return True
    plots = _count(driver, ".js-plotly-plot .main-svg")
    return plots > 0 if want_plot else plots > 0 or _count(driver, '[data-testid="stAlertContentInfo"]') > 0


# every Plotly figure on the page has been laid out and drawn (plotly sets _fullLayout when done)
PLOTS_DRAWN = ("return Array.from(document.querySelectorAll('.js-plotly-plot'))"
               ".every(p => p._fullLayout && p.querySelector('.main-svg'));")


def visit(driver, url: str, shot: str, want_plot: bool = True) -> None:
    """Open ``url``, wait for the page, check a plot (or, where allowed, an info box) and no error box."""
    driver.get(url)
    _wait_for(lambda: _settled(driver, want_plot) and driver.execute_script(PLOTS_DRAWN), PAGE_TIMEOUT_S)
    SHOTS.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(SHOTS / f"{shot}.png"))
    errors = _texts(driver, '[data-testid="stAlertContentError"]')
    assert not _count(driver, '[data-testid="stException"]'), f"{shot}: a traceback is shown"
    assert not errors, f"{shot}: error box: {errors}"
    if want_plot:
        assert _count(driver, ".js-plotly-plot .main-svg") > 0, f"{shot}: no plot rendered within {PAGE_TIMEOUT_S} s"
    else:
        assert _count(driver, ".js-plotly-plot .main-svg") or _count(driver, '[data-testid="stAlertContentInfo"]'), \
            f"{shot}: neither a plot nor a message rendered"


PAGES = [  # (url path, family of the tiny checkpoint to open it on or None for the default, screenshot)
    ("", None, "home"),
    ("reasoner", None, "reasoner_default"),
    ("reasoner", "reasoner", "reasoner"),
    ("act", None, "act"),
    ("warp", None, "warp"),
    ("gain", None, "gain"),
    ("patching", None, "patching"),
    ("patching", "reasoner", "patching_reasoner"),
    ("probing", None, "probing"),
    ("probing", "reasoner", "probing_reasoner"),
    ("codebook", None, "codebook"),
    ("codebook", "reasoner", "codebook_reasoner"),
]


def test_every_page_renders_in_a_browser(browser, server):
    base, tiny = server
    for path, family, shot in PAGES:
        query = f"?model={urllib.parse.quote(tiny[family])}" if family else ""
        # a default page whose family has no shipped model yet says so: a message, not a plot
        visit(browser, f"{base}/{path}{query}", shot, want_plot=bool(family) or shipped(path or "home"))
    assert len(list(SHOTS.glob("*.png"))) >= len(PAGES)


def test_bad_input_shows_a_message_in_the_browser(browser, server):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    base, tiny = server
    visit(browser, f"{base}/act?model={urllib.parse.quote(tiny['act'])}", "act_tiny")
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.wait import WebDriverWait

    box = WebDriverWait(browser, PAGE_TIMEOUT_S, poll_frequency=POLL_S).until(
        ec.element_to_be_clickable((By.CSS_SELECTOR, 'input[aria-label="Input (parity)"]')))
    box.send_keys(Keys.CONTROL, "a")
    box.send_keys("+0x", Keys.ENTER)
    _wait_for(lambda: _count(browser, '[data-testid="stAlertContentError"]') > 0, PAGE_TIMEOUT_S)
    browser.save_screenshot(str(SHOTS / "act_malformed.png"))
    errors = _texts(browser, '[data-testid="stAlertContentError"]')
    assert any("not an entry" in e for e in errors), errors
    assert not _count(browser, '[data-testid="stException"]')
