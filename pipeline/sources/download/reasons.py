"""Reason codes: every failed `FetchResult.reason` is a key of `REASONS`, or `http_<code>`."""

from __future__ import annotations

import re

INVALID_URL = "invalid_url"
PRIVATE_ADDRESS = "private_address"
ROBOTS_DISALLOWED = "robots_disallowed"
ROBOTS_UNAVAILABLE = "robots_unavailable"
X_ROBOTS_TAG = "x_robots_tag"
TIMEOUT = "timeout"
CONNECTION_ERROR = "connection_error"
TOO_MANY_REQUESTS = "too_many_requests"
TOO_MANY_REDIRECTS = "too_many_redirects"
REDIRECT_LOOP = "redirect_loop"
TOO_LARGE = "too_large"
TRUNCATED = "truncated"
WRONG_CONTENT_TYPE = "wrong_content_type"
NOT_AN_IMAGE = "not_an_image"
CANCELLED = "cancelled"
INTERNAL_ERROR = "internal_error"

#: Every `FetchResult.reason` is one of these keys, or `http_<code>` (see `is_reason`).
REASONS: dict[str, str] = {
    INVALID_URL: "not an absolute http(s) URL, or a redirect Location that is not one",
    PRIVATE_ADDRESS: "the host resolves to a non-public address and its host:port is not allowed by "
    "allow_private_hosts; nothing was sent to it",
    ROBOTS_DISALLOWED: "robots.txt disallows this URL for our user agent; nothing was requested",
    ROBOTS_UNAVAILABLE: "robots.txt answered 429/5xx or could not be fetched: the host is treated as "
    "fully disallowed (RFC 9309)",
    X_ROBOTS_TAG: "the response carries an X-Robots-Tag that forbids our use (noai, noimageai; "
    "none/noindex when honour_noindex); the body was discarded",
    TIMEOUT: "connect or read timeout, or total_timeout: the wall-clock limit of one request attempt from "
    "connect to last body byte, headers and TLS handshake included (after the retries)",
    CONNECTION_ERROR: "DNS failure, refused/reset connection, TLS error, bad content encoding "
    "(after the retries where transient)",
    "http_<code>": "the final response had this status, e.g. http_404, http_500 (after the retries "
    "for 500/502/503/504); any status other than 200/203 and the followed redirects",
    TOO_MANY_REQUESTS: "HTTP 429 after the retries, or a Retry-After above max_retry_after_s",
    TOO_MANY_REDIRECTS: "more than max_redirects redirect hops",
    REDIRECT_LOOP: "a redirect back to a URL already visited in this fetch",
    TOO_LARGE: "Content-Length, or the bytes actually received, above max_bytes",
    TRUNCATED: "the body ended before Content-Length, or the connection was cut mid-body",
    WRONG_CONTENT_TYPE: "Content-Type does not fit `expect` (image: image/*, application/octet-stream "
    "or none; html: text/html or application/xhtml+xml)",
    NOT_AN_IMAGE: "the bytes are not an image format we decode (magic bytes), whatever the Content-Type said",
    CANCELLED: "Downloader.cancel() was called (e.g. on SIGTERM) before or during this fetch; an "
    "in-flight request was abandoned",
    INTERNAL_ERROR: "a bug in this module (an unexpected exception); please report it",
}

_HTTP_REASON = re.compile(r"^http_[1-5][0-9][0-9]$")


def is_reason(code: str) -> bool:
    """True for every reason code the downloader can produce."""
    return code in REASONS or bool(_HTTP_REASON.match(code))
