"""The report in a real browser (headless Chromium through selenium and the system chromedriver).

Opens the demo's report when ``EMBPLAN_DEMO_REPORT`` names it (``.ci/run`` does, after ``embplan demo``), else a
report rendered from the hand-built test plan. Checks: no console errors; the slice viewer loads, a wheel scroll
changes the slice and the picture; the dose under the cursor is the plan's dose at that voxel; page one holds the
required elements and fits one A4 page in print. Saves screenshots under ``ci-artifacts/`` (or
``EMBPLAN_ARTIFACTS``).

Skips with a reason when no browser is installed; ``EMBPLAN_REQUIRE_BROWSER=1`` (set by ``.ci/run``) turns the skip
into a failure.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

from embplan import report
from tests.plan_factory import build_plan

_CHROMIUM = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
_ROOT = Path(__file__).resolve().parents[1]
#: print area of an A4 page with the report's 10 mm margins, in CSS px (96 per inch)
A4_PRINT_WIDTH_PX = round((210 - 20) / 25.4 * 96)
A4_PRINT_HEIGHT_PX = round((297 - 20) / 25.4 * 96)
#: a laptop browser viewport (CSS px): 1366 x 768 or 1440 x 900 screens less the browser's own bars
LAPTOP_VIEWPORT_PX = (1366, 800)


def _unavailable(reason: str):
    if os.environ.get("EMBPLAN_REQUIRE_BROWSER") == "1":
        pytest.fail(f"EMBPLAN_REQUIRE_BROWSER=1 but {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def driver():
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.options import Options
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        _unavailable("selenium is not installed (pip install -e '.[test]')")
    binary = next((shutil.which(b) for b in _CHROMIUM if shutil.which(b)), None)
    chromedriver = shutil.which("chromedriver")
    if binary is None or chromedriver is None:
        _unavailable("no headless browser: install chromium and chromium-driver (Debian: apt-get install -y "
                     "chromium chromium-driver)")
    opts = Options()
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1366,900", "--allow-file-access-from-files"):
        opts.add_argument(arg)
    opts.binary_location = binary
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    try:
        drv = webdriver.Chrome(service=Service(chromedriver), options=opts)
    except Exception as exc:  # noqa: BLE001 - any start failure is "no usable browser"
        _unavailable(f"the browser does not start: {str(exc).splitlines()[0]}")
    yield drv
    drv.quit()


def fullest_plan():
    """The hand-built plan with voxel data, a board review as long as a real one (embplan's own demo review: long
    reasons, ten data gaps, eleven options) and a flag with a long citation: page one at its fullest."""
    from tests.test_report import _board

    # the hand-built plan with a board review, flags and voxel data: page one at its fullest
    plan = build_plan(shape=(24, 20, 18))
    long = plan.flags[0].model_copy(update={"evidence": "A long citation list; " * 30})  # must not widen the page
    board = _board()
    # a board as long as a real one (embplan's own demo review): long reasons, ten data gaps
    steps = [st.model_copy(update={"reason": st.reason + "; " + "the lobe's ladder step and its evidence " * 6})
             for st in board.recommendation.steps]
    rec = board.recommendation.model_copy(update={"steps": steps})
    gaps = [f"Criterion {i}: a datum not given (disease.field_{i}), which would settle it" for i in range(10)]
    titles = ["Curative (R0) resection of the liver metastases", "Repeat resection for liver-only recurrence",
              "Cytoreductive debulking (surgery, with ablation)", "Liver transplant: Milan-NET criteria",
              "Liver transplant: ENETS 2016 criteria", "Liver transplant: OPTN/UNOS MELD-exception criteria",
              "Thermal ablation (microwave, radiofrequency or cryoablation)", "Resection combined with ablation",
              "Systemic therapy: SSA, PRRT (177Lu-DOTATATE), targeted or chemotherapy"]
    statuses = ["not_eligible"] * 4 + ["needs_data"] * 4 + ["possible"]
    from embplan.board.model import OptionStatus

    options = [board.options[0].model_copy(update={"key": f"o{i}", "title": t, "status": OptionStatus(st)})
               for i, (t, st) in enumerate(zip(titles, statuses, strict=True))]
    board = board.model_copy(update={"recommendation": rec, "data_gaps": gaps, "options": options})
    plan = plan.model_copy(update={"board": board, "flags": [long, *plan.flags[1:]]})
    return plan


@pytest.fixture(scope="module")
def report_path(tmp_path_factory) -> Path:
    given = os.environ.get("EMBPLAN_DEMO_REPORT")
    if given:
        path = Path(given)
        assert path.is_file(), f"EMBPLAN_DEMO_REPORT={given} does not exist"
        return path
    path = tmp_path_factory.mktemp("browser") / "report.html"
    report.write_report(fullest_plan(), path)
    return path


class _Artifacts:
    """Screenshot paths: ``<folder>/<demo|test-plan>-<name>.png`` (the demo's report or the hand-built plan's)."""

    def __init__(self, folder: Path, prefix: str) -> None:
        self.folder, self.prefix = folder, prefix

    def __truediv__(self, name: str) -> Path:
        return self.folder / f"{self.prefix}-{name}"


@pytest.fixture(scope="module")
def artifacts() -> _Artifacts:
    folder = Path(os.environ.get("EMBPLAN_ARTIFACTS", _ROOT / "ci-artifacts"))
    folder.mkdir(parents=True, exist_ok=True)
    return _Artifacts(folder, "demo" if os.environ.get("EMBPLAN_DEMO_REPORT") else "test-plan")


@pytest.fixture(scope="module")
def page(driver, report_path):
    driver.set_window_size(1366, 900)
    driver.get(report_path.resolve().as_uri())
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if driver.execute_script("var v = document.getElementById('viewer'); return v && v.dataset.ready"):
            break
        time.sleep(0.1)
    return driver


def test_no_console_errors_and_viewer_ready(page, artifacts):
    logs = page.get_log("browser")
    errors = [entry for entry in logs if entry["level"] in ("SEVERE", "ERROR")]
    assert errors == [], errors
    assert page.execute_script("return document.getElementById('viewer').dataset.ready") == "1"
    page.execute_script("window.scrollTo(0, 0)")
    page.save_screenshot(str(artifacts / "report-page-one.png"))


def test_page_one_holds_the_answer(page):
    from selenium.webdriver.common.by import By

    one = page.find_element(By.ID, "page-one")
    text = one.text
    assert "highest severity" in text.lower()
    assert re.search(r"Prescribed\s+\d+\.\d\d GBq", text), text
    rows = one.find_elements(By.CSS_SELECTOR, "tr.key-dose")
    assert len(rows) >= 4
    for row in rows:
        assert row.get_attribute("data-status") in ("pass", "fail", "na")
        assert re.fullmatch(r"(\d+\.\d|–|< 0\.1)", row.find_element(By.CSS_SELECTOR, ".dose-value").text)
    assert "Board recommendation".upper() in text.upper()
    assert "FLAGS" in text.upper()
    for field in ("Prepared by", "Checked by", "Research software, not a medical device"):
        assert field in text
    # one laptop screen (a 1366 x 800 CSS-pixel viewport): page one is on screen without scrolling
    rect = page.execute_script("return document.getElementById('page-one').getBoundingClientRect().toJSON()")
    assert rect["bottom"] <= LAPTOP_VIEWPORT_PX[1] and rect["right"] <= LAPTOP_VIEWPORT_PX[0], rect
    assert page.execute_script("return document.documentElement.scrollWidth <= window.innerWidth")  # no sideways


def test_page_one_fits_one_printed_a4_page(page, artifacts):
    page.execute_cdp_cmd("Emulation.setEmulatedMedia", {"media": "print"})
    try:
        inner = page.execute_script("return window.innerWidth - document.documentElement.clientWidth")
        page.set_window_size(A4_PRINT_WIDTH_PX + inner, A4_PRINT_HEIGHT_PX)
        time.sleep(0.2)
        width = page.execute_script("return document.documentElement.clientWidth")
        rect = page.execute_script("return document.getElementById('page-one').getBoundingClientRect().toJSON()")
        assert abs(width - A4_PRINT_WIDTH_PX) <= 20
        assert rect["height"] <= A4_PRINT_HEIGHT_PX, rect
        after = page.execute_script(
            "return getComputedStyle(document.getElementById('page-one')).breakAfter")
        assert after == "page"
        page.execute_script("window.scrollTo(0, 0)")
        page.save_screenshot(str(artifacts / "report-page-one-print.png"))
    finally:
        page.execute_cdp_cmd("Emulation.setEmulatedMedia", {"media": ""})
        page.set_window_size(1366, 900)


def test_viewer_scroll_changes_the_slice(page, artifacts):
    from selenium.webdriver.common.by import By

    canvas = page.find_element(By.CSS_SELECTOR, "canvas[data-view='axial']")
    page.execute_script("arguments[0].scrollIntoView({block: 'center'})", canvas)
    before = canvas.get_attribute("data-slice")
    pixels_before = page.execute_script("return arguments[0].toDataURL()", canvas)
    n = int(page.find_element(By.CSS_SELECTOR, ".view-axial .v-slider").get_attribute("max")) + 1
    direction = 1 if int(before) < n - 1 else -1
    for _ in range(3):
        page.execute_script(
            "arguments[0].dispatchEvent(new WheelEvent('wheel', {deltaY: arguments[1], bubbles: true, "
            "cancelable: true}))", canvas, 100 * direction)
    after = canvas.get_attribute("data-slice")
    assert int(after) == int(before) + 3 * direction or int(after) in (0, n - 1)
    assert after != before
    assert page.execute_script("return arguments[0].toDataURL()", canvas) != pixels_before
    assert page.find_element(By.CSS_SELECTOR, ".view-axial .view-title").text.startswith(f"Axial {int(after) + 1} /")
    page.save_screenshot(str(artifacts / "report-viewer.png"))


def test_dose_under_the_cursor_is_the_plans(page, report_path):
    """Hover the dose maximum's slice centre; the read-out's voxel and dose match the embedded map decoded in
    Python (an independent decoder: zlib, numpy)."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    from tests.test_report import _decode_viewer

    decoded = _decode_viewer(report_path.read_text(encoding="utf-8"))
    canvas = page.find_element(By.CSS_SELECTOR, "canvas[data-view='axial']")
    page.execute_script("arguments[0].scrollIntoView({block: 'center'})", canvas)
    ActionChains(page).move_to_element_with_offset(canvas, 3, 2).perform()
    readout = page.find_element(By.CSS_SELECTOR, ".viewer-readout")
    m = re.search(r"voxel \(x (\d+), y (\d+), z (\d+)\)", readout.text)
    assert m, readout.text
    x, y, z = (int(g) for g in m.groups())
    assert z == int(canvas.get_attribute("data-slice"))
    expected = decoded["dose"][z, y, x]
    shown = float(readout.get_attribute("data-dose-gy"))
    assert shown == pytest.approx(expected, abs=1e-9)
    assert np.isfinite(shown)


@pytest.mark.parametrize("example", ["tare_lobar_resin.json", "tace_after_whipple.json", "deb_tace.json",
                                     "tae_first_line.json"])
def test_page_one_of_every_example_fits(driver, shared_examples, tmp_path, example):
    """The users' own case files (../shared/examples, no images: planned in a second): page one fits one laptop
    screen and one A4 page, without console errors and without sideways scrolling."""
    import embplan

    path = tmp_path / "report.html"
    report.write_report(embplan.plan(embplan.load_case(shared_examples / example)), path)
    driver.set_window_size(*LAPTOP_VIEWPORT_PX)
    driver.get(path.resolve().as_uri())
    errors = [e for e in driver.get_log("browser") if e["level"] in ("SEVERE", "ERROR")]
    assert errors == []
    rect = driver.execute_script("return document.getElementById('page-one').getBoundingClientRect().toJSON()")
    assert rect["bottom"] <= LAPTOP_VIEWPORT_PX[1], (example, rect)
    assert driver.execute_script("return document.documentElement.scrollWidth <= window.innerWidth")
    driver.execute_cdp_cmd("Emulation.setEmulatedMedia", {"media": "print"})
    try:
        inner = driver.execute_script("return window.innerWidth - document.documentElement.clientWidth")
        driver.set_window_size(A4_PRINT_WIDTH_PX + inner, A4_PRINT_HEIGHT_PX)
        rect = driver.execute_script("return document.getElementById('page-one').getBoundingClientRect().toJSON()")
        assert rect["height"] <= A4_PRINT_HEIGHT_PX, (example, rect)
    finally:
        driver.execute_cdp_cmd("Emulation.setEmulatedMedia", {"media": ""})
        driver.set_window_size(1366, 900)
