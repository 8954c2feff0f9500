"""Sending requests: the address check, the domain's slot, the attempt's deadline, retries with
backoff, and reading bodies within limits. Every failure comes out as `Fail` or `Retry`.

Size and time bounds: `Content-Length` above `max_bytes` is refused before the body is read, and the
body is counted while streaming (after Content-Encoding decoding, so a gzip bomb stops at
`max_bytes` too); `total_timeout` is a wall-clock limit on each request attempt (each retry, each
redirect hop, each robots.txt request) from connect to last body byte. A fetch therefore takes at
most about (retries + 1) * total_timeout per hop, plus backoff and rate-limit waits. A 429/5xx/
timeout pushes the whole domain back (the backoff delay, or `Retry-After`), not only the one request."""

from __future__ import annotations

import contextlib
import random
import socket
import time
import urllib.parse
from collections.abc import Callable

import requests
import urllib3
from urllib3.exceptions import NameResolutionError

from pipeline.sources.download.addresses import AddressGuard, PrivateAddressError
from pipeline.sources.download.connection import guarded_session
from pipeline.sources.download.deadlines import Attempt, Watchdog, set_current_attempt
from pipeline.sources.download.domains import DomainLimiter
from pipeline.sources.download.reasons import (
    CANCELLED,
    CONNECTION_ERROR,
    INVALID_URL,
    PRIVATE_ADDRESS,
    TIMEOUT,
    TOO_LARGE,
    TOO_MANY_REQUESTS,
    TRUNCATED,
)
from pipeline.sources.download.results import (
    Fail,
    FetchState,
    Redirect,
    Retry,
    content_length,
    parse_retry_after,
    socket_of,
)
from pipeline.sources.download.settings import DownloadSettings
from pipeline.sources.download.urls import canonicalize_url

_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_RETRY_STATUS = frozenset({429, 500, 502, 503, 504})
_DRAIN_MAX = 64 * 1024
_CHUNK = 64 * 1024


def redirect_target(current: str, location: str) -> str:
    """The canonical URL a redirect's Location points to; Fail(invalid_url) when it is not one."""
    try:  # http.client decodes headers as latin-1; servers send UTF-8
        location = location.encode("latin-1").decode("utf-8")
    except UnicodeError:
        pass
    try:
        return canonicalize_url(urllib.parse.urljoin(current, location.strip()))
    except ValueError as exc:
        raise Fail(INVALID_URL, f"redirect to {location!r}: {exc}") from None


class Requester:
    """One request at a time, for the downloader and its robots.txt cache: each attempt waits for
    the domain's slot and runs under the watchdog; transient failures are retried with backoff."""

    def __init__(
        self,
        settings: DownloadSettings,
        guard: AddressGuard,
        limiter: DomainLimiter,
        watchdog: Watchdog,
        is_cancelled: Callable[[], bool],
    ):
        self._settings = settings
        self._guard = guard
        self._limiter = limiter
        self._watchdog = watchdog
        self._is_cancelled = is_cancelled
        self._rng = random.Random()
        self._session = guarded_session(
            guard, user_agent=settings.user_agent, max_workers=settings.max_workers, verify=settings.verify
        )
        self._timeout = (
            min(settings.connect_timeout, settings.total_timeout),
            min(settings.read_timeout, settings.total_timeout),
        )

    def close(self) -> None:
        self._session.close()

    def precheck(self, host: str, port: int, home: tuple[str, int]) -> None:
        """Resolve and vet the host before anything is sent to it (home: the origin the fetch started at)."""
        try:
            self._guard.resolve(host, port, home)
        except PrivateAddressError as exc:
            raise Fail(PRIVATE_ADDRESS, str(exc)) from None
        except socket.gaierror as exc:
            if exc.errno == socket.EAI_AGAIN:
                raise Retry(CONNECTION_ERROR, f"DNS lookup of {host} failed (temporary): {exc}") from None
            raise Fail(CONNECTION_ERROR, f"DNS lookup of {host} failed: {exc}") from None
        except UnicodeError as exc:
            raise Fail(INVALID_URL, f"host {host!r}: {exc}") from None

    def _backoff(self, retry_index: int) -> float:
        delay = min(self._settings.backoff_max_s, self._settings.backoff_base_s * (2**retry_index))
        return delay / 2 + self._rng.uniform(0, delay / 2)  # "equal jitter": at least half the delay

    def request_with_retries(
        self, url: str, key: tuple, handler, st: FetchState | None, accept: str, home: tuple[str, int]
    ):
        """handler(response, deadline) of the first attempt that neither fails nor asks to be retried;
        Fail when it fails or the retries are spent. `st` (None for robots.txt) counts the attempts."""
        for i in range(self._settings.retries + 1):
            if self._is_cancelled():
                raise Fail(CANCELLED, "the downloader was cancelled")
            if st is not None:
                st.attempts += 1
            try:
                self.precheck(key[0], key[1], home)
                return self._attempt(url, key, handler, st, accept)
            except Retry as r:
                final = r.reason
                if i == self._settings.retries:
                    raise Fail(final, f"{r.detail} (after {i + 1} attempts)") from None
                if r.retry_after is not None:
                    if r.retry_after > self._settings.max_retry_after_s:
                        raise Fail(
                            final,
                            f"{r.detail}; Retry-After {r.retry_after:.0f} s is above "
                            f"max_retry_after_s={self._settings.max_retry_after_s:g}",
                        ) from None
                    delay = r.retry_after
                else:
                    delay = self._backoff(i)
                # The whole domain waits, not only this request: the server asked us to slow down.
                self._limiter.defer(key, time.monotonic() + delay)
        raise AssertionError("unreachable")

    def _attempt(self, url: str, key: tuple, handler, st: FetchState | None, accept: str):
        with self._limiter.slot(key):
            # The watchdog shuts the attempt's sockets down at the deadline or on cancel(); the
            # connection layer, running in this thread, finds the attempt through current_attempt().
            att = self._watchdog.begin(time.monotonic() + self._settings.total_timeout)
            set_current_attempt(att)
            try:
                return self._attempt_watched(att, url, handler, st, accept)
            finally:
                set_current_attempt(None)
                self._watchdog.end(att)

    def _aborted(self, att: Attempt, what: str, exc: BaseException | None) -> Exception:
        """The failure of an attempt the watchdog aborted; `exc` is what the shut-down socket caused."""
        cause = getattr(exc, "detail", None) or (f"{type(exc).__name__}: {exc}" if exc is not None else "")
        cause = f" ({cause})" if cause else ""
        if att.aborted == CANCELLED:
            return Fail(CANCELLED, f"cancelled while waiting for {what}{cause}")
        limit = self._settings.total_timeout
        return Retry(TIMEOUT, f"{what} not complete within total_timeout={limit:g} s{cause}")

    def _attempt_watched(self, att: Attempt, url: str, handler, st: FetchState | None, accept: str):
        try:
            resp = self._get(url, accept)
        except Exception as exc:
            if att.aborted:  # whatever the shut-down socket looked like (reset, EOF, TLS error)
                raise self._aborted(att, "the connection or the response headers", exc) from None
            raise
        try:
            if st is not None:
                st.http_status = resp.status_code
                st.content_type = resp.headers.get("Content-Type")
            if att.aborted:  # the shutdown's EOF ends header parsing early, without an error
                raise self._aborted(att, "the response headers", None)
            if time.monotonic() > att.deadline:
                raise Retry(
                    TIMEOUT, f"response headers took longer than total_timeout={self._settings.total_timeout:g} s"
                )
            try:
                result = handler(resp, att.deadline)
            except Exception as exc:
                # A cut body reads as truncated or as a decoding error: report why it was cut.
                if att.aborted == CANCELLED or (att.aborted and getattr(exc, "reason", None) != TIMEOUT):
                    raise self._aborted(att, "the body", exc) from None
                raise
            if att.aborted:  # a body cut by the shutdown can look complete (no Content-Length)
                raise self._aborted(att, "the body", None)
            return result
        finally:
            resp.close()

    def _get(self, url: str, accept: str) -> requests.Response:
        """The request up to the response headers; every failure as Fail or Retry."""
        try:
            return self._session.get(
                url, headers={"Accept": accept}, stream=True, allow_redirects=False, timeout=self._timeout
            )
        except PrivateAddressError as exc:
            raise Fail(PRIVATE_ADDRESS, str(exc)) from None
        except requests.exceptions.Timeout as exc:
            raise Retry(TIMEOUT, f"{type(exc).__name__}: {exc}") from None
        except requests.exceptions.SSLError as exc:
            raise Fail(CONNECTION_ERROR, f"TLS: {exc}") from None
        except requests.exceptions.ConnectionError as exc:
            private = _find_cause(exc, PrivateAddressError)
            if private is not None:
                raise Fail(PRIVATE_ADDRESS, str(private)) from None
            if _find_cause(exc, NameResolutionError) is not None:
                raise Fail(CONNECTION_ERROR, f"DNS: {exc}") from None
            raise Retry(CONNECTION_ERROR, f"{type(exc).__name__}: {exc}") from None
        except (
            requests.exceptions.InvalidURL,
            requests.exceptions.InvalidSchema,
            requests.exceptions.MissingSchema,
            requests.exceptions.URLRequired,
        ) as exc:
            raise Fail(INVALID_URL, str(exc)) from None
        except requests.exceptions.RequestException as exc:
            raise Fail(CONNECTION_ERROR, f"{type(exc).__name__}: {exc}") from None

    def read_body(self, resp: requests.Response, deadline: float, limit: int, *, cut_at_limit: bool = False) -> bytes:
        """Stream the (decoded) body, at most `limit` bytes (too_large beyond, or cut there when
        `cut_at_limit`), within `deadline`."""
        sock = socket_of(resp)
        raw = resp.raw
        chunks = []
        total = 0
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise Retry(
                    TIMEOUT,
                    f"body not complete within total_timeout={self._settings.total_timeout:g} s ({total} bytes read)",
                )
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.settimeout(min(self._settings.read_timeout, left))
            try:
                chunk = raw.read1(_CHUNK, decode_content=True)
            except urllib3.exceptions.ReadTimeoutError as exc:
                which = "total_timeout" if time.monotonic() >= deadline - 0.001 else "read_timeout"
                raise Retry(TIMEOUT, f"{which} while reading the body ({total} bytes read): {exc}") from None
            except urllib3.exceptions.DecodeError as exc:
                raise Fail(CONNECTION_ERROR, f"bad Content-Encoding: {exc}") from None
            except (urllib3.exceptions.HTTPError, OSError, requests.exceptions.RequestException) as exc:
                raise Retry(TRUNCATED, f"connection cut after {total} bytes: {exc}") from None
            if not chunk:
                break
            total += len(chunk)
            if total > limit:
                if cut_at_limit:
                    chunks.append(chunk[: len(chunk) - (total - limit)])
                    return b"".join(chunks)
                raise Fail(TOO_LARGE, f"body above max_bytes={limit}")
            chunks.append(chunk)
        length = content_length(resp)
        if length is not None and raw.tell() < length:
            raise Retry(TRUNCATED, f"{raw.tell()} of {length} bytes (Content-Length)")
        return b"".join(chunks)

    def drain(self, resp: requests.Response, deadline: float) -> None:
        """Read a small unwanted body (redirect, error page) so the connection can be reused."""
        length = content_length(resp)
        if length is None or length > _DRAIN_MAX:
            return
        with contextlib.suppress(Exception):
            self.read_body(resp, min(deadline, time.monotonic() + 1.0), _DRAIN_MAX)

    def _retryable_status(self, resp: requests.Response, deadline: float, status: int):
        retry_after = parse_retry_after(resp.headers.get("Retry-After")) if status in (429, 503) else None
        self.drain(resp, deadline)
        reason = TOO_MANY_REQUESTS if status == 429 else f"http_{status}"
        detail = f"HTTP {status}" + (f", Retry-After {retry_after:.1f} s" if retry_after is not None else "")
        return Retry(reason, detail, retry_after)

    def redirect_or_retry(self, resp: requests.Response, deadline: float) -> Redirect | None:
        """The statuses every response shares: a redirect to follow, or one to retry (raises)."""
        status = resp.status_code
        if status in _REDIRECTS and resp.headers.get("Location"):
            location = resp.headers["Location"]
            self.drain(resp, deadline)
            return Redirect(location)
        if status in _RETRY_STATUS:
            raise self._retryable_status(resp, deadline, status)
        return None


def _find_cause(exc: BaseException, kind: type) -> BaseException | None:
    """Walk __cause__/__context__ and exception args for an instance of `kind`."""
    seen = set()
    stack = [exc]
    while stack:
        e = stack.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, kind):
            return e
        stack.extend([e.__cause__, e.__context__, getattr(e, "reason", None)])
        stack.extend(a for a in getattr(e, "args", ()) if isinstance(a, BaseException))
    return None
