"""The `Downloader`: fetch one URL or many, following redirects by hand.

Redirects are followed by hand (`allow_redirects=False`): every hop is canonicalised, checked for
private addresses and robots.txt, and rate limited; a hop back to an already visited URL is a
`redirect_loop`; more than `max_redirects` hops is `too_many_redirects`."""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator

import requests

from pipeline.decode import sniff_format
from pipeline.sources.download.addresses import AddressGuard
from pipeline.sources.download.batch import BatchFetch
from pipeline.sources.download.deadlines import Watchdog
from pipeline.sources.download.domains import DomainLimiter
from pipeline.sources.download.reasons import (
    INTERNAL_ERROR,
    NOT_AN_IMAGE,
    REDIRECT_LOOP,
    TOO_LARGE,
    TOO_MANY_REDIRECTS,
    WRONG_CONTENT_TYPE,
    X_ROBOTS_TAG,
)
from pipeline.sources.download.requesting import Requester, redirect_target
from pipeline.sources.download.results import (
    Fail,
    FetchResult,
    FetchState,
    Redirect,
    Retry,
    cancelled_result,
    content_length,
    invalid_result,
    looks_like_html,
    media_type,
)
from pipeline.sources.download.robots import RobotsCache, x_robots_block
from pipeline.sources.download.settings import DownloadSettings
from pipeline.sources.download.urls import canonicalize_url, url_parts
from pipeline.store import sha256_bytes

_ACCEPT = {
    # Only formats pipeline.decode understands, so content negotiation does not hand us AVIF/JXL.
    "image": "image/jpeg,image/png,image/webp,image/gif,image/bmp,image/tiff;q=0.9,*/*;q=0.1",
    "html": "text/html,application/xhtml+xml;q=0.9,*/*;q=0.1",
    "any": "*/*",
}
_OCTET = frozenset({"", "application/octet-stream", "binary/octet-stream", "application/binary"})
_HTML_TYPES = frozenset({"text/html", "application/xhtml+xml"})


def _check_expect(expect: str) -> None:
    if expect not in _ACCEPT:
        raise ValueError(f"expect must be one of {sorted(_ACCEPT)}, not {expect!r}")


class Downloader:
    """Polite concurrent fetcher; see the package docstring and `DownloadSettings`. Thread-safe
    (fetch may be called from several threads; all share one rate limiter, robots cache and
    connection pool); use as a context manager or call close(). `cancel()` (safe in a signal
    handler) abandons everything in flight and makes it unusable: see there."""

    def __init__(self, settings: DownloadSettings | None = None):
        settings = settings or DownloadSettings()
        self.settings = settings
        self.agent_token = settings.agent_token
        self._blocking_directives = frozenset(
            {"noai", "noimageai"} | ({"none", "noindex"} if settings.honour_noindex else set())
        )
        self._guard = AddressGuard(settings.allow_private_hosts, settings.dns_cache_ttl_s)
        self._cancel_requested = False  # a plain bool: cancel() must be safe in a signal handler
        self._watchdog = Watchdog(self._is_cancelled)
        self._limiter = DomainLimiter(
            settings.min_interval_s, settings.max_per_domain, settings.rate_limit_dir, self._is_cancelled
        )
        self._requester = Requester(settings, self._guard, self._limiter, self._watchdog, self._is_cancelled)
        self._robots = RobotsCache(settings, self._requester, self._limiter, self._is_cancelled)

    # -- lifecycle ---------------------------------------------------------------------------------

    def close(self) -> None:
        """Release pooled connections (a later fetch opens new ones). Does not cancel: see cancel()."""
        self._requester.close()

    def cancel(self) -> None:
        """Abandon every fetch in flight and refuse new ones, for good (e.g. from a SIGTERM handler).

        Returns at once; it only sets a flag, so it is safe in a signal handler and from any thread.
        Within about 0.1 s every blocked request has its socket shut down (connect, TLS handshake,
        headers or body) and every wait (rate limit, Retry-After, robots.txt of another thread)
        gives up: those fetches, and every later `fetch`, return `ok=False, reason="cancelled"`
        (attempts 0 when nothing was sent). `fetch_many` stops reading `urls`, yields the in-flight
        fetches as they return and every URL it had read but not started, all `cancelled`, then
        ends. Not interruptible: a system DNS lookup in progress (see Known limits)."""
        self._cancel_requested = True

    @property
    def cancelled(self) -> bool:
        return self._cancel_requested

    def _is_cancelled(self) -> bool:  # what every wait polls: the flag as it is now
        return self._cancel_requested

    def __enter__(self) -> Downloader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- public API --------------------------------------------------------------------------------

    def fetch(self, url: str, expect: str = "image") -> FetchResult:
        """Fetch one URL; never raises for network or content problems."""
        _check_expect(expect)
        t0 = time.monotonic()
        try:
            canonical = canonicalize_url(url)
        except ValueError as exc:
            return invalid_result(url, exc, t0)
        return self._fetch_canonical(canonical, expect, t0)

    def fetch_many(self, urls: Iterable[str], expect: str = "image") -> Iterator[FetchResult]:
        """Fetch many URLs concurrently (max_workers threads); one result per distinct canonical URL
        (later spellings of an already seen URL are skipped), yielded as they finish. Invalid URLs
        give an `invalid_url` result each. `urls` is read lazily, `lookahead` at a time; work is
        dispatched per domain, round robin, only when that domain may start a request, so a slow or
        rate-limited domain does not tie up the workers."""
        _check_expect(expect)
        batch = BatchFetch(
            urls,
            lambda canonical, t0: self._fetch_canonical(canonical, expect, t0),
            self._limiter,
            max_workers=self.settings.max_workers,
            max_per_domain=self.settings.max_per_domain,
            lookahead=self.settings.fetch_many_lookahead,
            is_cancelled=self._is_cancelled,
        )
        yield from batch.results()

    # -- one URL -----------------------------------------------------------------------------------

    def _fetch_canonical(self, canonical: str, expect: str, t0: float) -> FetchResult:
        if self._cancel_requested:
            return cancelled_result(canonical, "the downloader was cancelled; nothing was requested")
        st = FetchState(final_url=canonical)
        try:
            data, fmt = self._follow(canonical, expect, st)
        except (Fail, Retry) as f:  # a Retry here is a transient DNS failure outside the retry loop
            return st.result(canonical, t0, ok=False, reason=f.reason, detail=f.detail)
        except Exception as exc:  # a bug: still a result, never an exception
            return st.result(canonical, t0, ok=False, reason=INTERNAL_ERROR, detail=f"{type(exc).__name__}: {exc}")
        return st.result(canonical, t0, ok=True, reason=None, data=data, sha256=sha256_bytes(data), format=fmt)

    def _follow(self, canonical: str, expect: str, st: FetchState) -> tuple[bytes, str | None]:
        max_redirects = self.settings.max_redirects
        current = canonical
        visited = {canonical}
        home = url_parts(canonical)[1:]  # the origin asked for: what a port-less allow-list entry covers
        for hop in range(max_redirects + 1):
            st.final_url = current
            scheme, host, port = url_parts(current)
            key = (host, port)
            self._requester.precheck(host, port, home)
            if self.settings.obey_robots:
                self._robots.check(scheme, host, port, current)
            outcome = self._requester.request_with_retries(
                current, key, lambda r, d: self._handle(r, d, expect), st, _ACCEPT[expect], home
            )
            if not isinstance(outcome, Redirect):
                return outcome
            target = redirect_target(current, outcome.location)
            if target in visited:
                raise Fail(REDIRECT_LOOP, f"{current} redirects back to {target}")
            if hop == max_redirects:
                raise Fail(TOO_MANY_REDIRECTS, f"more than {max_redirects} redirects (next: {target})")
            visited.add(target)
            current = target
        raise AssertionError("unreachable")

    # -- response handling -------------------------------------------------------------------------

    def _handle(self, resp: requests.Response, deadline: float, expect: str):
        """A redirect to follow, or (body, image format) of a response that is what we asked for."""
        status = resp.status_code
        redirect = self._requester.redirect_or_retry(resp, deadline)
        if redirect is not None:
            return redirect
        if status not in (200, 203):
            self._requester.drain(resp, deadline)
            raise Fail(f"http_{status}", f"HTTP {status} {resp.reason or ''}".strip())
        blocked = x_robots_block(resp, self.agent_token, self._blocking_directives)
        if blocked:
            raise Fail(X_ROBOTS_TAG, f"X-Robots-Tag: {blocked}")
        media = media_type(resp)
        if expect == "image" and not (media.startswith("image/") or media in _OCTET):
            raise Fail(WRONG_CONTENT_TYPE, f"Content-Type {media!r} is not an image type")
        if expect == "html" and not (media in _HTML_TYPES or media in _OCTET):
            raise Fail(WRONG_CONTENT_TYPE, f"Content-Type {media!r} is not HTML")
        max_bytes = self.settings.max_bytes
        length = content_length(resp)
        if length is not None and length > max_bytes:
            raise Fail(TOO_LARGE, f"Content-Length {length} > max_bytes={max_bytes}")
        data = self._requester.read_body(resp, deadline, max_bytes)
        return data, _body_format(data, expect, media)


def _body_format(data: bytes, expect: str, media: str) -> str | None:
    """The image format of the body (expect="image"), after checking it is what we asked for."""
    fmt = None
    if expect == "image":
        fmt = sniff_format(data)
        if fmt is None:
            raise Fail(NOT_AN_IMAGE, f"{len(data)} bytes starting {data[:16]!r}, Content-Type {media!r}")
    elif expect == "html" and media not in _HTML_TYPES and not looks_like_html(data):
        raise Fail(WRONG_CONTENT_TYPE, f"Content-Type {media!r} and the body does not look like HTML")
    return fmt
