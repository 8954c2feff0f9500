"""The embedded default Prefect setup: a local server on SQLite, a process work pool, a worker,
and the deployments of prefect.yaml. `toonface server start|stop|status`.

State lives in one folder (default ./.toonface, or $TOONFACE_HOME): the SQLite database, logs,
pid files, and `env`, a file to `source` so that `prefect deployment run 'ingest/nightly'` talks
to this server.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from pipeline import stopping

PROJECT_DIR = Path(__file__).resolve().parent.parent
WORK_POOL = "toonface-process"


def settings(home: str | Path | None = None) -> dict[str, str]:
    home = Path(home or os.environ.get("TOONFACE_HOME") or PROJECT_DIR / ".toonface").resolve()
    port = os.environ.get("TOONFACE_PREFECT_PORT", "4200")
    return {
        "home": str(home),
        "PREFECT_HOME": str(home / "prefect"),
        "PREFECT_API_URL": f"http://127.0.0.1:{port}/api",
        "PREFECT_SERVER_API_HOST": "127.0.0.1",
        "PREFECT_SERVER_API_PORT": port,
        # No telemetry, no update checks: this must run on machines with no internet.
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "DO_NOT_TRACK": "1",
        "PREFECT_SERVER_UI_ENABLED": os.environ.get("PREFECT_SERVER_UI_ENABLED", "true"),
    }


def _env(cfg: dict[str, str]) -> dict[str, str]:
    env = dict(os.environ)
    env.update({k: v for k, v in cfg.items() if k != "home"})
    return env


def _prefect() -> str:
    return str(Path(sys.executable).parent / "prefect")


def _alive(pid_file: Path) -> int | None:
    try:
        pid = int(pid_file.read_text())
    except (FileNotFoundError, ValueError):
        return None
    try:  # started by this very process (as in the tests): a dead child stays a zombie until reaped
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return None
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
        return pid
    except (ProcessLookupError, PermissionError):
        return None


def _spawn(name: str, args: list[str], cfg: dict[str, str]) -> int:
    home = Path(cfg["home"])
    home.mkdir(parents=True, exist_ok=True)
    log = open(home / f"{name}.log", "ab")
    # A session of its own: it outlives this command, and `stop` can end its whole group.
    proc = subprocess.Popen(
        args,
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        env=_env(cfg),
        cwd=PROJECT_DIR,
        start_new_session=True,
    )
    (home / f"{name}.pid").write_text(str(proc.pid))
    return proc.pid


def wait_healthy(api_url: str, timeout_s: float = 180.0, poll_s: float = 1.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{api_url}/health", timeout=5) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        time.sleep(poll_s)
    raise RuntimeError(f"Prefect server at {api_url} did not answer within {timeout_s:.0f} s")


def _run(args: list[str], cfg: dict[str, str], extra_env: dict[str, str] | None = None) -> None:
    env = _env(cfg)
    env.update(extra_env or {})
    out = subprocess.run(args, env=env, cwd=PROJECT_DIR, capture_output=True, text=True, timeout=300)
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(args[1:4])} failed:\n{out.stdout[-2000:]}\n{out.stderr[-2000:]}")


def _die_with_parent() -> None:
    """In the child before exec: get SIGKILL when the process that started it dies, even by SIGKILL."""
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG


@contextlib.contextmanager
def run_api() -> Iterator[None]:
    """The Prefect API a one-off `toonface ingest` reports to: the configured server, or else a
    temporary one of its own. Unlike Prefect's own temporary server, this one writes to a log file, so a
    caller capturing our output is never held open by it, and it dies with this process, even on SIGKILL."""
    # Prefect is imported here, not at the top: `toonface server start|stop|status` never needs it.
    from prefect.settings import PREFECT_API_URL, get_current_settings, temporary_settings

    current = get_current_settings()
    if current.api.url:
        yield
        return
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}/api"
    server = _start_temporary_server(port, Path(current.home))
    stopping.spare(server.pid)  # a stop ends the run's other children; the flow still reports to this one
    saved = os.environ.get("PREFECT_API_URL")
    try:
        wait_healthy(url, timeout_s=120, poll_s=0.2)
        os.environ["PREFECT_API_URL"] = url  # for Dask workers started by the run
        with temporary_settings(updates={PREFECT_API_URL: url}):
            yield
    finally:
        _drain_logs_and_events()
        if saved is None:
            os.environ.pop("PREFECT_API_URL", None)
        else:
            os.environ["PREFECT_API_URL"] = saved
        server.terminate()
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def _start_temporary_server(port: int, home: Path) -> subprocess.Popen:
    """Prefect's API app under uvicorn on 127.0.0.1:`port`, logging to `home`/temporary-server.log."""
    import prefect

    home.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PREFECT_UI_ENABLED": "0", "PREFECT__SERVER_EPHEMERAL": "1", "PREFECT__SERVER_FINAL": "1"}
    app_dir = str(prefect.__module_path__.parent)
    command = [sys.executable, "-m", "uvicorn", "--app-dir", app_dir, "--factory"]
    command += ["prefect.server.api.server:create_app", "--host", "127.0.0.1", "--port", str(port)]
    command += ["--log-level", "error", "--lifespan", "on"]
    with open(home / "temporary-server.log", "ab") as log:
        return subprocess.Popen(
            command,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            preexec_fn=_die_with_parent,
        )


def _drain_logs_and_events() -> None:
    """Send the run's queued logs and events while the server still listens (left for exit, they
    meet a stopped server and Prefect retries them for over a minute)."""
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    with contextlib.suppress(Exception):
        APILogWorker.drain_all(timeout=10, at_exit=False)
        EventsWorker.drain_all(timeout=10, at_exit=False)


def start(home=None, library: str | None = None, data_root: str | None = None, cron: str | None = None) -> dict:
    cfg = settings(home)
    home_dir = Path(cfg["home"])
    if not _alive(home_dir / "server.pid"):
        _spawn(
            "server",
            [_prefect(), "server", "start", "--host", "127.0.0.1", "--port", cfg["PREFECT_SERVER_API_PORT"]],
            cfg,
        )
    wait_healthy(cfg["PREFECT_API_URL"])
    _run([_prefect(), "--no-prompt", "work-pool", "create", WORK_POOL, "--type", "process", "--overwrite"], cfg)
    _run(
        [_prefect(), "--no-prompt", "deploy", "--all"],
        cfg,
        {
            "TOONFACE_PROJECT_DIR": str(PROJECT_DIR),
            "TOONFACE_LIBRARY": str(
                Path(library or os.environ.get("TOONFACE_LIBRARY") or PROJECT_DIR / "sample_library").resolve()
            ),
            "TOONFACE_DATA_ROOT": str(
                Path(data_root or os.environ.get("TOONFACE_DATA_ROOT") or PROJECT_DIR / "data").resolve()
            ),
            "TOONFACE_NIGHTLY_CRON": cron or os.environ.get("TOONFACE_NIGHTLY_CRON") or "0 2 * * *",
        },
    )
    if not _alive(home_dir / "worker.pid"):
        _spawn("worker", [_prefect(), "worker", "start", "--pool", WORK_POOL, "--type", "process"], cfg)
    env_file = home_dir / "env"
    env_file.write_text("".join(f"export {k}={v}\n" for k, v in cfg.items() if k != "home"))
    return cfg


def stop(home=None) -> None:
    home_dir = Path(settings(home)["home"])
    for name in ("worker", "server"):
        pid = _alive(home_dir / f"{name}.pid")
        if pid is None:
            continue
        try:
            os.killpg(pid, signal.SIGTERM)
        except ProcessLookupError:
            continue
        for _ in range(100):
            if _alive(home_dir / f"{name}.pid") is None:
                break
            time.sleep(0.1)
        else:
            os.killpg(pid, signal.SIGKILL)
        (home_dir / f"{name}.pid").unlink(missing_ok=True)


def main(action: str, home=None, library=None, data_root=None) -> int:
    if action == "start":
        cfg = start(home, library, data_root)
        print(
            f"Prefect server {cfg['PREFECT_API_URL']} (UI at {cfg['PREFECT_API_URL'][:-4]}), worker on pool "
            f"'{WORK_POOL}', deployment 'ingest/nightly' scheduled.\n"
            f"To use the prefect CLI against it:  source {cfg['home']}/env"
        )
    elif action == "stop":
        stop(home)
        print("stopped")
    else:
        cfg = settings(home)
        for name in ("server", "worker"):
            pid = _alive(Path(cfg["home"]) / f"{name}.pid")
            print(f"{name}: {'running, pid ' + str(pid) if pid else 'stopped'}")
    return 0
