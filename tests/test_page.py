"""The FastAPI example's page, driven in a real headless Chromium against the emulator.

The app runs on a real uvicorn server (its lifespan, its live event stream), the browser is
Debian's ``chromium`` driven by its ``chromedriver`` through selenium. This test is
synchronous: the browser and both servers run apart from the test's thread, so an event loop
here would add nothing.

Skipped, saying why, only when Chromium or its driver is not installed (``apt-get install
chromium chromium-driver``; ``.ci/run`` installs them).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from oxen_queue.testing import Emulator, EmulatorConfig

from .servers import ServerThread

webdriver = pytest.importorskip("selenium.webdriver")
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.remote.webdriver import WebDriver  # noqa: E402
from selenium.webdriver.remote.webelement import WebElement  # noqa: E402
from selenium.webdriver.support.ui import Select, WebDriverWait  # noqa: E402

CHROMIUM = os.environ.get("OXEN_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("OXEN_TEST_CHROMEDRIVER", "/usr/bin/chromedriver")
APP = "examples.fastapi_app:app"
FINAL = ("succeeded", "failed", "cancelled", "lost")

T = TypeVar("T")

pytestmark = pytest.mark.skipif(
    not (shutil.which(CHROMIUM) and shutil.which(CHROMEDRIVER)),
    reason=f"needs Chromium and its driver ({CHROMIUM}, {CHROMEDRIVER}): "
    "apt-get install chromium chromium-driver",
)


@pytest.fixture
def emulator() -> Iterator[Emulator]:
    # Jobs queued 0.15-0.6 s, then processing 0.6-1.5 s: slow enough to see each status.
    with Emulator(config=EmulatorConfig(time_scale=0.3, seed=12)) as emu:
        yield emu


@pytest.fixture
def app_url(emulator: Emulator, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    monkeypatch.setenv("OXEN_BASE_URL", emulator.base_url)  # read by the app's lifespan
    monkeypatch.setenv("OXEN_API_KEY", "page-test-key")
    with ServerThread(APP) as server:
        yield server.base_url


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[WebDriver]:
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless",
        "--no-sandbox",  # as root, Chromium refuses to start with its sandbox
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--window-size=800,1100",
        f"--user-data-dir={tmp_path / 'profile'}",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    try:
        yield driver
    finally:
        driver.quit()


def wait(driver: WebDriver, condition: Callable[[WebDriver], T], *, timeout: float = 10) -> T:
    """``condition``'s first truthy answer, asked every 50 ms."""
    answer: T = WebDriverWait(driver, timeout, poll_frequency=0.05).until(condition)
    return answer


@contextlib.contextmanager
def emulator_set(emulator: Emulator, prompt: str, **changes: Any) -> Iterator[None]:
    """Jobs enqueued in the block with the emulator's config (or ``time_scale``) changed,
    until the job with ``prompt`` exists; each job's fate is drawn when it is enqueued."""
    state = emulator.state
    saved_config, saved_scale = state.config, state.time_scale
    scale = changes.pop("time_scale", saved_scale)
    state.config, state.time_scale = saved_config.replace(**changes), scale
    try:
        yield
        deadline = time.monotonic() + 10
        while emulator.stats()["jobs_by_prompt"].get(prompt, 0) == 0:
            assert time.monotonic() < deadline, f"no job for {prompt!r}"
            time.sleep(0.01)  # polling: the emulator's counters announce nothing
    finally:
        state.config, state.time_scale = saved_config, saved_scale


def submit(driver: WebDriver, prompt: str) -> WebElement:
    """Type a prompt, submit it, and return its job's list item once it shows."""
    box = driver.find_element(By.NAME, "prompt")
    box.send_keys(prompt)
    driver.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    item = wait(driver, lambda d: job(d, prompt))
    assert item is not None
    return item


def job(driver: WebDriver, prompt: str) -> WebElement | None:
    for item in driver.find_elements(By.CSS_SELECTOR, "#jobs li"):
        if item.find_element(By.CLASS_NAME, "prompt").text == prompt:
            return item
    return None


def status(item: WebElement) -> str:
    return str(item.get_attribute("data-status"))


def test_the_page_estimates_streams_statuses_shows_images_failures_and_cancels(
    emulator: Emulator, app_url: str, browser: WebDriver, tmp_path: Path
) -> None:
    browser.get(app_url + "/")
    estimate = browser.find_element(By.ID, "estimate")
    # The estimate of the defaults (high, 1920x1080), then of the options picked.
    wait(browser, lambda d: "$0.28" in estimate.text)
    Select(browser.find_element(By.NAME, "quality")).select_by_value("low")
    Select(browser.find_element(By.NAME, "resolution")).select_by_value("1024x1024")
    wait(browser, lambda d: "$0.02" in estimate.text)
    assert estimate.text == "Estimated cost: $0.02"

    fine = ["An ox on a hill at dawn", "An ox in the snow", "An ox crossing a river"]
    items = {prompt: submit(browser, prompt) for prompt in fine}
    failing, cancelled = "An ox with no credits left", "An ox nobody waits for"
    with emulator_set(emulator, failing, failure_rate=1.0):
        items[failing] = submit(browser, failing)
    with emulator_set(emulator, cancelled, time_scale=10.0):  # queued for 5-20 s
        items[cancelled] = submit(browser, cancelled)
    wait(browser, lambda d: status(items[cancelled]) == "queued")
    items[cancelled].find_element(By.CLASS_NAME, "cancel").click()

    wait(browser, lambda d: all(status(item) in FINAL for item in items.values()))
    # Every image has loaded through the app (from the emulator's file host, another origin).
    images = [items[prompt].find_element(By.TAG_NAME, "img") for prompt in fine]
    wait(
        browser,
        lambda d: all(d.execute_script("return arguments[0].naturalWidth", i) for i in images),
    )
    browser.save_screenshot(str(tmp_path / "page.png"))

    for prompt in fine:
        assert status(items[prompt]) == "succeeded"
        assert items[prompt].find_element(By.CLASS_NAME, "status").text == "succeeded"
        assert "est. $0.02" in items[prompt].find_element(By.CLASS_NAME, "meta").text
    widths = [browser.execute_script("return arguments[0].naturalWidth", i) for i in images]
    assert widths == [1024, 1024, 1024]
    assert status(items[failing]) == "failed"
    assert items[failing].find_element(By.CLASS_NAME, "error").text == "Insufficient credits"
    assert status(items[cancelled]) == "cancelled"
    assert not items[cancelled].find_element(By.CLASS_NAME, "cancel").is_enabled()
    assert not items[cancelled].find_elements(By.TAG_NAME, "img")
    assert (tmp_path / "page.png").stat().st_size > 0
    # The page closed its event stream once every job was over (an EventSource left open
    # would reconnect for ever), and the app's client kept its one upstream stream.
    assert browser.execute_script("return source") is None
    assert emulator.stats()["sse_open"] == 1
