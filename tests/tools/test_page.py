"""The drawing page in a real browser: headless Chromium, driven by Selenium, draws a digit on the canvas.

Set ``SERVE_PAGE_SCREENSHOT=docs/serve-page.png`` to also save the screenshot there (the docs' serving page
shows it).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from urllib.parse import quote

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from helpers.serving import GUARDED_KEY

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
# A "7": a bar from left to right, then a stroke down to the lower left (offsets from the canvas centre).
STROKE = [
    (-70, -80),
    (20, 0),
    (20, 0),
    (20, 0),
    (20, 0),
    (20, 0),
    (-10, 30),
    (-12, 35),
    (-12, 35),
    (-10, 35),
    (-8, 30),
]


@pytest.fixture
def browser(tmp_path):
    if not (CHROMIUM.is_file() and CHROMEDRIVER.is_file()):
        missing = (
            f"headless Chromium not found ({CHROMIUM}, {CHROMEDRIVER}): "
            f"install it with 'apt-get install chromium chromium-driver'"
        )
        if os.environ.get("CI"):  # .ci/run installs it: a CI run without the browser test is a failure
            pytest.fail(missing, pytrace=False)
        pytest.skip(missing)
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})  # the console: failed requests
    for flag in (
        "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run",
        f"--user-data-dir={tmp_path / 'profile'}", "--window-size=800,640",
    ):  # fmt: skip
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(str(CHROMEDRIVER)))
    yield driver
    driver.quit()


def draw_a_seven(browser, wait: WebDriverWait) -> None:
    canvas = browser.find_element(By.ID, "pad")
    actions = ActionChains(browser).move_to_element_with_offset(canvas, *STROKE[0]).click_and_hold()
    for step in STROKE[1:]:
        actions.move_by_offset(*step)
    actions.release().perform()
    # the page asks again while an answer is on its way; its last answer is in when it says it asks no more
    wait.until(lambda page: page.find_element(By.TAG_NAME, "body").get_attribute("data-asking") == "no")


def test_drawing_a_digit_shows_a_prediction_and_ten_bars(server, browser, tmp_path):
    browser.get(f"{server.url}/")
    wait = WebDriverWait(browser, 30)
    wait.until(lambda page: len(page.find_elements(By.CSS_SELECTOR, "#bars .row")) == 10)  # names from /info
    assert browser.find_element(By.ID, "prediction").text == ""

    draw_a_seven(browser, wait)
    prediction = browser.find_element(By.ID, "prediction").text
    assert prediction in [str(digit) for digit in range(10)]
    assert "confidence" in browser.find_element(By.ID, "confidence").text
    bars = browser.find_elements(By.CSS_SELECTOR, "#bars .bar")
    assert len(bars) == 10
    widths = [float(bar.value_of_css_property("width").removesuffix("px")) for bar in bars]
    best = browser.find_element(By.CSS_SELECTOR, "#bars .row.best .name").text
    assert best == prediction and max(widths) > 0

    screenshot = tmp_path / "serve-page.png"
    browser.save_screenshot(str(screenshot))
    assert screenshot.read_bytes().startswith(b"\x89PNG") and screenshot.stat().st_size < 200_000
    if os.environ.get("SERVE_PAGE_SCREENSHOT"):
        shutil.copyfile(screenshot, os.environ["SERVE_PAGE_SCREENSHOT"])

    browser.find_element(By.ID, "clear").click()
    wait.until(lambda page: page.find_element(By.ID, "prediction").text == "")


# Records the status of each answer to the page's requests, in window.answers
RECORD_ANSWERS = """
window.answers = [];
const send = window.fetch;
window.fetch = async (...args) => {
  const response = await send(...args);
  window.answers.push([String(args[0]), response.status]);
  return response;
};
"""


def test_a_tap_is_a_dot_and_the_page_sends_no_blank_drawing_nor_asks_for_a_missing_file(server, browser):
    browser.get(f"{server.url}/")
    wait = WebDriverWait(browser, 30)
    wait.until(lambda page: len(page.find_elements(By.CSS_SELECTOR, "#bars .row")) == 10)
    browser.execute_script(RECORD_ANSWERS)
    canvas = browser.find_element(By.ID, "pad")
    ActionChains(browser).move_to_element_with_offset(canvas, -40, -40).click().perform()  # a tap, no stroke
    wait.until(lambda page: page.find_element(By.TAG_NAME, "body").get_attribute("data-asking") == "no")
    assert browser.execute_script("return window.answers") == [["/predict", 200]]
    assert browser.find_element(By.ID, "status").text == ""
    assert browser.find_element(By.ID, "prediction").text in [str(digit) for digit in range(10)]
    problems = [entry["message"] for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]
    assert problems == []  # no 404 of a favicon, no 400 of a blank drawing


@pytest.mark.slow  # the browser
def test_the_page_sends_the_api_key_from_its_url_and_says_when_it_has_none(guarded_server, browser):
    browser.get(f"{guarded_server.url}/#key={quote(GUARDED_KEY)}")  # its spaces as %20
    wait = WebDriverWait(browser, 30)
    wait.until(lambda page: len(page.find_elements(By.CSS_SELECTOR, "#bars .row")) == 10)  # /info, keyed
    draw_a_seven(browser, wait)
    assert browser.find_element(By.ID, "prediction").text in [str(digit) for digit in range(10)]
    assert browser.find_element(By.ID, "status").text == ""

    browser.get(f"{guarded_server.url}/")  # no key in the URL
    draw_a_seven(browser, wait)
    assert browser.find_element(By.ID, "prediction").text == ""
    status = browser.find_element(By.ID, "status").text
    assert status.startswith("this server needs its API key") and "#key=" in status
