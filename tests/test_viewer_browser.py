"""The viewer page of `m3fm serve` in a real browser: headless Chromium, driven by Selenium,
uploads a CT slice to a live server with the bundled model and must show what ``POST /v1/run``
answers for the same file.

Needs ``chromium`` and ``chromedriver`` on PATH (Debian: ``apt-get install chromium
chromium-driver``; ``.ci/run`` installs them) and the ``selenium`` package; skips otherwise.
Set ``M3FM_VIEWER_SCREENSHOT=path.png`` to keep a screenshot of the page after the upload
(docs/serving-viewer.png is made that way).
"""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
import tomllib
from collections.abc import Iterator
from fnmatch import fnmatch
from pathlib import Path

import pytest
from conftest import REPO

STATIC = REPO / "core" / "serving" / "static"
BROWSER = next((shutil.which(name) for name in ("chromium", "chromium-browser", "google-chrome")
                if shutil.which(name)), None)
DRIVER = shutil.which("chromedriver")
WAIT_S = 300  # a report on a busy 2-core CPU machine


def test_static_files_ship_in_the_package():
    """Every file of the page matches the package-data globs of m3fm.serving."""
    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert "m3fm.serving" in config["packages"]
    globs = config["package-data"]["m3fm.serving"]
    files = [p.relative_to(STATIC.parent).as_posix() for p in STATIC.rglob("*") if p.is_file()]
    assert {"static/index.html", "static/viewer.js", "static/viewer.css"} <= set(files)
    assert all(any(fnmatch(name, glob) for glob in globs) for name in files), (files, globs)


def test_page_loads_nothing_from_outside():
    """The page works offline: no http(s) URL in its HTML, script or style sheet."""
    for name in ("index.html", "viewer.js", "viewer.css"):
        text = (STATIC / name).read_text()
        for outside in ("http://", "https://", '="//', "url(//", "@import"):
            assert outside not in text, (name, outside)


# --- the browser test ------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    """The base URL of `m3fm serve`'s app with the bundled model, run by uvicorn in a thread."""
    pytest.importorskip("fastapi", reason="fastapi is not installed")
    uvicorn = pytest.importorskip("uvicorn", reason="uvicorn is not installed")
    httpx = pytest.importorskip("httpx", reason="httpx is not installed")
    from m3fm.serving.app import create_app

    port = _free_port()
    config = uvicorn.Config(create_app(), host="127.0.0.1", port=port, log_level="warning")
    service = uvicorn.Server(config)
    thread = threading.Thread(target=service.run, name="viewer-test-server", daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + WAIT_S
    while True:  # the model loads before the server answers
        try:
            if httpx.get(url + "healthz", timeout=5).status_code == 200:
                break
        except httpx.TransportError:
            pass
        if not thread.is_alive() or time.monotonic() > deadline:
            pytest.fail("the m3fm service did not start")
        time.sleep(0.2)
    yield url
    service.should_exit = True
    thread.join(timeout=60)


@pytest.fixture(scope="module")
def browser():
    """Headless Chromium showing pages at a laptop's 1200 x 900."""
    if BROWSER is None or DRIVER is None:
        pytest.skip("chromium and chromedriver are not installed "
                    "(Debian: apt-get install chromium chromium-driver)")
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed")
    options = webdriver.ChromeOptions()
    options.binary_location = BROWSER
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                     "--disable-gpu", "--window-size=1200,900", "--lang=en-US"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(DRIVER))
    driver.set_page_load_timeout(60)
    inner = driver.execute_script("return [window.innerWidth, window.innerHeight];")
    driver.set_window_size(2 * 1200 - inner[0], 2 * 900 - inner[1])  # the page gets 1200 x 900
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def ct_slice(tmp_path_factory) -> Path:
    """A real COV-CTR slice when the data are here, else a synthetic chest-CT-like PNG."""
    images = Path(os.environ.get("M3FM_DATA", REPO.parent / "shared" / "data")) / "cov-ctr"
    real = sorted((images / "images").glob("*.[jp][pn]g")) if images.is_dir() else []
    if real:
        return real[0]
    import numpy as np
    from PIL import Image

    y, x = np.mgrid[-1:1:256j, -1:1:256j]
    body = (x / 0.9) ** 2 + (y / 0.7) ** 2 < 1
    lungs = ((np.abs(x) - 0.4) / 0.28) ** 2 + (y / 0.45) ** 2 < 1
    pixels = np.where(body, 170, 10) - np.where(lungs & body, 140, 0)
    path = tmp_path_factory.mktemp("ct") / "slice.png"
    Image.fromarray(pixels.astype(np.uint8)).save(path)
    return path


def _post_run(url: str, path: Path, **form: str) -> tuple[int, dict]:
    import httpx

    with path.open("rb") as file:
        response = httpx.post(url + "v1/run", files={"file": (path.name, file)},
                              data={"plugin": "ct", "lang": "en", **form}, timeout=WAIT_S)
    return response.status_code, response.json()


def _upload(driver, url: str, path: Path, plugin: str = "ct", lang: str = "en") -> str:
    """Open the page, choose `path`, `plugin` and `lang`, press Run; the final state."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    driver.get(url)
    WebDriverWait(driver, 30).until(lambda d: d.find_elements(
        By.CSS_SELECTOR, f"#plugin option[value='{plugin}']"))
    Select(driver.find_element(By.ID, "plugin")).select_by_value(plugin)
    Select(driver.find_element(By.ID, "lang")).select_by_value(lang)
    driver.find_element(By.ID, "file").send_keys(str(path))
    driver.find_element(By.ID, "submit").click()
    status = driver.find_element(By.ID, "status")
    WebDriverWait(driver, WAIT_S).until(
        lambda d: status.get_attribute("data-state") in ("done", "error"))
    return status.get_attribute("data-state")


@pytest.mark.slow
def test_viewer_shows_what_the_api_answers(browser, server, ct_slice):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    state = _upload(browser, server, ct_slice)
    error = browser.find_element(By.ID, "error")
    assert state == "done", error.text
    assert not error.is_displayed()

    # the preview arrived and decoded as an image
    WebDriverWait(browser, 30).until(lambda d: d.execute_script(
        "const img = document.getElementById('preview');"
        "return !img.hidden && img.complete && img.naturalWidth > 0;"))

    shown_report = browser.find_element(By.ID, "report").text
    rows = browser.find_elements(By.CSS_SELECTOR, "#diagnosis .label-row")
    assert shown_report.strip() and rows

    status, expected = _post_run(server, ct_slice)
    assert status == 200, expected
    assert shown_report == expected["report"]
    shown = {row.get_attribute("data-label"): float(row.get_attribute("data-probability"))
             for row in rows}
    assert shown == pytest.approx(expected["diagnosis"], abs=1e-9)
    for row in rows:
        label = row.get_attribute("data-label")
        probability = expected["diagnosis"][label]
        value = row.find_element(By.CSS_SELECTOR, ".label-value").text
        assert float(value.rstrip("%")) == pytest.approx(100 * probability, abs=0.051)
        lang = row.find_element(By.CSS_SELECTOR, ".prompt-lang").get_attribute("data-lang")
        assert lang == expected["prompt_languages"][label]
        marked = bool(row.find_elements(By.CSS_SELECTOR, ".unvalidated-badge"))
        assert marked == (label in expected["unvalidated"])
        width = browser.execute_script(
            "const r = arguments[0]; return r.querySelector('.bar-fill').offsetWidth"
            " / r.querySelector('.bar').clientWidth;", row)
        assert width == pytest.approx(probability, abs=0.02)  # the bar is as long as it says

    severe = [entry for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]
    assert not severe, severe  # no script error, no failed request
    if screenshot := os.environ.get("M3FM_VIEWER_SCREENSHOT"):
        browser.save_screenshot(screenshot)


@pytest.mark.slow
def test_viewer_shows_the_servers_error(browser, server, tmp_path):
    from selenium.webdriver.common.by import By

    broken = tmp_path / "broken.png"
    broken.write_bytes(b"this is not a PNG image")
    state = _upload(browser, server, broken)
    assert state == "error"
    error = browser.find_element(By.ID, "error")
    assert error.is_displayed()
    status, expected = _post_run(server, broken)
    assert 400 <= status < 500 and expected["error"]
    assert expected["error"] in error.text.splitlines()
    assert not browser.find_elements(By.CSS_SELECTOR, "#diagnosis .label-row")
    assert not browser.find_element(By.ID, "report").text
