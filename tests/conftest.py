"""Shared test fixtures. Real components only: ffmpeg, Delta tables on disk, a Prefect server."""

from __future__ import annotations

import os
import socket
import tempfile
from pathlib import Path

import pytest

# Before anything imports Prefect: no telemetry, and state in a throwaway folder, not ~/.prefect.
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_HOME", tempfile.mkdtemp(prefix="toonface-prefect-home-"))
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")

PROJECT = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("TOONFACE_SHARED", PROJECT.parent / "shared"))
VIDEOS = SHARED / "fixtures" / "video"
CAVA_DEXTER = SHARED / "data" / "cava" / "dexters_laboratory"


def pytest_collection_modifyitems(config, items):
    # Tests marked shared_data read real images, videos and pages from the shared folder (never copied into
    # the repo); without it they are skipped with one clear reason, and the pure unit tests still run.
    if (CAVA_DEXTER / "boxes.csv").is_file():
        return
    skip = pytest.mark.skip(
        reason=f"needs the shared data folder at {SHARED} (clone the project beside shared/ or set TOONFACE_SHARED)"
    )
    for item in items:
        if item.get_closest_marker("shared_data"):
            item.add_marker(skip)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def prefect_server(tmp_path_factory):
    """A real Prefect server on SQLite, a process worker and the prefect.yaml deployments.
    The test process and its children talk to it through PREFECT_API_URL."""
    from flows import local_server

    home = tmp_path_factory.mktemp("toonface-home")
    os.environ["TOONFACE_PREFECT_PORT"] = str(_free_port())
    os.environ["PREFECT_SERVER_UI_ENABLED"] = "false"
    cfg = local_server.start(home, library=str(home / "no-library"), data_root=str(home / "no-data"))
    from prefect.settings import PREFECT_API_URL, temporary_settings

    saved = {k: os.environ.get(k) for k in ("PREFECT_API_URL", "PREFECT_HOME")}
    os.environ["PREFECT_API_URL"] = cfg["PREFECT_API_URL"]  # for subprocesses and Dask workers
    os.environ["PREFECT_HOME"] = cfg["PREFECT_HOME"]
    with temporary_settings(updates={PREFECT_API_URL: cfg["PREFECT_API_URL"]}):  # for this process
        yield cfg
        # Send the flow runs' queued logs and events while the server still listens: left for exit,
        # they meet a stopped server and Prefect retries them for over a minute.
        from prefect.events.worker import EventsWorker
        from prefect.logging.handlers import APILogWorker

        APILogWorker.drain_all(timeout=30, at_exit=False)
        EventsWorker.drain_all(timeout=30, at_exit=False)
    local_server.stop(home)
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
