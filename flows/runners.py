"""Task runners, chosen by a short spec (flag `--task-runner` or env `TOONFACE_TASK_RUNNER`):

thread            threads in the flow's process (default; one per core)
thread:8          eight threads
dask              a local Dask cluster started for the run
tcp://HOST:PORT   an existing Dask scheduler (scale-out); its workers need PREFECT_API_URL
                  set to the same Prefect server as the flow
"""

from __future__ import annotations

import os


def make_task_runner(spec: str | None = None):
    spec = (spec if spec is not None else os.environ.get("TOONFACE_TASK_RUNNER", "")).strip() or "thread"
    if spec == "thread" or spec.startswith("thread:"):
        from prefect.task_runners import ThreadPoolTaskRunner

        workers = int(spec.split(":", 1)[1]) if ":" in spec else (os.cpu_count() or 1)
        return ThreadPoolTaskRunner(max_workers=workers)
    if spec == "dask":
        from prefect_dask import DaskTaskRunner

        return DaskTaskRunner()
    if spec.startswith(("tcp://", "tls://", "dask://")):
        from prefect_dask import DaskTaskRunner

        return DaskTaskRunner(address=spec.replace("dask://", "tcp://", 1))
    raise ValueError(f"unknown task runner {spec!r}: use thread, thread:N, dask or tcp://HOST:PORT")
