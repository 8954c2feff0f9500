"""The run's Prefect artifacts as people see them: the Prefect UI (a real server with its UI on) shown in
headless Chromium renders the contact sheet and the report's plots, with no broken image."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from flows.local_server import wait_healthy
from pipeline.dataset_report.build import write_report
from pipeline.report import contact_sheet
from pipeline.store import ContentStore
from tests.browser import chromium, console_errors, needs_chromium
from tests.conftest import _free_port
from tests.pipeline.dataset_report.conftest import dataset  # noqa: F401 (a fixture)

pytestmark = [pytest.mark.slow, needs_chromium]


@pytest.fixture
def prefect_with_ui(tmp_path):
    port = str(_free_port())
    api = f"http://127.0.0.1:{port}/api"  # the UI calls the API where the server says it is
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect"), "PREFECT_SERVER_UI_ENABLED": "true",
           "PREFECT_API_URL": api, "PREFECT_UI_API_URL": api, "PREFECT_SERVER_API_PORT": port,
           "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1"}  # fmt: skip
    prefect = str(Path(sys.executable).parent / "prefect")
    command = [prefect, "server", "start", "--host", "127.0.0.1", "--port", port]
    with open(tmp_path / "server.log", "wb") as log:
        server = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_healthy(f"http://127.0.0.1:{port}/api", timeout_s=120)
        yield f"http://127.0.0.1:{port}"
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(30)


def shown_images(driver, url: str, expected: int) -> list[int]:
    """The natural widths of the images an artifact's page shows, once `expected` have loaded."""
    from selenium.webdriver.common.by import By

    driver.get(url)
    for _ in range(60):
        links = [a.get_attribute("href") or "" for a in driver.find_elements(By.TAG_NAME, "a")]
        versions = [link for link in links if "/artifacts/artifact/" in link]
        if versions:
            break
        time.sleep(0.5)
    driver.get(versions[0])
    widths = []
    for _ in range(60):
        images = driver.find_elements(By.TAG_NAME, "img")
        widths = [driver.execute_script("return arguments[0].complete && arguments[0].naturalWidth", i) for i in images]
        if len(widths) >= expected and all(widths):
            break
        time.sleep(0.5)
    return widths


def test_the_contact_sheet_and_plots_render_in_the_prefect_ui(prefect_with_ui, dataset, tmp_path, monkeypatch):  # noqa: F811
    from prefect import flow
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker
    from prefect.settings import PREFECT_API_URL, temporary_settings

    import flows.ingest

    store = ContentStore(dataset / "store")
    kept = [p.stem for p in (dataset / "store").rglob("*.jpg")]
    sheet = contact_sheet(kept, store, tmp_path / "contact_sheet.jpg")
    report = write_report(dataset, out=tmp_path / "report")

    @flow
    def publish_artifacts():
        flows.ingest._publish_artifacts("run-1", 1, {"crops_kept": len(kept)}, sheet, len(kept), report)

    monkeypatch.setenv("PREFECT_API_URL", f"{prefect_with_ui}/api")
    with temporary_settings(updates={PREFECT_API_URL: f"{prefect_with_ui}/api"}):
        publish_artifacts()
        # Send the run's logs and events to this server now: left queued, they would meet it stopped
        # and hold the test process at exit while Prefect retries them.
        APILogWorker.drain_all(timeout=30, at_exit=False)
        EventsWorker.drain_all(timeout=30, at_exit=False)

    with chromium() as driver:
        sheet_widths = shown_images(driver, f"{prefect_with_ui}/artifacts/key/ingest-contact-sheet", 1)
        plot_widths = shown_images(driver, f"{prefect_with_ui}/artifacts/key/ingest-report", 3)
        errors = console_errors(driver)
    assert len(sheet_widths) == 1 and sheet_widths[0] > 0  # the JPEG data: URI, not a broken file:// link
    assert len(plot_widths) == 3 and all(plot_widths)
    assert errors == []  # (Prefect's UI has no favicon: its 404 is not ours)
