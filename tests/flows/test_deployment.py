"""The deployment path as a user runs it: a real Prefect server, a process worker, prefect.yaml's
`ingest/nightly`, `prefect deployment run`; and scale-out on a real (local) Dask cluster."""

import json
import os
import subprocess
from pathlib import Path

import pytest

from data_manifest import Manifest
from pipeline.sample import make_sample_library
from tests.conftest import PROJECT

pytestmark = pytest.mark.slow


def prefect_cli(*args, timeout=600):
    prefect = str(Path(os.sys.executable).parent / "prefect")
    return subprocess.run(
        [prefect, *args], cwd=PROJECT, capture_output=True, text=True, timeout=timeout, env=os.environ.copy()
    )


def test_nightly_deployment_is_scheduled_and_runs_on_the_worker(prefect_server, tmp_path):
    inspect = prefect_cli("deployment", "inspect", "ingest/nightly")
    assert inspect.returncode == 0, inspect.stderr
    assert "'cron': '0 2 * * *'" in inspect.stdout and "toonface-process" in inspect.stdout

    library = make_sample_library(tmp_path / "lib").parent
    data = tmp_path / "data"
    # Settings go in as the flow's `config` parameter, JSON; 320 px detection and one episode per
    # album make the run a third of its default time here.
    run = prefect_cli(
        "deployment",
        "run",
        "ingest/nightly",
        "--watch",
        "--param",
        f"library={library}",
        "--param",
        f"data_root={data}",
        "--param",
        'config={"detector_size": 320, "episodes_per_album": 1}',
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "Completed" in run.stdout

    history = Manifest(data).history()
    assert len(history) == 1
    flow_run_id = history["flow_run_id"][0]
    assert flow_run_id and flow_run_id in run.stdout  # the worker's flow run published it
    faces = Manifest(data).read("faces")
    assert len(faces) > 0 and faces["model_id"].str.endswith("-320px").all()  # the parameter reached the run
    assert Manifest(data).read("episodes")["selected"].sum() == 2

    artifact = prefect_cli("artifact", "inspect", "ingest-funnel")
    assert artifact.returncode == 0 and "crops_kept" in artifact.stdout
    # Images as data: URIs, which the UI shows (a file:// link is a broken image there)
    assert artifact_data("ingest-contact-sheet").count("](data:image/jpeg;base64,") == 1
    assert artifact_data("ingest-report").count("](data:image/png;base64,") == 3


def artifact_data(key: str) -> str:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    with get_client(sync_client=True) as client:
        found = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])))
    return found[0].data


def test_ingest_on_a_dask_cluster(prefect_server, tmp_path):
    from distributed import Client, LocalCluster

    library = make_sample_library(tmp_path / "lib").parent
    data = tmp_path / "data"
    # Workers are separate processes started now, so they inherit PREFECT_API_URL of the server.
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        out = subprocess.run(
            [
                os.sys.executable,
                "-m",
                "toonface.cli",
                "ingest",
                "--library",
                str(library),
                "--data-root",
                str(data),
                "--task-runner",
                cluster.scheduler_address,
                "--set",
                "detector_size=320",
                "--set",
                "episodes_per_album=1",
            ],
            cwd=PROJECT,
            capture_output=True,
            text=True,
            timeout=600,
            env=os.environ.copy(),
        )
        assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
        with Client(cluster.scheduler_address) as client:
            done = client.run_on_scheduler(
                lambda dask_scheduler: sorted(
                    {k if isinstance(k, str) else str(k) for k in dask_scheduler.task_prefixes}
                )
            )
    assert any("shard" in name for name in done), done  # the shards ran on the cluster
    counts = json.loads(Manifest(data).history()["counts"][0])
    assert counts["episodes"] == 2 and counts["crops_kept"] > 0  # one sampled episode per album
