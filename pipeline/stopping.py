"""Stopping a run on SIGTERM or SIGINT: how a Prefect worker cancels a flow run, and Ctrl-C.

On the first signal: downloads in flight are abandoned (registered cancel callbacks), child processes
(ffmpeg, Dask workers) are ended, shards stop at their next image batch, and the main thread gets
`RunStopped`. A publish in progress finishes first (it is short, and a half-published version would
only be rolled forward by the next run anyway). If the process is still alive `GRACE_S` later, it
exits hard: a stop must never hang, whatever a thread is blocked in.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator

import psutil

GRACE_S = 15.0


class RunStopped(BaseException):
    """Raised in the main thread (and in shards) when the run was asked to stop. A BaseException, so
    that no `except Exception` of a stage turns it into an input's error row."""

    def __init__(self, signum: int):
        super().__init__(f"stopped by {signal.Signals(signum).name}")
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


_lock = threading.RLock()
_requested: int | None = None  # the signal that asked us to stop
_publishing = 0  # depth of publish sections in progress
_on_stop: list[Callable[[], None]] = []
_spared: set[int] = set()  # child pids that must outlive the stop (the run's Prefect API server)


def requested() -> int | None:
    return _requested


def check() -> None:
    """Raise RunStopped if a stop was asked for: called by shards between batches."""
    if _requested is not None:
        raise RunStopped(_requested)


def on_stop(callback: Callable[[], None]) -> None:
    """Call `callback` (e.g. a downloader's cancel) when a stop is asked for; at once if it was."""
    with _lock:
        _on_stop.append(callback)
        if _requested is None:
            return
    callback()


def spare(pid: int) -> None:
    """Leave this child process running when stopping (it is ended by whoever started it)."""
    _spared.add(pid)


@contextlib.contextmanager
def publishing() -> Iterator[None]:
    """A publish: a stop asked for meanwhile takes effect when it ends."""
    global _publishing
    with _lock:
        _publishing += 1
    try:
        yield
    finally:
        with _lock:
            _publishing -= 1
            pending = _requested if _publishing == 0 else None
        if pending is not None and threading.current_thread() is threading.main_thread():
            raise RunStopped(pending)


@contextlib.contextmanager
def stop_on_signals() -> Iterator[None]:
    """Install the SIGTERM/SIGINT handlers for the duration of a run (main thread only; elsewhere,
    e.g. a flow run in a thread, the caller's handlers stay)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, _handle) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def reset() -> None:
    """Forget an earlier stop (tests run several flows in one process)."""
    global _requested
    with _lock:
        _requested = None


def _handle(signum: int, frame) -> None:
    global _requested
    with _lock:
        first = _requested is None
        _requested = signum
        callbacks = list(_on_stop) if first else []
        in_publish = _publishing > 0
    if not first:
        return
    print(f"toonface: {signal.Signals(signum).name} received, stopping the run", file=sys.stderr, flush=True)
    for callback in callbacks:
        with contextlib.suppress(Exception):
            callback()
    _end_children()
    threading.Thread(target=_exit_after_grace, args=(signum,), daemon=True).start()
    if not in_publish:
        raise RunStopped(signum)


def _end_children() -> None:
    """SIGTERM, then SIGKILL after 3 s, to every descendant except the spared ones and theirs."""
    me = psutil.Process()
    spared = {pid for pid in _spared if psutil.pid_exists(pid)}
    for pid in list(spared):
        with contextlib.suppress(psutil.Error):
            spared |= {child.pid for child in psutil.Process(pid).children(recursive=True)}
    children = [child for child in me.children(recursive=True) if child.pid not in spared]
    for child in children:
        with contextlib.suppress(psutil.Error):
            child.terminate()
    _, alive = psutil.wait_procs(children, timeout=3)
    for child in alive:
        with contextlib.suppress(psutil.Error):
            child.kill()


def _exit_after_grace(signum: int) -> None:
    threading.Event().wait(GRACE_S)
    print(
        f"toonface: still running {GRACE_S:.0f} s after {signal.Signals(signum).name}; exiting now",
        file=sys.stderr,
        flush=True,
    )
    with contextlib.suppress(Exception):
        _spared.clear()
        _end_children()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(128 + signum)
