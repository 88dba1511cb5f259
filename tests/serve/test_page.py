"""The page `GET /` in a real headless browser (Debian's Chromium through Selenium): an image chosen in the
file input comes back as bars whose classes and probabilities are the server's answer, with the Grad-CAM
overlay; a file that is not an image shows the server's one-line reason."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.serve.conftest import Server

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-proxy-server",  # loopback only
    "--window-size=1100,900",
]


def browser(profile: Path) -> Any:
    """Headless Chromium driven by chromedriver, with a fresh profile; skips where none is installed."""
    if CHROMIUM is None or DRIVER is None:
        pytest.skip(
            "no headless browser: the page test needs Debian's chromium and chromium-driver "
            "(`make install` installs them where it runs as root; else `sudo apt-get install chromium "
            "chromium-driver`)"
        )
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (dev extra)")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in [*FLAGS, f"--user-data-dir={profile}"]:
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(DRIVER), options=options)


@pytest.fixture
def page(tmp_path: Path) -> Iterator[Any]:
    driver = browser(tmp_path / "profile")
    try:
        yield driver
    finally:
        driver.quit()


def _upload(page: Any, server: Server, path: Path) -> str:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    page.get(server.url + "/")
    WebDriverWait(page, 30).until(lambda d: "sha256" in d.find_element(By.ID, "model").text)
    page.execute_script("document.body.dataset.state = ''")
    page.find_element(By.ID, "file").send_keys(str(path))
    WebDriverWait(page, 60).until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-state"))
    return str(page.find_element(By.TAG_NAME, "body").get_attribute("data-state"))


def test_page_shows_the_servers_classes_as_bars_and_the_overlay(page: Any, server: Server, images):
    from selenium.webdriver.common.by import By

    path = images["big.jpg"]
    assert _upload(page, server, path) == "done", page.find_element(By.ID, "error").text
    status, answer = server.predict(path.read_bytes(), explain=True)
    assert status == 200
    bars = page.find_elements(By.CSS_SELECTOR, "#bars .bar")
    shown = [(bar.get_attribute("data-class"), float(bar.get_attribute("data-prob"))) for bar in bars]
    assert shown == list(answer["probs"].items())  # every class (3 < 10 shown), most probable first
    for bar, prob in zip(bars, answer["probs"].values(), strict=True):
        assert bar.find_element(By.CLASS_NAME, "prob").text == f"{100 * prob:.1f} %"  # what a user reads
        track = bar.find_element(By.CLASS_NAME, "track").size["width"]
        fill = bar.find_element(By.CLASS_NAME, "fill").size["width"]
        assert fill == pytest.approx(track * prob, abs=2)  # the bar's length is the probability
    assert answer["top1"] in page.find_element(By.ID, "top1").text
    overlay = page.find_element(By.ID, "overlay").get_attribute("src")
    assert overlay == f"data:image/png;base64,{answer['gradcam_png']}"
    info = json.loads(server.request("/info")[1])["model"]
    assert info["sha256"][:12] in page.find_element(By.ID, "model").text


def test_page_shows_the_reason_for_a_file_that_is_not_an_image(page: Any, server: Server, tmp_path):
    from selenium.webdriver.common.by import By

    notes = tmp_path / "notes.png"
    notes.write_text("not an image")
    assert _upload(page, server, notes) == "error"
    assert page.find_element(By.ID, "error").text.startswith("400: the body is not an image")
    assert page.find_elements(By.CSS_SELECTOR, "#bars .bar") == []
    assert server.healthy()
