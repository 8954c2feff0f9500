"""`Downloader.fetch_many`'s dispatcher: many URLs, one result per distinct canonical URL, fetched
by a thread pool and handed out per domain, round robin, only when that domain may start a request,
so a slow or rate-limited domain does not tie up the workers."""

from __future__ import annotations

import concurrent.futures as cf
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator

from pipeline.sources.download.deadlines import POLL_S
from pipeline.sources.download.domains import DomainLimiter, domain_key
from pipeline.sources.download.results import FetchResult, cancelled_result, invalid_result
from pipeline.sources.download.urls import canonicalize_url


class BatchFetch:
    """The state of one fetch_many call. `urls` is read lazily, `lookahead` at a time; later
    spellings of an already seen URL are skipped; invalid URLs give an `invalid_url` result each.
    `fetch_one(canonical, t0)` fetches one URL in a worker thread."""

    def __init__(
        self,
        urls: Iterable[str],
        fetch_one: Callable[[str, float], FetchResult],
        limiter: DomainLimiter,
        *,
        max_workers: int,
        max_per_domain: int,
        lookahead: int,
        is_cancelled: Callable[[], bool],
    ):
        self._source = iter(urls)
        self._fetch_one = fetch_one
        self._limiter = limiter
        self._max_workers = max_workers
        self._max_per_domain = max_per_domain
        self._lookahead = lookahead
        self._is_cancelled = is_cancelled
        self._seen: set[str] = set()
        self._pending: dict[tuple, deque] = {}
        self._order: list[tuple] = []  # domains with pending work, in round-robin order
        self._buffered = 0
        self._exhausted = False
        self._inflight: dict[cf.Future, tuple] = {}
        self._dom_inflight: dict[tuple, int] = {}
        self._planned: dict[tuple, float] = {}  # earliest next start we may dispatch per domain

    def results(self) -> Iterator[FetchResult]:
        """Every result, as it finishes."""
        pool = cf.ThreadPoolExecutor(self._max_workers, thread_name_prefix="toonface-dl")
        try:
            while True:
                if self._is_cancelled():  # read no more; what was read but not started comes back cancelled
                    yield from self._abandon_unstarted()
                yield from self._read_ahead()
                wake = self._dispatch(pool)
                if not self._inflight and not self._pending and self._exhausted:
                    return
                timeout = None if wake is None else max(0.0, wake - time.monotonic())
                if not self._inflight:
                    time.sleep(min(timeout if timeout is not None else 0.01, POLL_S))
                    continue
                yield from self._collect(timeout)
        finally:
            for fut in self._inflight:
                fut.cancel()
            pool.shutdown(wait=False, cancel_futures=True)

    def _abandon_unstarted(self) -> Iterator[FetchResult]:
        self._exhausted = True
        for key in self._order:
            for canonical in self._pending[key]:
                yield cancelled_result(canonical, "cancelled before it started")
        self._pending.clear()
        self._order.clear()
        self._buffered = 0

    def _read_ahead(self) -> Iterator[FetchResult]:
        """Queue URLs per domain until `lookahead` wait; the results of invalid ones."""
        while not self._exhausted and self._buffered < self._lookahead:
            try:
                raw = next(self._source)
            except StopIteration:
                self._exhausted = True
                break
            t0 = time.monotonic()
            try:
                canonical = canonicalize_url(raw)
            except ValueError as exc:
                yield invalid_result(raw, exc, t0)
                continue
            if canonical in self._seen:
                continue
            self._seen.add(canonical)
            key = domain_key(canonical)
            if key not in self._pending:
                self._pending[key] = deque()
                self._order.append(key)
            self._pending[key].append(canonical)
            self._buffered += 1

    def _dispatch(self, pool: cf.ThreadPoolExecutor) -> float | None:
        """Start what may start now, domain by domain; the earliest time a domain that has to wait
        may start (None when none has to)."""
        now = time.monotonic()
        wake = None
        served = []
        for key in list(self._order):
            started, start = self._start_domain(key, pool, now)
            if started:
                served.append(key)
            if start is not None:
                wake = start if wake is None else min(wake, start)
            if len(self._inflight) >= self._max_workers:
                break
        for key in served:  # round robin: served domains go to the back
            if key in self._pending:
                self._order.remove(key)
                if self._pending[key]:
                    self._order.append(key)
                else:
                    del self._pending[key]
                    self._planned.pop(key, None)
        return wake

    def _start_domain(self, key: tuple, pool: cf.ThreadPoolExecutor, now: float) -> tuple[int, float | None]:
        """Start this domain's queued URLs while a worker and the domain are free: (how many
        started, when the next one may start if the rate limit holds it back)."""
        queue = self._pending[key]
        started = 0
        while (
            queue and len(self._inflight) < self._max_workers and self._dom_inflight.get(key, 0) < self._max_per_domain
        ):
            start = max(self._limiter.next_start(key), self._planned.get(key, 0.0))
            if start > now:
                return started, start
            canonical = queue.popleft()
            self._buffered -= 1
            fut = pool.submit(self._fetch_one, canonical, time.monotonic())
            self._inflight[fut] = key
            self._dom_inflight[key] = self._dom_inflight.get(key, 0) + 1
            self._planned[key] = now + self._limiter.interval(key)
            started += 1
        return started, None

    def _collect(self, timeout: float | None) -> Iterator[FetchResult]:
        """Wait (up to `timeout`) for fetches to finish; their results."""
        done, _ = cf.wait(list(self._inflight), timeout=timeout, return_when=cf.FIRST_COMPLETED)
        for fut in done:
            key = self._inflight.pop(fut)
            self._dom_inflight[key] -= 1
            if not self._dom_inflight[key]:
                del self._dom_inflight[key]
            yield fut.result()
