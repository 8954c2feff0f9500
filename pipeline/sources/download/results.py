"""What a fetch returns (`FetchResult`), the failures that lead to one, and small readers of a
response's headers.

Every failure is a `FetchResult` with `ok=False` and a stable `reason` (see `REASONS`); `fetch` and
`fetch_many` never raise for anything the network or the server does."""

from __future__ import annotations

import dataclasses
import email.utils
import time

import requests

from pipeline.sources.download.reasons import CANCELLED, INVALID_URL
from pipeline.sources.download.urls import DIGITS


@dataclasses.dataclass(kw_only=True)
class FetchResult:
    url: str  # canonical URL (the input as given when it is not a valid URL)
    final_url: str  # canonical URL of the last hop requested (after redirects)
    ok: bool
    reason: str | None  # None when ok; else a code from REASONS or http_<code>
    http_status: int | None = None  # status of the last response received
    content_type: str | None = None  # Content-Type header of the last response received
    data: bytes | None = None  # the body, only when ok
    sha256: str | None = None  # sha256 of data, only when ok
    format: str | None = None  # image format from the magic bytes (expect="image"), only when ok
    attempts: int = 0  # HTTP requests sent for this URL: retries and redirect hops (not robots.txt)
    elapsed_s: float = 0.0  # wall time, including waiting for the per-domain rate limit
    detail: str = ""  # human-readable explanation of the reason


class Fail(Exception):
    """A final failure: its reason and detail become the fetch's result."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(reason, detail)
        self.reason = reason
        self.detail = detail


class Retry(Exception):
    """A transient failure: retried, and becomes a Fail when the retries are spent."""

    def __init__(self, reason: str, detail: str = "", retry_after: float | None = None):
        super().__init__(reason, detail)
        self.reason = reason
        self.detail = detail
        self.retry_after = retry_after


@dataclasses.dataclass
class FetchState:
    """What one fetch has seen so far, for its result however it ends."""

    final_url: str
    attempts: int = 0
    http_status: int | None = None
    content_type: str | None = None

    def result(self, url: str, t0: float, *, ok: bool, reason: str | None, detail: str = "", **body) -> FetchResult:
        """The fetch's result as it ends now (`body`: data, sha256 and format of a success)."""
        return FetchResult(
            url=url,
            final_url=self.final_url,
            ok=ok,
            reason=reason,
            http_status=self.http_status,
            content_type=self.content_type,
            attempts=self.attempts,
            elapsed_s=time.monotonic() - t0,
            detail=detail,
            **body,
        )


@dataclasses.dataclass
class Redirect:
    """A response that says: go to `location` (followed by hand, hop by hop)."""

    location: str


def parse_retry_after(value: str | None) -> float | None:
    if not value:
        return None
    value = value.strip()
    if DIGITS.match(value):
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - time.time())


def content_length(resp: requests.Response) -> int | None:
    value = resp.headers.get("Content-Length")
    if value is None:
        return None
    values = {v.strip() for v in value.split(",")}
    if len(values) != 1 or not DIGITS.match(next(iter(values))):
        return None
    return int(values.pop())


def media_type(resp: requests.Response) -> str:
    return (resp.headers.get("Content-Type") or "").split(";", 1)[0].strip().lower()


def looks_like_html(data: bytes) -> bool:
    head = data[:1024].lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    return head.startswith((b"<!doctype html", b"<html", b"<head", b"<!--"))


def socket_of(resp: requests.Response):
    conn = getattr(resp.raw, "connection", None) or getattr(resp.raw, "_connection", None)
    return getattr(conn, "sock", None)


def cancelled_result(canonical: str, detail: str) -> FetchResult:
    """A fetch abandoned by cancel() before it sent anything."""
    return FetchResult(url=canonical, final_url=canonical, ok=False, reason=CANCELLED, detail=detail)


def invalid_result(url, exc: Exception, t0: float) -> FetchResult:
    """A URL that is not an absolute http(s) URL (`url` as given, repr() when not even a str)."""
    text = url if isinstance(url, str) else repr(url)
    return FetchResult(
        url=text, final_url=text, ok=False, reason=INVALID_URL, elapsed_s=time.monotonic() - t0, detail=str(exc)
    )
