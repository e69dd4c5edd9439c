"""The page at `/` in Debian's headless Chromium (selenium + chromedriver), against a real uvicorn: a real
recording is uploaded, the caption shown must equal the API's; a long one gets a timeline whose entries seek
the player; a file that is not audio shows the server's message. Screenshots go to the test's tmp folder."""
from __future__ import annotations

import base64
import os
import shutil
from pathlib import Path

import httpx
import pytest

import audiocap
from audiocap.serve.app import create_app
from tests.live_server import LiveServer

CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")
if not (CHROMIUM and CHROMEDRIVER):
    if os.environ.get("CI"):  # .ci/run installs them: a skip there would hide a broken page
        raise RuntimeError("chromium and chromedriver are missing in CI; .ci/run must install them")
    pytest.skip("needs Debian's chromium and chromedriver: apt-get install chromium chromium-driver",
                allow_module_level=True)

from selenium import webdriver  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import Select, WebDriverWait  # noqa: E402

WINDOWS = {"laptop": (1366, 900), "phone": (390, 844)}


@pytest.fixture(scope="module")
def server():
    with LiveServer(create_app(audiocap.load_model(device="cpu"))) as live:
        yield live


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
                 f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=CHROMEDRIVER))
    yield driver
    driver.quit()


def open_page(browser, url: str, window: str) -> None:
    browser.set_window_size(*WINDOWS[window])
    browser.get(url)
    WebDriverWait(browser, 30).until(lambda b: b.find_element(By.ID, "model").text)  # /v1/model answered


def upload(browser, path: Path) -> None:
    browser.execute_script("document.getElementById('result').dataset.state = ''")
    browser.find_element(By.ID, "file").send_keys(str(path))
    WebDriverWait(browser, 180).until(lambda b: b.find_element(By.ID, "result").get_attribute("data-state") == "done"
                                      or b.find_element(By.ID, "error").is_displayed())


def screenshot(browser, path: Path) -> None:
    """The whole page at the window's width, as tall as its content (no scroll bar takes a phone's width)."""
    width, height = browser.execute_script(
        "return [window.innerWidth, document.documentElement.scrollHeight]")
    browser.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                            {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": width < 600})
    try:
        image = browser.execute_cdp_cmd("Page.captureScreenshot", {"format": "png"})
    finally:
        browser.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
    path.write_bytes(base64.b64decode(image["data"]))


def api_caption(url: str, path: Path, **params) -> dict:
    with open(path, "rb") as f:
        return httpx.post(f"{url}/v1/caption", params=params, files={"file": (path.name, f)}, timeout=120).json()


@pytest.mark.parametrize("window", WINDOWS)
def test_the_page_captions_an_uploaded_recording(server, browser, window, shared_data, tmp_path):
    path = sorted((shared_data / "esc50" / "audio").glob("*.flac"))[100]
    open_page(browser, server.url, window)
    upload(browser, path)
    assert not browser.find_element(By.ID, "error").is_displayed(), browser.find_element(By.ID, "error").text
    expected = api_caption(server.url, path)
    assert browser.find_element(By.ID, "caption").text == expected["caption"]
    assert browser.find_element(By.ID, "confidence").text == f"confidence {round(100 * expected['confidence'])} %"
    assert browser.execute_script("return document.getElementById('wave').width") > 0
    screenshot(browser, tmp_path / f"page-{window}.png")


@pytest.mark.parametrize("window", WINDOWS)
def test_the_timeline_of_a_long_recording_seeks_the_player(server, browser, window, shared_data, tmp_path):
    path = shared_data / "clotho" / "audio" / "validation" / "Whistling.wav"  # 16.2 s
    open_page(browser, server.url, window)
    browser.find_element(By.CSS_SELECTOR, "details.options summary").click()
    Select(browser.find_element(By.ID, "segment")).select_by_value("5")
    upload(browser, path)
    expected = api_caption(server.url, path, segment=5)
    entries = browser.find_elements(By.CSS_SELECTOR, "#timeline button")
    assert [e.find_element(By.CLASS_NAME, "text").text for e in entries] == [s["caption"] for s in expected["segments"]]
    assert browser.find_element(By.ID, "caption").text == expected["caption"]
    browser.execute_script("arguments[0].scrollIntoView()", entries[1])
    entries[1].click()
    WebDriverWait(browser, 10).until(lambda b: b.execute_script("return document.getElementById('player').currentTime")
                                     >= expected["segments"][1]["start"])
    assert "active" in entries[1].get_attribute("class")
    browser.execute_script("document.getElementById('player').pause(); window.scrollTo(0, 0)")
    screenshot(browser, tmp_path / f"timeline-{window}.png")


def test_a_file_that_is_not_audio_shows_the_servers_message(server, browser, tmp_path):
    notes = tmp_path / "notes.wav"
    notes.write_text("shopping list: milk, eggs\n" * 40)
    open_page(browser, server.url, "laptop")
    upload(browser, notes)
    error = browser.find_element(By.ID, "error")
    assert error.is_displayed() and error.text.startswith("'notes.wav': cannot decode audio")
    assert not browser.find_element(By.ID, "result").is_displayed()
    screenshot(browser, tmp_path / "error.png")
