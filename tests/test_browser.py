"""The explorer in a real browser: ``streamlit run apps/explorer.py`` on a free port, every page
visited by headless Chromium (Selenium with Debian's ``chromium`` and ``chromium-driver``) at
1000 px and 1600 px wide.

On every page, at both widths, from the boxes the browser laid out (``getBoundingClientRect``):

- no error box, no traceback, and every Plotly chart drawn;
- inside each Plotly figure, no two of these overlap: legends, colour bars, the figure's title,
  axis titles and titles placed on the paper (subplot titles); none of them is cut off by the
  figure's edge;
- every Plotly axis that shows tick labels has a title;
- no two Streamlit elements of the page overlap (a figure spilling over a table, say).

On Home, a zoo row's page link is clicked and must open that model's page on that model.
Screenshots of every page and width are kept in a temporary folder (printed at the end; the
environment variable ``WORKBENCH_SCREENSHOTS`` names another).

``.ci/run`` installs the browser. Where none is installed this test is skipped, except under CI
(``CI`` set), where a missing browser is a failure.

Every wait is a wait for a condition (the server's health check, the page's script done and its
figures drawn, an error box) with limits of minutes, so a busy machine is slow, not a failure.
"""

from __future__ import annotations

import os
import urllib.parse
from pathlib import Path

import pytest

from tests import app_models
from tests.app_models import shipped
from tests.streamlit_server import STATE_JS, find_browser, open_browser, serve

ROOT = Path(__file__).resolve().parents[1]
WIDTHS = (1000, 1600)
PAGE_TIMEOUT_S = 600  # a page settles (its script done, its figures drawn) within this
START_TIMEOUT_S = 300  # the server answers its health check within this
POLL_S = 0.5
OVERLAP_PX = 2  # boxes sharing at most this many pixels (a border) do not overlap
# the zoo table on Home (apps/pages/home.py): header and row heights; the first column is the link
ZOO_HEADER_PX, ZOO_ROW_PX = 36, 66

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def browser():
    if find_browser() is None:
        reason = ("no headless browser: install Debian's chromium and chromium-driver (apt-get install chromium "
                  "chromium-driver) and the selenium package (`.ci/run` does both)")
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    driver = open_browser(WIDTHS[-1], PAGE_TIMEOUT_S)
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Path:
    folder = Path(os.environ["WORKBENCH_SCREENSHOTS"]) if os.environ.get("WORKBENCH_SCREENSHOTS") else \
        tmp_path_factory.mktemp("screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    yield folder
    print(f"\nscreenshots of the explorer: {folder}")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """The explorer served by ``streamlit run`` on a free port; yields (base URL, tiny checkpoints)."""
    if find_browser() is None:  # the browser fixture reports why; don't start a server for nothing
        yield None, {}
        return
    root = tmp_path_factory.mktemp("browser_models")
    tiny = {k: str(v) for k, v in app_models.all_families(root).items()}
    log = tmp_path_factory.mktemp("streamlit") / "streamlit.log"
    # the tiny checkpoints lie outside the zoo: allow their folder, as whoever starts the app would
    env = {**os.environ, "WORKBENCH_THREADS": "1", "PYTHONUNBUFFERED": "1", "WORKBENCH_MODELS_ROOT": str(root)}
    with serve(ROOT / "apps" / "explorer.py", env, log, START_TIMEOUT_S, poll_s=POLL_S) as (base, _, _):
        yield base, tiny


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


def _state(driver) -> dict | None:
    return driver.execute_script(STATE_JS)


def _settled(driver, memory: dict) -> bool:
    """The script is done, nothing stale or loading, every chart drawn, and so twice in a row."""
    s = _state(driver)
    ok = (bool(s) and s["state"] == "notRunning" and not s["stale"] and not s["loading"] and s["main"] > 0
          and s["drawn"] == s["charts"])
    key = ok and (s["charts"], s["main"], len(s["errors"]))
    same = ok and memory.get("key") == key
    memory["key"] = key
    return same


def settle(driver, what: str) -> dict:
    """Wait until the page settled (see ``_settled``); its state."""
    memory = {}
    assert _wait_for(lambda: _settled(driver, memory), PAGE_TIMEOUT_S), \
        f"{what}: not settled within {PAGE_TIMEOUT_S} s: {_state(driver)}"
    return _state(driver)


def screenshot(driver, folder: Path, name: str, width: int) -> None:
    """The whole page: the window made as tall as the page for the picture, then put back."""
    height = driver.execute_script(
        "const m = document.querySelector('[data-testid=\"stMain\"]'); return m ? m.scrollHeight : 1200;")
    driver.set_window_size(width, min(max(int(height) + 120, 800), 8000))
    driver.save_screenshot(str(folder / f"{name}_{width}px.png"))
    driver.set_window_size(width, 1200)


def visit(driver, url: str, what: str, want_plot: bool | None = True) -> dict:
    """Open ``url``, wait until the page settled; no error box, and a plot (or, where allowed, a
    message; ``want_plot=None``: a page that shows no figure, such as Home's zoo table)."""
    driver.get(url)
    s = settle(driver, what)
    assert not s["tracebacks"], f"{what}: a traceback is shown"
    assert not s["errors"], f"{what}: error box: {s['errors']}"
    if want_plot:
        assert s["charts"] > 0, f"{what}: no plot rendered"
    elif want_plot is False:
        assert s["charts"] or s["infos"], f"{what}: neither a plot nor a message rendered"
    return s


# every Plotly figure and every Streamlit element of the page, as boxes; axes without a title
LAYOUT_JS = """
const box = (e) => { const r = e.getBoundingClientRect(); return [r.left, r.top, r.right, r.bottom]; };
const visible = (b) => b[2] - b[0] > 0.5 && b[3] - b[1] > 0.5;
const figures = Array.from(document.querySelectorAll('.js-plotly-plot')).map((gd, i) => {
  const L = gd._fullLayout || {};
  const name = (L.title && L.title.text) || `figure ${i + 1}`;
  const parts = [];
  const add = (kind, e) => { const b = box(e); if (visible(b)) parts.push({kind, box: b}); };
  gd.querySelectorAll('g.legend').forEach(g => add('legend', g.querySelector('rect.bg') || g));
  gd.querySelectorAll('g.colorbar').forEach(g => add('colour bar', g));
  gd.querySelectorAll('text.gtitle').forEach(t => add('title', t));
  gd.querySelectorAll('.infolayer text').forEach(t => {
    const c = t.getAttribute('class') || '';
    if (/^[xy]\\d*title$/.test(c)) add(`${c.replace('title', '')}-axis title`, t);
  });
  (L.annotations || []).forEach((a, k) => {  // titles placed on the paper: subplot titles and the like
    if (a.xref !== 'paper' || a.yref !== 'paper' || a.visible === false) return;
    const g = gd.querySelector(`g.annotation[data-index="${k}"] .annotation-text-g`);
    if (g) add(`paper title "${String(a.text).slice(0, 40)}"`, g);
  });
  const untitled = [];
  const used = (L._subplots || {});
  [...(used.xaxis || []), ...(used.yaxis || [])].forEach(id => {  // the axes in use: 'x', 'x2', 'y', ...
    const k = id.replace(/^([xy])/, '$1axis');
    const ax = L[k];
    if (!ax || ax.visible === false || ax.showticklabels === false) return;
    const t = ax.title && ax.title.text;
    if (!t || !String(t).trim()) untitled.push(k);
  });
  return {name, plot: box(gd), parts, untitled};
});
const leaves = Array.from(document.querySelectorAll('[data-testid="stMain"] [data-testid="stElementContainer"]'))
  .filter(e => !e.querySelector('[data-testid="stElementContainer"]'))
  // the content of a collapsed expander is laid out but not shown
  .filter(e => !e.closest('details:not([open])') && (!e.checkVisibility || e.checkVisibility()))
  .map(e => ({kind: (e.className.match(/\\bst(?!ElementContainer)[A-Z]\\w*/) || ['element'])[0], box: box(e)}))
  .filter(e => visible(e.box));
return {figures, elements: leaves};
"""


def _overlap(a, b) -> bool:
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    return w > OVERLAP_PX and h > OVERLAP_PX


def _inside(inner, outer) -> bool:
    return (inner[0] >= outer[0] - OVERLAP_PX and inner[1] >= outer[1] - OVERLAP_PX
            and inner[2] <= outer[2] + OVERLAP_PX and inner[3] <= outer[3] + OVERLAP_PX)


def layout_findings(driver, where: str) -> list[str]:
    """What is wrong with the page's layout: overlapping or cut-off boxes, untitled axes."""
    layout = driver.execute_script(LAYOUT_JS)
    found = []
    for fig in layout["figures"]:
        parts = fig["parts"]
        for i, a in enumerate(parts):
            if not _inside(a["box"], fig["plot"]):
                found.append(f"{where}, {fig['name']!r}: the {a['kind']} is cut off by the figure's edge")
            for b in parts[i + 1:]:
                if _overlap(a["box"], b["box"]):
                    found.append(f"{where}, {fig['name']!r}: the {a['kind']} overlaps the {b['kind']}")
        if fig["untitled"]:
            found.append(f"{where}, {fig['name']!r}: no title on {', '.join(fig['untitled'])}")
    elements = layout["elements"]
    for i, a in enumerate(elements):
        for b in elements[i + 1:]:
            if _overlap(a["box"], b["box"]):
                found.append(f"{where}: Streamlit elements overlap: {a['kind']} and {b['kind']}")
    return found


PAGES = [  # (url path, family of the tiny checkpoint to open it on or None for the default, screenshot)
    ("", None, "home"),
    ("?home_view=Headline+metrics", None, "home_headline"),
    ("?home_view=OOD+generalisation", None, "home_ood"),
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
    ("dynamics", None, "dynamics"),
]


def test_every_page_renders_legibly_at_both_widths(browser, server, shots):
    base, tiny = server
    findings = []
    for width in WIDTHS:
        browser.set_window_size(width, 1200)
        for path, family, shot in PAGES:
            query = f"?model={urllib.parse.quote(tiny[family])}" if family else ""
            where = f"{shot} at {width} px"
            # a default page whose family has no shipped model yet says so: a message, not a plot;
            # Home's zoo view is a table
            want_plot = None if path == "" else bool(family) or shipped(path.split("?")[0] or "home")
            visit(browser, f"{base}/{path}{query}", where, want_plot=want_plot)
            findings += layout_findings(browser, where)
            screenshot(browser, shots, shot, width)
    assert len(list(shots.glob("*.png"))) >= len(PAGES) * len(WIDTHS)
    assert not findings, "layout problems:\n" + "\n".join(findings)


def test_a_zoo_row_opens_its_model_page(browser, server, shots):
    """The first zoo row's link (its model's name, drawn on the table's canvas) opens that model's
    page on that model."""
    from selenium.webdriver.common.actions.action_builder import ActionBuilder
    from selenium.webdriver.common.by import By

    from apps import zoo

    base, _ = server
    table = zoo.zoo_table()
    if table.empty:
        pytest.skip("the zoo is empty: no row to click")
    name = table["model"].iloc[0]
    family = zoo.family_of(name)
    if not (ROOT / "apps" / "pages" / f"{family}.py").is_file():
        pytest.skip(f"the first zoo model, {name}, has no page of its own")
    browser.set_window_size(WIDTHS[-1], 1200)
    visit(browser, f"{base}/", "home", want_plot=None)
    grid = browser.find_element(By.CSS_SELECTOR, '[data-testid="stDataFrame"] canvas')
    browser.execute_script("arguments[0].scrollIntoView({block: 'start'});", grid)
    left, top = browser.execute_script("const r = arguments[0].getBoundingClientRect(); return [r.left, r.top];", grid)
    # the first column holds the links (the model's name); the first row's text starts at its left
    click = ActionBuilder(browser)
    click.pointer_action.move_to_location(int(left + 20), int(top + ZOO_HEADER_PX + ZOO_ROW_PX / 2))
    click.pointer_action.click()
    before = set(browser.window_handles)
    home = browser.current_window_handle
    click.perform()
    assert _wait_for(lambda: set(browser.window_handles) - before or "model=" in browser.current_url, 60), \
        "clicking the first zoo row's page link opened nothing"
    opened = set(browser.window_handles) - before
    if opened:  # the grid opens links in a new tab
        browser.switch_to.window(opened.pop())
    try:
        s = settle(browser, f"{family} page opened from the zoo")
        browser.save_screenshot(str(shots / "zoo_link_opened.png"))
        url = urllib.parse.urlparse(browser.current_url)
        assert url.path.rstrip("/").endswith(f"/{family}"), browser.current_url
        assert urllib.parse.parse_qs(url.query).get("model") == [name], browser.current_url
        assert not s["errors"] and not s["tracebacks"], s["errors"]
        # the model picker shows the chosen name (a select's value is not part of its .text)
        picker = browser.find_element(By.CSS_SELECTOR, f".st-key-{family}_model_choice")
        assert name in picker.get_attribute("innerText") + picker.get_attribute("innerHTML"), \
            f"the page opened on another model than {name}"
    finally:
        if browser.current_window_handle != home:
            browser.close()
            browser.switch_to.window(home)


def test_home_has_the_browser_load_the_plotly_code_before_a_figure_view_is_opened(browser, server):
    """The zoo view draws no figure, yet the browser fetches Streamlit's Plotly chart code while it
    is shown, so the first figure view opened from Home does not wait for it."""
    from selenium.webdriver.common.by import By

    base, _ = server
    browser.set_window_size(WIDTHS[-1], 1200)
    visit(browser, f"{base}/", "home", want_plot=None)
    assert not browser.find_elements(By.CSS_SELECTOR, '[data-testid="stPlotlyChart"]')
    fetched = "return performance.getEntriesByType('resource').some(e => /[/]PlotlyChart[.][^/]*[.]js$/.test(e.name));"
    assert _wait_for(lambda: browser.execute_script(fetched), 60), "Home never loaded the Plotly chart code"


# where a state-table cell is drawn: the category's pixel on each axis, in the page's coordinates
CELL_JS = """
const gd = document.querySelector('.st-key-state_table .js-plotly-plot');
gd.scrollIntoView({block: 'center'});
const xa = gd._fullLayout.xaxis, ya = gd._fullLayout.yaxis, r = gd.getBoundingClientRect();
const xs = xa._categories, ys = ya._categories;
const col = xs.includes('1') ? '1' : xs[xs.length - 1], row = ys[0];
return [col, row, r.left + xa._offset + xa.l2p(xa.d2l(col)), r.top + ya._offset + ya.l2p(ya.d2l(row))];
"""


def test_a_state_table_cell_opens_its_step(browser, server, shots):
    """Clicking a cell of the reasoner's state table opens the Attention view at that cell's step,
    and the link says so (``?step=``), so the view can be shared."""
    from selenium.webdriver.common.actions.action_builder import ActionBuilder

    base, tiny = server
    browser.set_window_size(WIDTHS[-1], 1200)
    visit(browser, f"{base}/reasoner?model={urllib.parse.quote(tiny['reasoner'])}", "reasoner state table")
    col, row, x, y = browser.execute_script(CELL_JS)
    click = ActionBuilder(browser)
    click.pointer_action.move_to_location(int(x), int(y))
    click.pointer_action.click()
    click.perform()
    assert _wait_for(lambda: "reasoner_view=Attention" in browser.current_url, PAGE_TIMEOUT_S), \
        f"clicking the cell ({row}, step {col}) did not open the Attention view: {browser.current_url}"
    s = settle(browser, "attention opened from a cell")
    browser.save_screenshot(str(shots / "state_cell_opened.png"))
    assert not s["errors"] and not s["tracebacks"], s["errors"]
    query = urllib.parse.parse_qs(urllib.parse.urlparse(browser.current_url).query)
    assert query.get("step") == [col], browser.current_url
    title = browser.execute_script(
        "return document.querySelector('.st-key-attention .js-plotly-plot')._fullLayout.title.text;")
    assert f"Attention at step {col}," in title, f"the attention shown is not the clicked step's: {title}"


def test_bad_input_shows_a_message_in_the_browser(browser, server, shots):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.wait import WebDriverWait

    base, tiny = server
    browser.set_window_size(WIDTHS[-1], 1200)
    visit(browser, f"{base}/act?model={urllib.parse.quote(tiny['act'])}", "act_tiny")
    box = WebDriverWait(browser, PAGE_TIMEOUT_S, poll_frequency=POLL_S).until(
        ec.element_to_be_clickable((By.CSS_SELECTOR, 'input[aria-label="Input (parity)"]')))
    box.send_keys(Keys.CONTROL, "a")
    box.send_keys("+0x", Keys.ENTER)
    _wait_for(lambda: _state(browser)["errors"], PAGE_TIMEOUT_S)
    browser.save_screenshot(str(shots / "act_malformed.png"))
    s = _state(browser)
    assert any("not an entry" in e for e in s["errors"]), s["errors"]
    assert not s["tracebacks"]
