"""Headless Chromium for the tests that look at a page as people do (Debian's chromium and chromedriver)."""

import contextlib
import os
import shutil
import tempfile

import pytest

CHROMIUM = os.environ.get("TOONFACE_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("TOONFACE_CHROMEDRIVER", "/usr/bin/chromedriver")
needs_chromium = pytest.mark.skipif(
    not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)),
    reason="needs chromium and chromedriver (apt-get install chromium chromium-driver)",
)


@contextlib.contextmanager
def chromium():
    """A headless Chromium that keeps the page's console log (`driver.get_log("browser")`)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="toonface-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        f"--user-data-dir={profile}",
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def console_errors(driver) -> list[dict]:
    """SEVERE console entries, but for a missing favicon (Prefect's UI has none; not ours)."""
    return [e for e in driver.get_log("browser") if e["level"] == "SEVERE" and "favicon.ico" not in e["message"]]
