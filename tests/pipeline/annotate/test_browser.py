"""The verification page in a real browser: headless Chromium driven by Selenium against the
real server (uvicorn in a subprocess). Logs in, labels pairs with the keyboard, undoes one, uses
grid mode, then merges: the decisions are the next manifest version's labels."""

import json
import os
import shutil
import sqlite3
import statistics
import tempfile
import time
from pathlib import Path

import pytest

from data_manifest import Manifest
from pipeline.annotate.merge import merge_decisions
from tests.pipeline.annotate.conftest import add_user

CHROMIUM = os.environ.get("TOONFACE_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("TOONFACE_CHROMEDRIVER", "/usr/bin/chromedriver")
SCREENSHOT = Path(os.environ.get("TOONFACE_SCREENSHOT", "/tmp/toonface_pair_mode.png"))
webdriver = pytest.importorskip("selenium.webdriver")
pytestmark = pytest.mark.skipif(
    not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)),
    reason="needs chromium and chromedriver (apt-get install chromium chromium-driver)",
)

from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.action_chains import ActionChains  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

FLAGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--window-size=1280,820",
]


@pytest.fixture
def browser():
    profile = tempfile.mkdtemp(prefix="toonface-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile}")
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def shown(driver) -> int:
    return int(driver.execute_script("return Number(document.body.dataset.shown || 0)"))


def wait_shown(driver, after: int, timeout: float = 15) -> int:
    WebDriverWait(driver, timeout, poll_frequency=0.02).until(
        lambda d: d.execute_script(
            "return Number(document.body.dataset.shown || 0) > arguments[0] && !window.toonface.busy", after
        )
    )
    return shown(driver)


def press(driver, key: str) -> tuple[str, float]:
    """Press a key on the page; returns the face then shown and the wall time to it (test side)."""
    before = shown(driver)
    t0 = time.perf_counter()
    ActionChains(driver).send_keys(key).perform()
    wait_shown(driver, before)
    return driver.execute_script("return document.body.dataset.face"), (time.perf_counter() - t0) * 1000


def test_label_pairs_and_a_grid_in_a_real_browser(data_root, server_factory, browser):
    root, _ = data_root
    token = add_user(root, "ann")
    server = server_factory(root, "--gold-rate", "0")
    d = browser

    d.get(server.base + "/pair")
    assert d.current_url.endswith("/login")  # no session: the login form
    d.find_element(By.ID, "name").send_keys("ann")
    d.find_element(By.ID, "token").send_keys(token)
    d.find_element(By.ID, "login").click()
    WebDriverWait(d, 15).until(lambda d: d.current_url.endswith("/pair"))
    wait_shown(d, 0)
    assert d.execute_script("return document.body.dataset.face") == "p0"
    assert d.find_element(By.ID, "proposed").text == "toon/alice"
    assert len(d.find_elements(By.CSS_SELECTOR, "#refs img.ref")) == 2
    assert d.find_element(By.CSS_SELECTOR, "#alternatives li").get_attribute("data-identity") == "toon/bob"
    assert d.execute_script("return document.cookie") == ""  # HttpOnly: not readable by scripts

    test_side = []
    face, ms = press(d, "y")  # p0 is alice
    test_side.append(ms)
    assert face == "p1"
    d.save_screenshot(str(SCREENSHOT))  # pair mode: p1 proposed as bob
    face, ms = press(d, "n")  # p1 is not bob
    test_side.append(ms)
    assert face == "p2"
    face, ms = press(d, "1")  # p2 is the first alternative (bob), not alice
    test_side.append(ms)
    assert face == "p3"
    face, ms = press(d, "y")  # p3 is bob (then undone)
    test_side.append(ms)
    assert face == "p4"
    face, ms = press(d, "u")  # undo brings p3 back
    test_side.append(ms)
    assert face == "p3"
    face, ms = press(d, "n")  # p3 is not bob
    test_side.append(ms)
    assert face == "p4"
    face, ms = press(d, "y")  # p4 is alice
    test_side.append(ms)
    assert face == "p5"
    timings = d.execute_script("return window.toonface.timings")
    assert len(timings) == 7
    assert "by you" in d.find_element(By.ID, "progress").text

    # Grid mode: the identity with the most pending candidates (carol: g0..g5)
    d.get(server.base + "/grid")
    wait_shown(d, 0)
    assert d.execute_script("return document.body.dataset.identity") == "toon/carol"
    tiles = {t.get_attribute("data-face"): t for t in d.find_elements(By.CSS_SELECTOR, "#grid .tile")}
    assert set(tiles) == {f"g{i}" for i in range(6)}
    tiles["g1"].click()
    tiles["g4"].click()
    assert {f for f, t in tiles.items() if "wrong" in t.get_attribute("class")} == {"g1", "g4"}
    before = shown(d)
    d.find_element(By.ID, "confirm").click()
    wait_shown(d, before)
    assert d.find_element(By.ID, "status").text == "saved 6 decisions (2 wrong)"
    assert d.execute_script("return document.body.dataset.identity") == "toon/dan"  # the next grid
    resources = d.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
    assert resources and all(r.startswith(server.base) for r in resources)  # nothing from elsewhere

    # The audit trail, then the merge into the next manifest version.
    conn = sqlite3.connect(root / "annotations" / "decisions.sqlite")
    rows = conn.execute(
        "SELECT face_id, decision, identity, mode, time_ms, supersedes FROM decisions ORDER BY id"
    ).fetchall()
    assert [r[:2] for r in rows[:7]] == [
        ("p0", "same"),
        ("p1", "different"),
        ("p2", "relabel"),
        ("p3", "same"),
        ("p3", "undo"),
        ("p3", "different"),
        ("p4", "same"),
    ]
    assert all(r[4] is not None and r[4] >= 0 for r in rows)
    assert rows[4][5] == 4 and {r[3] for r in rows[7:]} == {"grid"} and len(rows) == 13

    version = merge_decisions(root)
    assert version == 1
    labels = Manifest(root).read("labels", version=version)
    got = {(r.face_id, r.identity): r.verdict for r in labels.itertuples()}
    assert got == {
        ("p0", "toon/alice"): "verified",
        ("p1", "toon/bob"): "rejected",
        ("p2", "toon/bob"): "verified",
        ("p2", "toon/alice"): "rejected",
        ("p3", "toon/bob"): "rejected",
        ("p4", "toon/alice"): "verified",
        **{(f"g{i}", "toon/carol"): "rejected" if i in (1, 4) else "verified" for i in range(6)},
    }
    assert set(labels["annotators"]) == {json.dumps(["ann"])}
    assert set(labels["embedder"]) == {"emb-test-0001"}

    median_js = statistics.median(timings)
    report = {
        "keyboard_round_trip_ms_median_in_page": round(median_js, 1),
        "keyboard_round_trip_ms_in_page": [round(t, 1) for t in timings],
        "keyboard_round_trip_ms_median_test_side": round(statistics.median(test_side), 1),
    }
    print("\n" + json.dumps(report))
    Path(os.environ.get("TOONFACE_TIMINGS", "/tmp/toonface_roundtrip.json")).write_text(json.dumps(report))
    assert median_js < 1000
