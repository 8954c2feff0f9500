"""Faults during a run: a kill at any point of publishing, and inputs that make a stage raise.

Every kill is a real SIGKILL of a real `toonface` process (fault injection in the publisher); the
rerun's dataset is compared table by table with an uninterrupted run's.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from data_manifest import Manifest
from data_manifest.compare import table_differences
from flows.ingest import ingest
from pipeline.annotate.catalogue import load_catalogue
from pipeline.annotate.merge import merge_decisions
from pipeline.annotate.service import AnnotationService, Settings
from pipeline.sample import make_sample_library
from pipeline.store import sha256_bytes
from tests.conftest import PROJECT

pytestmark = pytest.mark.usefixtures("prefect_server")

MECHANICS = {"detector_size": 320, "episodes_per_album": 1}
# Every point of an ingest's publish where the sample library's run makes a commit.
INGEST_POINTS = ["marker", "albums", "episodes", "assets", "faces", "characters", "identities", "runs"]
MERGE_POINTS = ["marker", "labels", "runs"]


@pytest.fixture(scope="module")
def library(tmp_path_factory) -> Path:
    return make_sample_library(tmp_path_factory.mktemp("library"), seed=0).parent


@pytest.fixture(scope="module")
def uninterrupted(library, tmp_path_factory) -> Path:
    data = tmp_path_factory.mktemp("uninterrupted") / "data"
    ingest(library=str(library), data_root=str(data), config=MECHANICS)
    return data


def with_caches_of(clean: Path, data: Path) -> Path:
    """A fresh data root holding only the clean run's content store and caches (not its manifest or
    index), so a killed run spends its time publishing, not detecting."""
    for folder in ("store", "cache"):
        shutil.copytree(clean / folder, data / folder)
    return data


def toonface(*args: str, fault: str | None = None) -> int:
    env = {**os.environ, **({"TOONFACE_FAULT_KILL_AFTER_COMMIT": fault} if fault else {})}
    return subprocess.run(
        [sys.executable, "-m", "toonface.cli", *args],
        cwd=PROJECT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        timeout=600,
    ).returncode


def index_ids(data: Path) -> list[str]:
    (folder,) = (data / "index").iterdir()
    return json.loads((folder / f"{(folder / 'CURRENT').read_text().strip()}.json").read_text())


@pytest.mark.slow
@pytest.mark.parametrize("point", INGEST_POINTS)
def test_an_ingest_killed_at_any_commit_point_is_rolled_forward_by_the_next_run(
    library, uninterrupted, tmp_path, point
):
    data = with_caches_of(uninterrupted, tmp_path / "data")
    settings = [f"--set={key}={value}" for key, value in MECHANICS.items()]
    assert toonface("ingest", "--library", str(library), "--data-root", str(data), *settings, fault=point) == -9
    summary = ingest(library=str(library), data_root=str(data), config=MECHANICS)
    m = Manifest(data)
    assert list(m.history()["manifest_version"]) == [0, 1] and summary["manifest_version"] == 1
    assert set(json.loads(m.history()["rows_added"][1]).values()) <= {0}  # the rerun found it all published
    assert set(table_differences(uninterrupted, data).values()) == {0}
    assert sorted(index_ids(data)) == sorted(index_ids(uninterrupted))  # each crop indexed once
    assert list((data / "manifest" / "staging").iterdir()) == []


@pytest.fixture(scope="module")
def decided(uninterrupted, tmp_path_factory) -> Path:
    """The uninterrupted root with two annotator decisions waiting to be merged."""
    data = tmp_path_factory.mktemp("decided") / "data"
    shutil.copytree(uninterrupted, data)
    service = AnnotationService(data, Settings(order="random", gold_rate=0))
    catalogue = load_catalogue(data)
    for item in service.queue("ann", 2):
        service.decide("ann", item["face_id"], catalogue.faces[item["face_id"]]["prelabel"] or "Hana", "same")
    return data


@pytest.mark.slow
@pytest.mark.parametrize("point", MERGE_POINTS)
def test_a_merge_killed_at_any_commit_point_is_rolled_forward_by_the_next_merge(decided, tmp_path, point):
    clean, data = tmp_path / "clean", tmp_path / "data"
    shutil.copytree(decided, clean)
    shutil.copytree(decided, data)
    assert merge_decisions(clean) == 1
    assert toonface("annotate", "merge", "--data-root", str(data), fault=point) == -9
    assert merge_decisions(data) == 1  # rolled forward as version 1; nothing left to publish
    assert len(Manifest(data).read("labels")) == len(Manifest(clean).read("labels")) > 0
    assert set(table_differences(clean, data).values()) == {0}


@pytest.mark.slow
def test_a_still_whose_analysis_raises_is_an_internal_error_row_and_the_rest_is_published(tmp_path, monkeypatch):
    stills = tmp_path / "lib"
    make_sample_library(tmp_path / "sample", seed=0)
    shutil.copytree(tmp_path / "sample" / "moon_patrol" / "stills", stills)
    bad = stills / "still_03.jpg"
    monkeypatch.setenv("TOONFACE_FAULT_RAISE_ON", sha256_bytes(bad.read_bytes()))
    summary = ingest(library=str(stills), data_root=str(tmp_path / "data"), config={**MECHANICS, "embedder": "none"})
    assets = Manifest(tmp_path / "data").read("assets").set_index("source")
    assert summary["counts"]["internal_errors"] == 1 and summary["counts"]["drop.image.internal_error"] == 1
    row = assets.loc[[s for s in assets.index if s.endswith("still_03.jpg")][0]]
    assert row["drop_reason"] == "internal_error" and row["detail"].startswith("RuntimeError: injected fault")
    assert (assets.drop(row.name)["status"] == "ok").all() and len(assets) == 6
    # not cached: once the fault is gone, the next run analyses it
    monkeypatch.delenv("TOONFACE_FAULT_RAISE_ON")
    again = ingest(library=str(stills), data_root=str(tmp_path / "data"), config={**MECHANICS, "embedder": "none"})
    assert again["counts"]["images_analysed"] == 1


def _start_ingest(library: Path, data: Path, *extra: str) -> subprocess.Popen:
    """`toonface ingest` as a scheduler runs it: output captured, no Prefect server configured (so it
    starts its own temporary one)."""
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    cmd = [
        sys.executable,
        "-m",
        "toonface.cli",
        "ingest",
        "--library",
        str(library),
        "--data-root",
        str(data),
        "--set",
        "detector_size=320",
        "--set",
        "stills_per_shard=2",
        "--task-runner",
        "thread:1",
        *extra,
    ]
    return subprocess.Popen(cmd, cwd=PROJECT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _wait_for_staged_parts(data: Path, n: int, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None:
        if len(list((data / "manifest" / "staging").glob("*/assets/*.parquet"))) >= n:
            return
        time.sleep(0.1)
    raise AssertionError(f"the run did not get mid-way (exit code {proc.poll()})")


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_sigterm_or_sigint_stops_an_ingest_within_seconds_and_ends_its_children(library, tmp_path, sig):
    data = tmp_path / "data"
    proc = _start_ingest(library, data)
    _wait_for_staged_parts(data, 2, proc)
    children = psutil.Process(proc.pid).children(recursive=True)
    assert children, "the run's own Prefect server should be a child"
    started = time.monotonic()
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 128 + sig, err.decode()[-2000:]
    assert time.monotonic() - started < 20
    assert b"nothing partly published" in err
    _, alive = psutil.wait_procs(children, timeout=5)
    assert alive == []
    assert Manifest(data).latest_version() is None
    summary = ingest(library=str(library), data_root=str(data), config={"detector_size": 320})
    assert summary["manifest_version"] == 0 and summary["counts"]["images_cached"] > 0


@pytest.mark.slow
def test_a_killed_ingest_leaves_no_process_holding_its_output(library, tmp_path):
    # After kill -9 nothing of the run may keep the caller's pipes open (its temporary Prefect server
    # used to), or a scheduler capturing the output would wait forever.
    data = tmp_path / "data"
    proc = _start_ingest(library, data)
    _wait_for_staged_parts(data, 1, proc)
    children = psutil.Process(proc.pid).children(recursive=True)
    proc.kill()
    proc.communicate(timeout=10)
    _, alive = psutil.wait_procs(children, timeout=5)
    assert alive == []
