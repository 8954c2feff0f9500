"""The per-domain scheduler: spacing of request starts and requests in flight, per domain.

A domain is host + port, so two ports are two domains: two requests to the same domain never
*start* less than the interval apart, across all threads, retries, redirect hops and robots.txt
fetches. Spacing is enforced on request *starts* in the client; what the server sees can differ by
the send jitter (a few ms)."""

from __future__ import annotations

import contextlib
import fcntl
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

from pipeline.sources.download.deadlines import POLL_S
from pipeline.sources.download.reasons import CANCELLED
from pipeline.sources.download.results import Fail
from pipeline.sources.download.urls import url_parts
from pipeline.store import sha256_bytes


def domain_key(canonical: str) -> tuple:
    """(host, port) of a canonical URL: the unit of rate limiting."""
    _, host, port = url_parts(canonical)
    return (host, port)


class DomainLimiter:
    """Per-domain start times and concurrency, shared by all threads.

    `slot(key)` waits until fewer than `max_per_domain` requests to that domain are active, reserves
    the next start time (>= the previous reservation + interval, >= any deferral), sleeps until it
    and holds the slot for the duration of the request.

    With `shared_dir`, start times are also reserved in one file per domain under that folder,
    under an exclusive lock (flock), so every process on the machine that uses the same folder (the
    workers of a local Dask cluster, several flow runs) keeps the same spacing. The concurrency
    limit stays per process. Both waits give up with `cancelled` once `is_cancelled()`."""

    def __init__(
        self,
        interval_s: float,
        max_per_domain: int,
        shared_dir: str | os.PathLike | None = None,
        is_cancelled: Callable[[], bool] = lambda: False,
    ):
        self.default_interval = interval_s
        self.max_per_domain = max_per_domain
        self.shared_dir = Path(shared_dir) if shared_dir else None
        self._is_cancelled = is_cancelled
        self._cv = threading.Condition()
        self._next: dict[tuple, float] = {}
        self._active: dict[tuple, int] = {}
        self._interval: dict[tuple, float] = {}

    def interval(self, key: tuple) -> float:
        return self._interval.get(key, self.default_interval)

    def set_interval(self, key: tuple, seconds: float) -> None:
        with self._cv:
            self._interval[key] = max(self.default_interval, seconds)

    def next_start(self, key: tuple) -> float:
        return self._next.get(key, 0.0)

    def defer(self, key: tuple, until: float) -> None:
        """No request to this domain starts before `until` (backoff, Retry-After)."""
        with self._cv:
            if until > self._next.get(key, 0.0):
                self._next[key] = until
            self._shared(key, until, 0.0)

    def _shared(self, key: tuple, start: float, interval: float) -> float:
        """Reserve `start` (monotonic) or the next free time after it in the domain's shared file,
        which then holds that time + interval. Returns the reserved start (monotonic)."""
        if self.shared_dir is None:
            return start
        self.shared_dir.mkdir(parents=True, exist_ok=True)
        name = sha256_bytes(repr(key).encode())[:32]
        offset = time.time() - time.monotonic()  # the file holds wall-clock times, shared between processes
        with open(self.shared_dir / name, "a+") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            fh.seek(0)
            try:
                booked = float(fh.read().strip() or 0.0)
            except ValueError:  # a torn or foreign file: start afresh
                booked = 0.0
            wall = max(start + offset, booked)
            if interval or wall > booked:
                fh.seek(0)
                fh.truncate()
                fh.write(repr(wall + interval))
                fh.flush()
        return wall - offset

    @contextlib.contextmanager
    def slot(self, key: tuple):
        with self._cv:
            while self._active.get(key, 0) >= self.max_per_domain:
                if self._is_cancelled():
                    raise Fail(CANCELLED, "cancelled while waiting for a free slot of the domain")
                self._cv.wait(POLL_S)
            self._active[key] = self._active.get(key, 0) + 1
            start = max(time.monotonic(), self._next.get(key, 0.0))
            start = self._shared(key, start, self.interval(key))
            self._next[key] = start + self.interval(key)
        try:
            while (delay := start - time.monotonic()) > 0:  # in slices: a Retry-After can be minutes
                if self._is_cancelled():
                    raise Fail(CANCELLED, "cancelled while waiting for the domain's rate limit")
                time.sleep(min(delay, POLL_S))
            yield
        finally:
            with self._cv:
                self._active[key] -= 1
                if not self._active[key]:
                    del self._active[key]
                self._cv.notify_all()
