"""The report in a real headless Chromium, opened from file:// as an annotator would."""

from __future__ import annotations

import csv
import io
import os
import time
from pathlib import Path

import pytest

from maskaudit.report import ReportInput, SampleRow, render_report
from test_report import make_report, make_visuals, slice_report, slice_visuals

pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
XSS_ID = '<img src=x onerror="window.__xss=1">'
IDS = [XSS_ID, "case 02 é", 'quote " and, comma', "slash/in/id"]
PAGE_SIZE = 20

if not os.path.exists(CHROMIUM):
    pytest.fail(f"{CHROMIUM} is not installed: run `make browser` (apt-get install chromium chromium-driver)", pytrace=False)

from selenium import webdriver
from selenium.webdriver.chrome.options import Options  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.action_chains import ActionChains  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.support.ui import Select, WebDriverWait  # noqa: E402


@pytest.fixture(scope="module")
def scores(tmp_path_factory):
    """Render a 30-row report once; return (rows as a scores-like list, report.html path, download dir)."""
    base = tmp_path_factory.mktemp("browser")
    rep = make_report(n=30, ids=IDS, root=str(base / "dataset <root>"), threshold=0.45)
    rows = list(rep.rows)
    rows[5] = SampleRow(**{**rows[5].__dict__, "issue_type": "missing", "issue_classes": ("lung",)})
    rep = ReportInput(**{**rep.__dict__, "rows": tuple(rows)})
    index = {r.id: i for i, r in enumerate(rep.rows)}
    path = render_report(rep, lambda sid: make_visuals(index[sid], h=60, w=80), base / "out", page_size=PAGE_SIZE)
    table = [{"rank": r.rank, "id": r.id, "suspect": r.suspect, "issue_type": r.issue_type,
              "issue_classes": r.issue_classes, "quality_score": r.quality_score} for r in rep.rows]
    downloads = base / "downloads"
    downloads.mkdir()
    return table, path, downloads


@pytest.fixture(scope="module")
def driver(scores, tmp_path_factory):
    _, _, downloads = scores
    options = Options()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--no-first-run", "--window-size=1440,1000",
                f"--user-data-dir={tmp_path_factory.mktemp('chrome-profile')}"):
        options.add_argument(arg)
    options.add_experimental_option("prefs", {"download.default_directory": str(downloads),
                                              "download.prompt_for_download": False})
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    drv = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    drv.execute_cdp_cmd("Page.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)})
    drv.set_script_timeout(20)
    yield drv
    drv.quit()


def open_report(driver, path: Path, view: str = "samples") -> None:
    driver.get("about:blank")  # a fresh load, not a hash change of the open page
    driver.get(path.as_uri() + "#" + view)
    WebDriverWait(driver, 10).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#rows li.row"))


def visible_ids(driver) -> list[str]:
    return [li.find_element(By.CSS_SELECTOR, ".sid").text for li in driver.find_elements(By.CSS_SELECTOR, "#rows li.row")]


def severe_logs(driver) -> list[dict]:
    return [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]


def test_opens_from_disk_without_errors_and_lists_rows_in_rank_order(driver, scores):
    table, path, _ = scores
    open_report(driver, path)
    assert visible_ids(driver) == [r["id"] for r in table[:PAGE_SIZE]]
    assert driver.find_element(By.ID, "match-count").text == "30 samples"
    driver.find_element(By.ID, "next-page-top").click()
    assert visible_ids(driver) == [r["id"] for r in table[PAGE_SIZE:]]
    assert "Page 2 of 2" in driver.find_element(By.ID, "page-info").text
    assert severe_logs(driver) == []


def test_every_image_decodes(driver, scores):
    _, path, _ = scores
    open_report(driver, path)
    failed = driver.execute_async_script("""
        const done = arguments[arguments.length - 1];
        const data = JSON.parse(document.getElementById('maskaudit-data').textContent);
        const srcs = new Set();
        data.rows.forEach(r => ['thumb', 'diff', 'full', 'given', 'pred'].forEach(k => { if (r[k]) srcs.add(r[k]); }));
        document.querySelectorAll('img[src]').forEach(img => srcs.add(img.getAttribute('src')));
        Promise.all(Array.from(srcs).map(src => new Promise(resolve => {
            const im = new Image();
            im.onload = () => resolve(im.naturalWidth > 0 ? null : src);
            im.onerror = () => resolve(src);
            im.src = src;
        }))).then(bad => done({n: srcs.size, bad: bad.filter(Boolean)}));
    """)
    assert failed["n"] == 30 * 5 and failed["bad"] == []
    lazy = driver.execute_script("return Array.from(document.querySelectorAll('#rows img')).map(i => i.loading)")
    assert lazy and set(lazy) == {"lazy"}
    # images in view have actually been decoded by the page itself
    driver.execute_script("window.scrollTo(0, 0)")
    WebDriverWait(driver, 10).until(lambda d: d.execute_script(
        "const i = document.querySelector('#rows img'); return i.complete && i.naturalWidth > 0"))


def test_filters_change_the_visible_rows(driver, scores):
    table, path, _ = scores
    open_report(driver, path)
    driver.find_element(By.ID, "f-suspect").click()
    assert visible_ids(driver) == [r["id"] for r in table if r["suspect"]][:PAGE_SIZE]
    driver.find_element(By.ID, "f-suspect").click()

    Select(driver.find_element(By.ID, "f-issue")).select_by_value("missing")
    expected = [r["id"] for r in table if r["issue_type"] == "missing"]
    assert len(expected) >= 1 and visible_ids(driver) == expected
    Select(driver.find_element(By.ID, "f-issue")).select_by_value("")

    Select(driver.find_element(By.ID, "f-class")).select_by_value("lung")
    expected = [r["id"] for r in table if "lung" in r["issue_classes"]]
    assert len(expected) < len(table) and visible_ids(driver) == expected[:PAGE_SIZE]
    Select(driver.find_element(By.ID, "f-class")).select_by_value("")

    Select(driver.find_element(By.ID, "f-sort")).select_by_value("score-desc")
    by_score = sorted(table, key=lambda r: (-r["quality_score"], r["rank"]))
    assert visible_ids(driver) == [r["id"] for r in by_score[:PAGE_SIZE]]
    assert severe_logs(driver) == []


def test_triage_downloads_csv_and_survives_reload(driver, scores):
    table, path, downloads = scores
    open_report(driver, path)
    driver.execute_script("localStorage.clear()")
    open_report(driver, path)
    target = table[1]["id"]
    row = driver.find_element(By.CSS_SELECTOR, '#rows li.row[data-i="1"]')
    row.find_element(By.CSS_SELECTOR, "[data-role=relabel]").click()
    note = 'left lung cut off, "see apex"'
    row.find_element(By.CSS_SELECTOR, "[data-role=note]").send_keys(note)
    # keyboard: leave the note (Esc), move to the next row (j) and mark it ok (o)
    ActionChains(driver).send_keys(Keys.ESCAPE).send_keys("jo").perform()
    third = driver.find_element(By.CSS_SELECTOR, '#rows li.row[data-i="2"]')
    assert "on" in third.find_element(By.CSS_SELECTOR, "[data-role=ok]").get_attribute("class")
    assert "2 decided" in driver.find_element(By.ID, "decided-count").text

    for f in downloads.iterdir():
        f.unlink()
    driver.find_element(By.ID, "download").click()
    deadline = time.time() + 10
    files: list[Path] = []
    while time.time() < deadline:
        files = [f for f in downloads.iterdir() if f.suffix == ".csv"]
        if files and files[0].stat().st_size > 0:
            break
        time.sleep(0.2)
    assert len(files) == 1 and files[0].name.startswith("maskaudit-decisions-")
    rows = list(csv.reader(io.StringIO(files[0].read_text(encoding="utf-8"), newline="")))
    assert rows[0] == ["id", "decision", "note"]
    assert rows[1:] == [[target, "relabel", note], [table[2]["id"], "ok", ""]]

    driver.refresh()
    WebDriverWait(driver, 10).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#rows li.row"))
    row = driver.find_element(By.CSS_SELECTOR, '#rows li.row[data-i="1"]')
    assert "on" in row.find_element(By.CSS_SELECTOR, "[data-role=relabel]").get_attribute("class")
    assert row.find_element(By.CSS_SELECTOR, "[data-role=note]").get_attribute("value") == note
    assert "2 decided" in driver.find_element(By.ID, "decided-count").text
    assert severe_logs(driver) == []


def test_detail_view_and_cluster_map(driver, scores):
    table, path, _ = scores
    open_report(driver, path)
    driver.find_element(By.CSS_SELECTOR, '#rows li.row[data-i="0"] .sid').click()
    modal = driver.find_element(By.ID, "detail")
    assert modal.is_displayed()
    assert driver.find_element(By.ID, "d-title").text == table[0]["id"]
    WebDriverWait(driver, 10).until(lambda d: d.execute_script(
        "return ['d-img-given','d-ov-given','d-img-pred','d-ov-pred'].every("
        "id => { const i = document.getElementById(id); return i.complete && i.naturalWidth > 0; })"))
    slider = driver.find_element(By.ID, "d-opacity")
    driver.execute_script("arguments[0].value = 30; arguments[0].dispatchEvent(new Event('input'))", slider)
    assert driver.find_element(By.ID, "d-ov-given").value_of_css_property("opacity") == "0.3"
    paths = driver.find_element(By.ID, "d-paths").text
    assert "images/" + table[0]["id"] + ".png" in paths and "dataset <root>" in paths
    assert len(driver.find_elements(By.CSS_SELECTOR, "#d-dice tr")) == 2
    ActionChains(driver).send_keys("j").perform()
    assert driver.find_element(By.ID, "d-title").text == table[1]["id"]
    ActionChains(driver).send_keys(Keys.ESCAPE).perform()
    assert not modal.is_displayed()

    driver.find_element(By.CSS_SELECTOR, 'a[data-tab="map"]').click()
    point = driver.find_element(By.CSS_SELECTOR, '#scatter circle[data-i="3"]')
    driver.execute_script("arguments[0].dispatchEvent(new MouseEvent('click', {bubbles: true}))", point)
    assert modal.is_displayed()
    assert driver.find_element(By.ID, "d-title").text == table[3]["id"]
    driver.find_element(By.ID, "d-close").click()
    assert severe_logs(driver) == []


@pytest.fixture(scope="module")
def volume_report(tmp_path_factory):
    """A volume run's report: cases case_a and case_b step through 3 flagged slices (4, 6, 8; 8 the worst)."""
    rep = slice_report(6)
    return render_report(rep, slice_visuals(rep, []), tmp_path_factory.mktemp("volumes") / "out")


def slice_state(driver) -> tuple[str, str, bool, bool]:
    return (driver.find_element(By.ID, "d-slice-info").text, driver.find_element(By.ID, "d-img-given").get_attribute("src"),
            driver.find_element(By.ID, "d-slice-prev").is_enabled(), driver.find_element(By.ID, "d-slice-next").is_enabled())


def test_the_detail_view_steps_through_a_cases_flagged_slices(driver, volume_report):
    open_report(driver, volume_report)
    driver.find_element(By.CSS_SELECTOR, '#rows li.row[data-i="0"] .sid').click()
    assert driver.find_element(By.ID, "d-slices").is_displayed()
    info, worst_src, has_prev, has_next = slice_state(driver)
    assert info == "slice 8 · flagged slice 3 of 3" and has_prev and not has_next  # opens on the worst slice
    assert "slice score 0.100" in driver.find_element(By.ID, "d-slice-scores").text
    ActionChains(driver).send_keys(Keys.ARROW_LEFT).perform()
    info, src, has_prev, has_next = slice_state(driver)
    assert info == "slice 6 · flagged slice 2 of 3" and src != worst_src and has_prev and has_next
    WebDriverWait(driver, 10).until(lambda d: d.execute_script(
        "const i = document.getElementById('d-img-given'); return i.complete && i.naturalHeight === 26"))
    driver.find_element(By.ID, "d-slice-prev").click()
    assert slice_state(driver)[0] == "slice 4 · flagged slice 1 of 3" and not slice_state(driver)[2]
    ActionChains(driver).send_keys(Keys.ARROW_LEFT).perform()  # nothing before the first
    assert slice_state(driver)[0] == "slice 4 · flagged slice 1 of 3"
    driver.find_element(By.ID, "d-slice-next").click()
    assert slice_state(driver)[0] == "slice 6 · flagged slice 2 of 3"
    ActionChains(driver).send_keys("j").perform()  # the next case opens on its own worst slice
    assert driver.find_element(By.ID, "d-title").text == "case_b"
    assert slice_state(driver)[0] == "slice 8 · flagged slice 3 of 3"
    ActionChains(driver).send_keys("j").perform()  # a case without flagged slices shows its one picture
    assert not driver.find_element(By.ID, "d-slices").is_displayed()
    assert driver.find_element(By.ID, "d-figures").is_displayed()
    ActionChains(driver).send_keys(Keys.ESCAPE).perform()
    assert severe_logs(driver) == []


def test_html_in_ids_is_text_and_never_runs(driver, scores):
    table, path, _ = scores
    open_report(driver, path)
    assert visible_ids(driver)[0] == XSS_ID
    driver.find_element(By.CSS_SELECTOR, '#rows li.row[data-i="0"] .sid').click()
    assert driver.find_element(By.ID, "d-title").text == XSS_ID
    driver.find_element(By.ID, "d-close").click()
    for view in ("summary", "map"):
        driver.find_element(By.CSS_SELECTOR, f'a[data-tab="{view}"]').click()
    assert driver.execute_script("return typeof window.__xss") == "undefined"
    assert driver.execute_script("return document.querySelectorAll('img[src=\"x\"]').length") == 0


def test_screenshot(driver, scores):
    _, path, _ = scores
    open_report(driver, path)
    time.sleep(0.3)
    assert driver.save_screenshot("/tmp/report_screenshot.png")
