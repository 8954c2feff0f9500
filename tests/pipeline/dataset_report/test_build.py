"""The report folder: a self-contained page that a real browser shows whole, plots, figures.json."""

import json
import shutil
import subprocess
import sys

from pipeline.dataset_report.build import write_report
from tests.browser import chromium, console_errors, needs_chromium

PNG = b"\x89PNG\r\n\x1a\n"


def test_the_report_folder_holds_the_page_plots_sheets_and_figures(dataset, tmp_path):
    page = write_report(dataset, out=tmp_path / "report")
    folder = page.parent
    for name in ("regions.png", "resolution.png", "sharpness.png", "samples_per_identity.png"):
        assert (folder / name).read_bytes().startswith(PNG) and (folder / name).stat().st_size > 2000
    assert sorted(p.name for p in (folder / "sheets").iterdir()) == ["moon.jpg", "sun.jpg"]
    figures = json.loads((folder / "figures.json").read_text())
    assert figures["version"] == 1 and figures["agreement"] is None  # no decision log in this data root
    html = page.read_text()
    assert "file://" not in html and 'src="data:image/png;base64,' in html and "not estimated" in html


def test_toonface_report_by_version_and_its_errors(dataset, tmp_path):
    def report(*args):
        command = [sys.executable, "-m", "toonface.cli", "report", "--data-root", str(dataset), *args]
        return subprocess.run(command, capture_output=True, text=True, timeout=120)

    done = report("--version", "0", "--out", str(tmp_path / "v0"))
    assert done.returncode == 0 and done.stdout.strip() == str(tmp_path / "v0" / "report.html")
    assert json.loads((tmp_path / "v0" / "figures.json").read_text())["version"] == 0
    assert report("--version", "7").returncode == 2
    missing = report("--release", "nope")
    assert missing.returncode == 2 and "no release named 'nope'" in missing.stderr


@needs_chromium
def test_the_page_opens_offline_in_a_real_browser_with_every_image_shown(dataset, tmp_path):
    from selenium.webdriver.common.by import By

    page = write_report(dataset, out=tmp_path / "report")
    shutil.move(str(page), tmp_path / "alone.html")  # without its folder: everything is inside the page
    with chromium() as driver:
        driver.get((tmp_path / "alone.html").as_uri())
        images = driver.find_elements(By.TAG_NAME, "img")
        assert len(images) == 6  # four plots and a contact sheet per album
        assert all(
            driver.execute_script("return arguments[0].complete && arguments[0].naturalWidth > 0", i) for i in images
        )
        assert console_errors(driver) == []
        assert "Head pose" in driver.page_source and "Identities gained: sun/Bo" in driver.page_source
