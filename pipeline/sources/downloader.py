"""A polite, SSRF-safe HTTP downloader for building datasets from the open web.

    from pipeline.sources.downloader import Downloader, canonicalize_url

    with Downloader(max_workers=16, min_interval_s=1.0) as dl:
        for res in dl.fetch_many(urls, expect="image"):
            if res.ok:
                store.put(res.data, EXTENSIONS[res.format])
            else:
                log(res.url, res.reason, res.detail)

What it guarantees
------------------
* Every failure is a `FetchResult` with `ok=False` and a stable `reason` (see `REASONS`); `fetch` and
  `fetch_many` never raise for anything the network or the server does.
* Politeness, per domain (a domain is host + port, so two ports are two domains): two requests to
  the same domain never *start* less than `min_interval_s` apart, across all threads, retries,
  redirect hops and robots.txt fetches; at most `max_per_domain` requests to a domain are in flight
  at once; a robots.txt `Crawl-delay` (seconds, capped by `max_crawl_delay_s`) raises the
  interval for that domain; a 429/5xx/timeout pushes the whole domain back (the backoff delay, or
  `Retry-After`), not only the one request.
* robots.txt (RFC 9309): fetched once per scheme+host+port (cached `robots_ttl_s`), through the same
  rate limiter; 2xx is parsed (first 512 KiB), 4xx means "no rules" (allowed), 429/5xx/timeouts/
  network errors (after the retries) mean "disallow the whole host" for the cache lifetime. Parsing
  and matching follow RFC 9309 (see `_RobotsRules` for why not urllib.robotparser): the group for
  our product token (`user_agent` up to the first '/', case-insensitive, exact) else `*`; the longest
  matching rule wins, Allow wins a tie; `*` and `$` wildcards.
* `X-Robots-Tag` response headers carrying `noai` / `noimageai` (and `none` / `noindex` when
  `honour_noindex=True`), for all agents or for our token (`toonface: noai`), make the body be
  discarded unread: reason `x_robots_tag`.
* No request ever goes to a private, loopback, link-local, multicast, reserved, unspecified,
  CGNAT or otherwise non-global address (IPv4 and IPv6, including IPv4-mapped, NAT64 and 6to4
  forms of those), unless `allow_private_hosts` allows that origin: an entry "host:port" allows
  exactly that port of the host (also as a redirect target); a bare "host" allows the host only at
  the host:port the fetch started at, so a redirect or a robots.txt redirect to another port of an
  allowed host, or from one allowed host to another, is refused. The host is resolved and
  checked before every request and every redirect hop (`private_address`, nothing sent), and the
  connection layer itself is pinned: each new socket connects only to addresses from the same vetted
  resolution (see `_GuardedConnectionMixin`), so DNS rebinding between the check and the connect
  cannot reach an internal address. Environment proxies and .netrc are ignored (`trust_env=False`),
  cookies are never stored or sent.
* Size and time bounds: `Content-Length` above `max_bytes` is refused before the body is read, and
  the body is counted while streaming (after Content-Encoding decoding, so a gzip bomb stops at
  `max_bytes` too); `total_timeout` is a wall-clock limit on each request attempt (each retry, each
  redirect hop, each robots.txt request) from connect to last body byte. A socket timeout restarts
  with every packet, so a server trickling its headers a byte at a time never trips one: a watchdog
  thread shuts the attempt's socket down when the deadline passes, which ends a blocked connect,
  TLS handshake, header read or body read at once (reason `timeout`). A fetch therefore takes at
  most about (retries + 1) * total_timeout per hop, plus backoff and rate-limit waits.
* `cancel()` (safe in a signal handler) abandons every fetch in flight within about 0.1 s, wakes
  every rate-limit / Retry-After / robots.txt wait, and refuses new fetches: all `cancelled`.
* Redirects are followed by hand (`allow_redirects=False`): every hop is canonicalised, checked for
  private addresses and robots.txt, and rate limited; a hop back to an already visited URL is a
  `redirect_loop`; more than `max_redirects` hops is `too_many_redirects`.

Known limits
------------
* DNS lookups go through the system resolver (`socket.getaddrinfo`), which has no timeout of ours.
* Resolutions are cached for `dns_cache_ttl_s` (default 30 s) for speed; the pin means a changed
  record is picked up only after that.
* The HTTP-date form of Retry-After has 1 s resolution.
* HTML `<meta name="robots">` tags are not read (only the `X-Robots-Tag` header).
* The rate limit and robots cache live in one Downloader (one process), unless `rate_limit_dir`
  names a folder: then the spacing of request starts per domain is shared (through locked files) by
  every process that uses that folder, e.g. the workers of a local Dask cluster. Machines that do not
  share a filesystem with working locks do not coordinate, nor does the in-flight limit. Spacing is enforced on request *starts* in the
  client; what the server sees can differ by the send jitter (a few ms).
* No HTTP proxy support (a proxy would defeat the address pin).
* `total_timeout` and `cancel()` can be overrun while the system resolver is blocked (see above).
"""
from __future__ import annotations

import concurrent.futures as cf
import contextlib
import dataclasses
import email.utils
import errno
import http.cookiejar
import ipaddress
import os
import random
import re
import selectors
import socket
import sys
import threading
import time
import urllib.parse
from collections import deque
from pathlib import Path
from typing import Callable, Iterable, Iterator

import requests
import urllib3
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import ConnectTimeoutError, NameResolutionError, NewConnectionError

from pipeline.decode import sniff_format
from pipeline.store import sha256_bytes

# --------------------------------------------------------------------------------------------------
# Reason codes
# --------------------------------------------------------------------------------------------------

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
    NOT_AN_IMAGE: "the bytes are not an image format we decode (magic bytes), whatever the "
                  "Content-Type said",
    CANCELLED: "Downloader.cancel() was called (e.g. on SIGTERM) before or during this fetch; an "
               "in-flight request was abandoned",
    INTERNAL_ERROR: "a bug in this module (an unexpected exception); please report it",
}

_HTTP_REASON = re.compile(r"^http_[1-5][0-9][0-9]$")


def is_reason(code: str) -> bool:
    """True for every reason code this module can produce."""
    return code in REASONS or bool(_HTTP_REASON.match(code))


DEFAULT_USER_AGENT = "toonface/0.1 (+https://github.com/toonface; dataset research crawler)"

#: Query parameters removed by `canonicalize_url` (besides every `utm_*`), compared case-insensitively.
TRACKING_PARAMS = frozenset({
    "fbclid", "gclid", "dclid", "gbraid", "wbraid", "msclkid", "yclid", "twclid", "ttclid",
    "igshid", "mc_cid", "mc_eid", "_ga", "_gl",
})

_ACCEPT = {
    # Only formats pipeline.decode understands, so content negotiation does not hand us AVIF/JXL.
    "image": "image/jpeg,image/png,image/webp,image/gif,image/bmp,image/tiff;q=0.9,*/*;q=0.1",
    "html": "text/html,application/xhtml+xml;q=0.9,*/*;q=0.1",
    "any": "*/*",
}
_OCTET = frozenset({"", "application/octet-stream", "binary/octet-stream", "application/binary"})
_HTML_TYPES = frozenset({"text/html", "application/xhtml+xml"})
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_RETRY_STATUS = frozenset({429, 500, 502, 503, 504})
_ROBOTS_MAX_BYTES = 512 * 1024
_DRAIN_MAX = 64 * 1024
_CHUNK = 64 * 1024


# --------------------------------------------------------------------------------------------------
# URL canonicalisation
# --------------------------------------------------------------------------------------------------

_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
_SUB_DELIMS = "!$&'()*+,;="
_PATH_SAFE = frozenset(_SUB_DELIMS + ":@/")
_QUERY_SAFE = frozenset(_SUB_DELIMS + ":@/?")
_USERINFO_SAFE = frozenset(_SUB_DELIMS + ":")
_HEXDIGITS = frozenset("0123456789abcdefABCDEF")
_DEFAULT_PORTS = {"http": 80, "https": 443}
_HOST_OK = re.compile(r"^[a-z0-9_-]+(\.[a-z0-9_-]+)*$")
_DIGITS = re.compile(r"^[0-9]+$")
_HEXNUM = re.compile(r"^0[xX][0-9a-fA-F]*$")
_OCTNUM = re.compile(r"^0[0-7]+$")


def _normalize_percent(s: str, safe: frozenset) -> str:
    """Decode %XX of unreserved characters, upper-case the other escapes, escape what must be."""
    if "%" not in s and all(c in _UNRESERVED or c in safe for c in s):
        return s
    out = []
    i, n = 0, len(s)
    while i < n:
        c = s[i]
        if c == "%":
            if i + 2 < n and s[i + 1] in _HEXDIGITS and s[i + 2] in _HEXDIGITS:
                hx = s[i + 1:i + 3]
                ch = chr(int(hx, 16))
                out.append(ch if ch in _UNRESERVED else "%" + hx.upper())
                i += 3
                continue
            out.append("%25")  # a stray '%'
        elif c in _UNRESERVED or c in safe:
            out.append(c)
        else:
            out.append("".join(f"%{b:02X}" for b in c.encode("utf-8", "surrogatepass")))
        i += 1
    return "".join(out)


def _remove_dot_segments(path: str) -> str:
    """RFC 3986 section 5.2.4, for a path that starts with '/'."""
    segments = path.split("/")[1:]
    out: list[str] = []
    last = len(segments) - 1
    for i, seg in enumerate(segments):
        if seg == ".":
            if i == last:
                out.append("")
        elif seg == "..":
            if out:
                out.pop()
            if i == last:
                out.append("")
        else:
            out.append(seg)
    return "/" + "/".join(out)


def _ipv4_number(part: str) -> int:
    if _HEXNUM.match(part):
        return int(part[2:] or "0", 16)
    if len(part) > 1 and part[0] == "0":
        if not _OCTNUM.match(part):
            raise ValueError(f"bad octal IPv4 part {part!r}")
        return int(part[1:], 8)
    if _DIGITS.match(part):
        return int(part)
    raise ValueError(f"bad IPv4 part {part!r}")


def _parse_ipv4(host: str) -> str | None:
    """WHATWG host parsing: a host whose last label is a number is an IPv4 address in any of the
    forms inet_aton accepts (127.1, 0x7f.0.0.1, 2130706433, 0177.0.0.1); give it dotted-quad form.
    None when the host is a domain name."""
    parts = host.split(".")
    last = parts[-1]
    if not (_DIGITS.match(last) or _HEXNUM.match(last)):
        return None
    if len(parts) > 4:
        raise ValueError(f"invalid IPv4 host {host!r}")
    nums = [_ipv4_number(p) for p in parts]
    if any(n > 255 for n in nums[:-1]) or nums[-1] >= 256 ** (5 - len(nums)):
        raise ValueError(f"invalid IPv4 host {host!r}")
    value = nums[-1]
    for i, n in enumerate(nums[:-1]):
        value += n * 256 ** (3 - i)
    return str(ipaddress.IPv4Address(value))


def _normalize_hostname(raw: str) -> str:
    host = urllib.parse.unquote(raw, errors="strict")
    if host.endswith("."):
        host = host[:-1]
    if not host:
        raise ValueError("empty host")
    if not host.isascii():
        try:
            import idna  # a dependency of requests; IDNA 2008 with UTS 46 mapping, like browsers
            host = idna.encode(host, uts46=True).decode("ascii")
        except Exception:
            try:
                host = host.encode("idna").decode("ascii")  # IDNA 2003 (stdlib), more lenient
            except UnicodeError as exc:
                raise ValueError(f"invalid international host {raw!r}: {exc}") from None
    host = host.lower()
    ipv4 = _parse_ipv4(host)
    if ipv4 is not None:
        return ipv4
    if not _HOST_OK.match(host) or len(host) > 253 or any(len(label) > 63 for label in host.split(".")):
        raise ValueError(f"invalid host {raw!r}")
    return host


def _split_netloc(netloc: str) -> tuple[str | None, str, int | None]:
    """(userinfo, normalised host, port or None); IPv6 hosts come back in brackets."""
    userinfo, at, hostport = netloc.rpartition("@")
    if not at:
        userinfo = None
    if hostport.startswith("["):
        end = hostport.find("]")
        if end < 0:
            raise ValueError("unterminated IPv6 literal")
        try:
            ip6 = ipaddress.IPv6Address(hostport[1:end])
        except ValueError as exc:
            raise ValueError(f"invalid IPv6 literal: {exc}") from None
        if ip6.scope_id:
            raise ValueError("IPv6 zone identifiers are not allowed")
        host = f"[{ip6.compressed}]"
        rest = hostport[end + 1:]
        if rest and not rest.startswith(":"):
            raise ValueError(f"junk after IPv6 literal: {rest!r}")
        port_s = rest[1:]
    else:
        raw_host, _, port_s = hostport.partition(":")
        host = _normalize_hostname(raw_host)
    port = None
    if port_s:
        if not _DIGITS.match(port_s):
            raise ValueError(f"invalid port {port_s!r}")
        port = int(port_s)
        if not 0 < port <= 65535:
            raise ValueError(f"port out of range: {port}")
    return userinfo, host, port


def _is_tracking(key: str) -> bool:
    name = urllib.parse.unquote(key).lower()
    return name.startswith("utm_") or name in TRACKING_PARAMS


def canonicalize_url(url: str) -> str:
    """One spelling per resource, for URL-level dedup; ValueError when `url` is not an absolute
    http(s) URL with a valid host.

    Lower-case scheme and host; IDN hosts to punycode (IDNA 2008 / UTS 46); numeric IPv4 forms to
    dotted quad; IPv6 literals compressed; a trailing dot on the host dropped; default ports
    dropped; fragment dropped; percent-encoding normalised (escapes of unreserved characters decoded,
    other escapes upper-case, characters that need it escaped as UTF-8, '%2F' / '+' left as they
    are); '.' and '..' path segments resolved; an empty path becomes '/'; empty query pieces dropped;
    tracking parameters (utm_*, fbclid, gclid, ... see TRACKING_PARAMS) removed; the remaining
    parameters sorted by name (stable, so repeated names keep their relative order).
    """
    if not isinstance(url, str):
        raise ValueError(f"URL must be a str, not {type(url).__name__}")
    url = url.strip()
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError as exc:
        raise ValueError(f"unparsable URL: {exc}") from None
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS:
        raise ValueError(f"unsupported scheme {parts.scheme!r}" if scheme else "not an absolute URL")
    if not parts.netloc:
        raise ValueError("URL has no host")
    userinfo, host, port = _split_netloc(parts.netloc)
    netloc = host
    if port is not None and port != _DEFAULT_PORTS[scheme]:
        netloc = f"{host}:{port}"
    if userinfo:
        netloc = f"{_normalize_percent(userinfo, _USERINFO_SAFE)}@{netloc}"
    path = _normalize_percent(parts.path, _PATH_SAFE) or "/"
    if not path.startswith("/"):
        path = "/" + path
    path = _remove_dot_segments(path)
    query = ""
    if parts.query:
        pieces = []
        for piece in parts.query.split("&"):
            if not piece:
                continue
            key, eq, value = piece.partition("=")
            key = _normalize_percent(key, _QUERY_SAFE)
            if _is_tracking(key):
                continue
            pieces.append((key, key + eq + _normalize_percent(value, _QUERY_SAFE)))
        pieces.sort(key=lambda kv: kv[0])
        query = "&".join(p for _, p in pieces)
    return f"{scheme}://{netloc}{path}" + (f"?{query}" if query else "")


def _url_parts(canonical: str) -> tuple[str, str, int]:
    """(scheme, host without brackets, effective port) of a canonical URL."""
    parts = urllib.parse.urlsplit(canonical)
    _, host, port = _split_netloc(parts.netloc)
    return parts.scheme, host.strip("[]"), port or _DEFAULT_PORTS[parts.scheme]


# --------------------------------------------------------------------------------------------------
# Address checks (SSRF guard)
# --------------------------------------------------------------------------------------------------

_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_EXTRA_BLOCKED = (
    ipaddress.ip_network("64:ff9b:1::/48"),  # local-use NAT64 (RFC 8215)
    ipaddress.ip_network("100.64.0.0/10"),  # CGNAT shared space (is_global is False, but be explicit)
)


def is_public_address(addr: str | ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """False for private, loopback, link-local, site-local, multicast, reserved, unspecified,
    CGNAT and documentation addresses, and for IPv6 forms that embed such an IPv4 address
    (IPv4-mapped ::ffff:a.b.c.d, NAT64 64:ff9b::/96, 6to4 2002::/16)."""
    ip = ipaddress.ip_address(addr.split("%", 1)[0] if isinstance(addr, str) else addr)
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return is_public_address(ip.ipv4_mapped)
        if ip in _NAT64:
            return is_public_address(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
        if ip.sixtofour is not None and not is_public_address(ip.sixtofour):
            return False
        if ip.teredo is not None or ip.is_site_local:
            return False
    if any(ip in net for net in _EXTRA_BLOCKED if net.version == ip.version):
        return False
    return ip.is_global and not (
        ip.is_private or ip.is_loopback or ip.is_link_local or ip.is_multicast
        or ip.is_reserved or ip.is_unspecified
    )


def _norm_host_key(host: str) -> str:
    """Host spelling used by the allow-list: lower case, no brackets, no trailing dot, IPs in
    their canonical text form."""
    host = host.strip().strip("[]").lower().rstrip(".")
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        pass
    try:
        return _normalize_hostname(host)
    except ValueError:
        return host


def _parse_allow_entry(entry: str) -> tuple[str, int | None]:
    """An allow_private_hosts entry -> (host key, port or None): 'host', 'host:port', '[v6]',
    '[v6]:port' or a bare IPv6 literal. ValueError for a malformed entry (a config typo should fail
    loudly, not silently allow or refuse)."""
    text = str(entry).strip()
    port_s = None
    if "/" in text:
        raise ValueError(f"allow_private_hosts entry {entry!r}: write host or host:port, not a URL")
    if text.startswith("["):
        host, close, rest = text[1:].partition("]")
        if not close or (rest and not rest.startswith(":")):
            raise ValueError(f"allow_private_hosts entry {entry!r}: bad IPv6 literal")
        port_s = rest[1:] if rest else None
    elif text.count(":") == 1:
        host, port_s = text.split(":")
    else:
        host = text
        if ":" in host:
            try:
                ipaddress.IPv6Address(host)
            except ValueError:
                raise ValueError(f"allow_private_hosts entry {entry!r}: bad IPv6 literal "
                                 f"(write [addr]:port for a port)") from None
    if not host.strip():
        raise ValueError(f"allow_private_hosts entry {entry!r}: no host")
    port = None
    if port_s is not None:
        if not _DIGITS.match(port_s) or not 0 < int(port_s) <= 65535:
            raise ValueError(f"allow_private_hosts entry {entry!r}: bad port {port_s!r}")
        port = int(port_s)
    return _norm_host_key(host), port


class PrivateAddressError(Exception):
    """Raised (inside this module only) when a host resolves to a non-public address. Deliberately
    not an OSError, so urllib3/requests let it through unwrapped and never retry it."""


class _AddressGuard:
    """getaddrinfo with a short cache; refuses non-public results unless allow-listed.

    allow_private_hosts entries are origins: 'host:port' allows that port of the host, wherever a
    fetch comes from (a redirect included). An entry without a port allows the host only at the
    origin a fetch starts at (`home`: the URL asked for, or a robots.txt's own origin), so a page on
    an allowed 127.0.0.1:8080 cannot redirect us to 127.0.0.1:6379."""

    def __init__(self, allow: Iterable[str], ttl_s: float):
        entries = [_parse_allow_entry(e) for e in ([allow] if isinstance(allow, str) else allow)]
        self.bare_hosts = frozenset(h for h, p in entries if p is None)
        self.origins = frozenset((h, p) for h, p in entries if p is not None)
        self.allow = frozenset(h if p is None else f"[{h}]:{p}" if ":" in h else f"{h}:{p}" for h, p in entries)
        self.ttl_s = ttl_s
        self._cache: dict[str, tuple[float, list[str], str | None]] = {}
        self._lock = threading.Lock()

    def allowed(self, key: str, port: int | None, home: tuple[str, int] | None) -> bool:
        """May (host key, port) be a private address? `home` None (the connection layer, which has no
        fetch to ask) lets an entry without a port cover any port: the per-hop check already ran."""
        if (key, port) in self.origins:
            return True
        return key in self.bare_hosts and (home is None or (_norm_host_key(home[0]), home[1]) == (key, port))

    def resolve(self, host: str, port: int | None = None, home: tuple[str, int] | None = None) -> list[str]:
        """Vetted IP addresses of `host` (to be reached at `port`, by a fetch that started at `home`);
        PrivateAddressError or socket.gaierror."""
        key = _norm_host_key(host)
        now = time.monotonic()
        with self._lock:
            hit = self._cache.get(key)
        if hit is None or hit[0] <= now:
            infos = socket.getaddrinfo(key, None, 0, socket.SOCK_STREAM)
            ips = list(dict.fromkeys(info[4][0] for info in infos))
            bad = next((ip for ip in ips if not is_public_address(ip)), None)
            hit = (now + self.ttl_s, ips, bad)
            if self.ttl_s > 0:
                with self._lock:
                    if len(self._cache) > 50_000:
                        self._cache.clear()
                    self._cache[key] = hit
        _, ips, bad = hit
        if bad is not None and not self.allowed(key, port, home):
            msg = f"{host} resolves to non-public address {bad}"
            if key in self.bare_hosts or any(h == key for h, _ in self.origins):
                msg += (f"; port {port} of it is not allowed (allow_private_hosts {sorted(self.allow)}: an entry "
                        f"without a port covers only the host:port a fetch starts at)")
            raise PrivateAddressError(msg)
        if not ips:
            raise socket.gaierror(socket.EAI_NONAME, f"no addresses for {host}")
        return ips


# --------------------------------------------------------------------------------------------------
# Wall-clock deadlines and cancellation
# --------------------------------------------------------------------------------------------------

_POLL_S = 0.1  # how often blocked waits look at deadlines and the cancel flag
_CURRENT = threading.local()  # .attempt: the _Attempt the calling thread is making, for the connection layer


def _shutdown(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)


class _Attempt:
    """One request attempt: its wall-clock deadline, and the sockets to shut down when it is aborted
    (deadline passed, or cancel()). A socket timeout restarts on every received packet, so a server
    that trickles bytes never trips it; shutdown() instead wakes the blocked recv at once, wherever it
    is: the TLS handshake, http.client reading the status line and headers, or the body. We hold our
    own dup() of each socket, so shutting it down never races with urllib3 closing (and the OS
    reusing) the original descriptor."""

    def __init__(self, deadline: float):
        self.deadline = deadline
        self.aborted: str | None = None  # TIMEOUT or CANCELLED once aborted
        self._socks: list[socket.socket] = []
        self._done = False
        self._lock = threading.Lock()

    def watch(self, sock) -> None:
        try:
            dup = socket.fromfd(sock.fileno(), sock.family, sock.type)
        except (OSError, ValueError):  # already closed: nothing to wake
            return
        with self._lock:
            if self._done:
                dup.close()
                return
            self._socks.append(dup)
            if self.aborted:
                _shutdown(dup)

    def abort(self, why: str) -> None:
        with self._lock:
            if self.aborted or self._done:
                return
            self.aborted = why
            for sock in self._socks:
                _shutdown(sock)

    def finish(self) -> None:
        with self._lock:
            self._done = True
            socks, self._socks = self._socks, []
        for sock in socks:
            sock.close()


class _Watchdog:
    """Aborts every live attempt whose deadline has passed, and all of them once `is_cancelled()`.
    One thread per downloader, alive only while attempts are (it exits after a second idle). It polls
    instead of being woken, so cancel() can be a plain flag store, safe inside a signal handler."""

    def __init__(self, is_cancelled: Callable[[], bool]):
        self._is_cancelled = is_cancelled
        self._live: set[_Attempt] = set()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def begin(self, deadline: float) -> _Attempt:
        att = _Attempt(deadline)
        with self._lock:
            self._live.add(att)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="toonface-dl-watchdog", daemon=True)
                self._thread.start()
        if self._is_cancelled():
            att.abort(CANCELLED)
        return att

    def end(self, att: _Attempt) -> None:
        with self._lock:
            self._live.discard(att)
        att.finish()

    def _run(self) -> None:
        idle_since = None
        while True:
            now = time.monotonic()
            with self._lock:
                live = list(self._live)
                if live:
                    idle_since = None
                elif idle_since is None:
                    idle_since = now
                elif now - idle_since > 1.0:
                    self._thread = None
                    return
            cancelled = self._is_cancelled()
            for att in live:
                if cancelled:
                    att.abort(CANCELLED)
                elif att.deadline <= now:
                    att.abort(TIMEOUT)
            nearest = min((a.deadline for a in live if not a.aborted), default=now + _POLL_S)
            time.sleep(min(_POLL_S, max(0.005, nearest - time.monotonic())))


def _connect(ip: str, port: int, timeout, source_address, socket_options, att: _Attempt | None) -> socket.socket:
    """Connect to one vetted IP like urllib3's create_connection, but wait for the handshake in short
    slices, so the attempt's deadline and cancel() also end a connect the network leaves hanging."""
    timeout = float(timeout) if isinstance(timeout, (int, float)) else None
    family, socktype, proto, _, sockaddr = socket.getaddrinfo(
        ip, port, 0, socket.SOCK_STREAM, 0, socket.AI_NUMERICHOST)[0]
    end = time.monotonic() + (timeout if timeout is not None else 3600.0)
    if att is not None:
        end = min(end, att.deadline)
    sock = socket.socket(family, socktype, proto)
    try:
        for opt in socket_options or ():
            sock.setsockopt(*opt)
        if source_address:
            sock.bind(source_address)
        sock.setblocking(False)
        err = sock.connect_ex(sockaddr)
        if err in (errno.EINPROGRESS, errno.EWOULDBLOCK, errno.EALREADY, errno.EINTR):
            with selectors.DefaultSelector() as sel:
                sel.register(sock, selectors.EVENT_WRITE)
                while not sel.select(min(_POLL_S, max(0.0, end - time.monotonic()))):
                    if att is not None and att.aborted:
                        raise ConnectionAbortedError(f"connect abandoned: {att.aborted}")
                    if time.monotonic() >= end:
                        raise socket.timeout("timed out")
            err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err:
            raise OSError(err, os.strerror(err))
        sock.settimeout(timeout)
        return sock
    except BaseException:
        sock.close()
        raise


class _GuardedConnectionMixin:
    """Connect only to addresses the guard has vetted (the same resolution it checked), so a DNS
    answer that changes between the check and the connect (rebinding) cannot reach an internal host.
    TLS still uses the host name for SNI and certificate checks. Every socket is handed to the
    calling thread's current _Attempt, which shuts it down when the attempt's deadline passes."""

    _guard: _AddressGuard

    def _new_conn(self) -> socket.socket:  # overrides urllib3.connection.HTTPConnection._new_conn
        try:
            ips = self._guard.resolve(self._dns_host, self.port)
        except socket.gaierror as exc:
            raise NameResolutionError(self.host, self, exc) from exc
        att = getattr(_CURRENT, "attempt", None)
        error: Exception | None = None
        for ip in ips:
            try:
                sock = _connect(ip, self.port, self.timeout, self.source_address, self.socket_options, att)
            except socket.timeout as exc:
                error = ConnectTimeoutError(
                    self, f"Connection to {self.host} ({ip}) timed out. (connect timeout={self.timeout})")
                error.__cause__ = exc
            except OSError as exc:
                error = NewConnectionError(self, f"Failed to establish a new connection to {ip}: {exc}")
                error.__cause__ = exc
            else:
                sys.audit("http.client.connect", self, self.host, self.port)
                if att is not None:  # watched from here on: the TLS handshake, then the response
                    att.watch(sock)
                return sock
        assert error is not None
        raise error

    def request(self, *args, **kwargs):  # a reused keep-alive connection: watch its socket too
        att = getattr(_CURRENT, "attempt", None)
        if att is not None and self.sock is not None:
            att.watch(self.sock)
        return super().request(*args, **kwargs)


class _Session(requests.Session):
    def resolve_redirects(self, *args, **kwargs):
        # requests calls this even with allow_redirects=False, to fill `response.next`, and it reads
        # the whole body of a 3xx response into memory, unbounded. We follow redirects ourselves.
        return iter(())


class _GuardedAdapter(HTTPAdapter):
    def __init__(self, guard: _AddressGuard, **kwargs):
        self._guard = guard
        super().__init__(**kwargs)

    def init_poolmanager(self, *args, **kwargs):
        super().init_poolmanager(*args, **kwargs)
        guard = self._guard
        conn_http = type("GuardedHTTPConnection", (_GuardedConnectionMixin, HTTPConnection), {"_guard": guard})
        conn_https = type("GuardedHTTPSConnection", (_GuardedConnectionMixin, HTTPSConnection), {"_guard": guard})
        pool_http = type("GuardedHTTPConnectionPool", (HTTPConnectionPool,), {"ConnectionCls": conn_http})
        pool_https = type("GuardedHTTPSConnectionPool", (HTTPSConnectionPool,), {"ConnectionCls": conn_https})
        self.poolmanager.pool_classes_by_scheme = {"http": pool_http, "https": pool_https}

    def proxy_manager_for(self, proxy, **proxy_kwargs):  # pragma: no cover - proxies are never used
        raise requests.exceptions.InvalidURL("proxies are disabled in the toonface downloader")


# --------------------------------------------------------------------------------------------------
# Per-domain scheduler
# --------------------------------------------------------------------------------------------------

class _DomainLimiter:
    """Per-domain start times and concurrency, shared by all threads.

    `slot(key)` waits until fewer than `max_per_domain` requests to that domain are active, reserves
    the next start time (>= the previous reservation + interval, >= any deferral), sleeps until it
    and holds the slot for the duration of the request.

    With `shared_dir`, start times are also reserved in one file per domain under that folder,
    under an exclusive lock (flock), so every process on the machine that uses the same folder (the
    workers of a local Dask cluster, several flow runs) keeps the same spacing. The concurrency
    limit stays per process. Both waits give up with `cancelled` once `is_cancelled()`."""

    def __init__(self, interval_s: float, max_per_domain: int, shared_dir: str | os.PathLike | None = None,
                 is_cancelled: Callable[[], bool] = lambda: False):
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
        import fcntl

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
                    raise _Fail(CANCELLED, "cancelled while waiting for a free slot of the domain")
                self._cv.wait(_POLL_S)
            self._active[key] = self._active.get(key, 0) + 1
            start = max(time.monotonic(), self._next.get(key, 0.0))
            start = self._shared(key, start, self.interval(key))
            self._next[key] = start + self.interval(key)
        try:
            while (delay := start - time.monotonic()) > 0:  # in slices: a Retry-After can be minutes
                if self._is_cancelled():
                    raise _Fail(CANCELLED, "cancelled while waiting for the domain's rate limit")
                time.sleep(min(delay, _POLL_S))
            yield
        finally:
            with self._cv:
                self._active[key] -= 1
                if not self._active[key]:
                    del self._active[key]
                self._cv.notify_all()


# --------------------------------------------------------------------------------------------------
# robots.txt
# --------------------------------------------------------------------------------------------------

_ROBOTS_LINE = re.compile(r"^\s*([A-Za-z-]+)\s*:\s*(.*?)\s*$")
_ROBOTS_PATH_SAFE = frozenset(_SUB_DELIMS + ":@/?")


def _robots_target(canonical: str) -> str:
    """Path and query of a canonical URL: what robots.txt rules are matched against."""
    parts = urllib.parse.urlsplit(canonical)
    return (parts.path or "/") + (f"?{parts.query}" if parts.query else "")


def _rule_regex(path: str) -> re.Pattern:
    """A robots.txt path pattern: '*' matches any run of characters, a final '$' anchors the end.
    The path is percent-normalised exactly like canonical URLs, so both sides compare alike."""
    anchored = path.endswith("$")
    if anchored:
        path = path[:-1]
    body = ".*".join(re.escape(_normalize_percent(p, _ROBOTS_PATH_SAFE)) for p in path.split("*"))
    return re.compile(body + ("$" if anchored else ""), re.DOTALL)


class _RobotsRules:
    """robots.txt rules for one product token, parsed and matched per RFC 9309.

    Not urllib.robotparser: it takes the first matching rule instead of the longest, has no '*' and
    '$' wildcards, drops a trailing '?' from rule paths ('Disallow: /*?' becomes 'Disallow: /*'),
    matches user agents by substring ('face' matches 'toonface'), ends a group at a blank line and
    keeps only the first '*' group. Here: groups whose User-agent product token equals ours
    (case-insensitive) are merged, else the '*' groups are; the longest matching path wins and Allow
    wins a tie; blank lines are ignored; an empty Disallow/Allow is no rule; /robots.txt is always
    allowed. Crawl-delay (not in the RFC) is read from the chosen groups."""

    ALLOW_ALL = "allow_all"
    DISALLOW_ALL = "disallow_all"
    RULES = "rules"

    def __init__(self, kind: str, detail: str = "", rules=(), crawl_delay: float | None = None):
        self.kind = kind
        self.detail = detail
        self.rules = list(rules)  # (regex, length, allow)
        self.crawl_delay = crawl_delay

    @classmethod
    def parse(cls, text: str, token: str) -> "_RobotsRules":
        groups: list[tuple[list[str], list[tuple[str, str]]]] = []  # (agents, [(key, value)])
        in_agents = False
        for line in text.lstrip("\ufeff").splitlines():
            line = line.split("#", 1)[0]
            m = _ROBOTS_LINE.match(line)
            if not m:
                continue
            key, value = m.group(1).lower(), m.group(2)
            if key in ("user-agent", "useragent", "user agent"):
                if not in_agents:
                    groups.append(([], []))
                    in_agents = True
                groups[-1][0].append(value.split("/", 1)[0].strip().lower())
            elif key in ("allow", "disallow", "crawl-delay"):
                in_agents = False
                if groups:  # rules before any User-agent line belong to no group
                    groups[-1][1].append((key, value))
        chosen = [g for g in groups if token in g[0]] or [g for g in groups if "*" in g[0]]
        rules, delay = [], None
        for _, lines in chosen:
            for key, value in lines:
                if key == "crawl-delay":
                    with contextlib.suppress(ValueError):
                        if delay is None and float(value) >= 0:
                            delay = float(value)
                elif value:
                    rules.append((_rule_regex(value), len(_normalize_percent(value, _ROBOTS_PATH_SAFE)),
                                  key == "allow"))
        return cls(cls.RULES, rules=rules, crawl_delay=delay)

    def allowed(self, canonical_url: str) -> bool:
        if self.kind == self.ALLOW_ALL:
            return True
        if self.kind == self.DISALLOW_ALL:
            return False
        target = _robots_target(canonical_url)
        if target == "/robots.txt":
            return True
        best_len, best_allow = -1, True
        for rx, length, allow in self.rules:
            if (length > best_len or (length == best_len and allow)) and rx.match(target):
                best_len, best_allow = length, allow
        return best_allow


class _RobotsSlot:
    __slots__ = ("ready", "rules", "expires")

    def __init__(self):
        self.ready = threading.Event()
        self.rules: _RobotsRules | None = None
        self.expires = 0.0


# --------------------------------------------------------------------------------------------------
# Results and internal control flow
# --------------------------------------------------------------------------------------------------

@dataclasses.dataclass
class FetchResult:
    url: str                   # canonical URL (the input as given when it is not a valid URL)
    final_url: str             # canonical URL of the last hop requested (after redirects)
    ok: bool
    reason: str | None         # None when ok; else a code from REASONS or http_<code>
    http_status: int | None    # status of the last response received
    content_type: str | None   # Content-Type header of the last response received
    data: bytes | None         # the body, only when ok
    sha256: str | None         # sha256 of data, only when ok
    format: str | None         # image format from the magic bytes (expect="image"), only when ok
    attempts: int              # HTTP requests sent for this URL: retries and redirect hops (not robots.txt)
    elapsed_s: float           # wall time, including waiting for the per-domain rate limit
    detail: str = ""           # human-readable explanation of the reason


class _Fail(Exception):
    def __init__(self, reason: str, detail: str = ""):
        super().__init__(reason, detail)
        self.reason = reason
        self.detail = detail


class _Retry(Exception):
    """A transient failure: retried, and becomes a _Fail when the retries are spent."""

    def __init__(self, reason: str, detail: str = "", retry_after: float | None = None):
        super().__init__(reason, detail)
        self.reason = reason
        self.detail = detail
        self.retry_after = retry_after


@dataclasses.dataclass
class _State:
    final_url: str
    attempts: int = 0
    http_status: int | None = None
    content_type: str | None = None


@dataclasses.dataclass
class _Redirect:
    location: str


def _parse_retry_after(value: str | None) -> float | None:
    if not value:
        return None
    value = value.strip()
    if _DIGITS.match(value):
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - time.time())


def _content_length(resp: requests.Response) -> int | None:
    value = resp.headers.get("Content-Length")
    if value is None:
        return None
    values = {v.strip() for v in value.split(",")}
    if len(values) != 1 or not _DIGITS.match(next(iter(values))):
        return None
    return int(values.pop())


def _media_type(resp: requests.Response) -> str:
    return (resp.headers.get("Content-Type") or "").split(";", 1)[0].strip().lower()


def _looks_like_html(data: bytes) -> bool:
    head = data[:1024].lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    return head.startswith((b"<!doctype html", b"<html", b"<head", b"<!--"))


def _socket_of(resp: requests.Response):
    conn = getattr(resp.raw, "connection", None) or getattr(resp.raw, "_connection", None)
    return getattr(conn, "sock", None)


_XRT_VALUE_DIRECTIVES = frozenset({
    "max-snippet", "max-image-preview", "max-video-preview", "unavailable_after",
})
_XRT_AGENT = re.compile(r"^\s*([A-Za-z0-9_.-]+)\s*:\s*(.*)$", re.DOTALL)


# --------------------------------------------------------------------------------------------------
# The downloader
# --------------------------------------------------------------------------------------------------

class Downloader:
    """Polite concurrent fetcher; see the module docstring. Thread-safe (fetch may be called from
    several threads; all share one rate limiter, robots cache and connection pool); use as a context
    manager or call close(). `cancel()` (safe in a signal handler) abandons everything in flight and
    makes it unusable: see there.

    Settings (keyword only):
      user_agent          sent on every request; its product token (before the first '/') is the
                          name looked up in robots.txt and X-Robots-Tag
      min_interval_s      per-domain rate limit: minimum time between two request starts (1.0)
      max_workers         threads of fetch_many, and connection-pool size per host (16)
      max_per_domain      requests in flight at once per domain (1)
      connect_timeout, read_timeout   per socket operation (10 s, 20 s)
      total_timeout       one attempt from connect to last body byte (60 s)
      max_bytes           body limit, checked on Content-Length and while streaming (20 MiB)
      max_redirects       redirect hops followed (5)
      retries             extra attempts on timeouts, connection errors, truncated bodies, 429,
                          500, 502, 503, 504 (3); exponential backoff backoff_base_s * 2**n with
                          jitter, capped at backoff_max_s (0.5 s, 30 s); Retry-After (seconds or
                          HTTP-date) on 429/503 is used instead, up to max_retry_after_s (120 s) -
                          above that the fetch gives up at once
      obey_robots         robots.txt (True); robots_ttl_s cache lifetime (24 h); max_crawl_delay_s
                          cap on a robots Crawl-delay (30 s)
      honour_noindex      X-Robots-Tag none/noindex also discard the body (False)
      allow_private_hosts origins that may resolve to non-public addresses (empty): "host:port"
                          (host as written in URLs, IPv6 in brackets) allows that port of the
                          host, redirects included; a bare "host" allows it only at the host:port
                          a fetch starts at, never as a redirect target on another port or from
                          another host. E.g. {"127.0.0.1"} for tests
      dns_cache_ttl_s     lifetime of a vetted DNS answer (30 s; 0 = resolve every time)
      lookahead           URLs fetch_many reads ahead to find domains that are ready
      verify              TLS verification: True (certifi bundle) or a CA bundle path
      rate_limit_dir      a folder shared by every process that crawls from this machine: the
                          per-domain spacing then holds across all of them (None: this process only)
    """

    def __init__(
        self,
        *,
        user_agent: str = DEFAULT_USER_AGENT,
        min_interval_s: float = 1.0,
        max_workers: int = 16,
        max_per_domain: int = 1,
        connect_timeout: float = 10.0,
        read_timeout: float = 20.0,
        total_timeout: float = 60.0,
        max_bytes: int = 20 * 1024 * 1024,
        max_redirects: int = 5,
        retries: int = 3,
        backoff_base_s: float = 0.5,
        backoff_max_s: float = 30.0,
        max_retry_after_s: float = 120.0,
        obey_robots: bool = True,
        robots_ttl_s: float = 24 * 3600.0,
        max_crawl_delay_s: float = 30.0,
        honour_noindex: bool = False,
        allow_private_hosts: Iterable[str] = (),
        dns_cache_ttl_s: float = 30.0,
        lookahead: int | None = None,
        verify: bool | str = True,
        rate_limit_dir: str | os.PathLike | None = None,
    ):
        if max_workers < 1 or max_per_domain < 1:
            raise ValueError("max_workers and max_per_domain must be >= 1")
        if min(connect_timeout, read_timeout, total_timeout) <= 0:
            raise ValueError("timeouts must be > 0")
        if min_interval_s < 0 or retries < 0 or max_redirects < 0 or max_bytes < 1:
            raise ValueError("min_interval_s, retries and max_redirects must be >= 0, max_bytes >= 1")
        self.user_agent = user_agent
        self.agent_token = user_agent.split("/", 1)[0].strip().lower()
        self.min_interval_s = float(min_interval_s)
        self.max_workers = int(max_workers)
        self.max_per_domain = int(max_per_domain)
        self.connect_timeout = float(connect_timeout)
        self.read_timeout = float(read_timeout)
        self.total_timeout = float(total_timeout)
        self.max_bytes = int(max_bytes)
        self.max_redirects = int(max_redirects)
        self.retries = int(retries)
        self.backoff_base_s = float(backoff_base_s)
        self.backoff_max_s = float(backoff_max_s)
        self.max_retry_after_s = float(max_retry_after_s)
        self.obey_robots = bool(obey_robots)
        self.robots_ttl_s = float(robots_ttl_s)
        self.max_crawl_delay_s = float(max_crawl_delay_s)
        self.honour_noindex = bool(honour_noindex)
        self.lookahead = int(lookahead) if lookahead else max(256, 16 * self.max_workers)
        self._blocking_directives = frozenset({"noai", "noimageai"} | ({"none", "noindex"} if honour_noindex else set()))

        self._guard = _AddressGuard(allow_private_hosts, dns_cache_ttl_s)
        self.allow_private_hosts = self._guard.allow
        self._cancel_requested = False  # a plain bool: cancel() must be safe in a signal handler
        self._watchdog = _Watchdog(lambda: self._cancel_requested)
        self._limiter = _DomainLimiter(self.min_interval_s, self.max_per_domain, rate_limit_dir,
                                       lambda: self._cancel_requested)
        self._robots: dict[tuple, _RobotsSlot] = {}
        self._robots_lock = threading.Lock()
        self._rng = random.Random()

        session = _Session()
        session.trust_env = False  # no env proxies (they would bypass the address pin), no .netrc
        session.verify = verify  # TLS verification: True (certifi) or a CA bundle path
        session.headers.update({"User-Agent": user_agent})
        session.cookies.set_policy(http.cookiejar.DefaultCookiePolicy(allowed_domains=[]))  # no cookies
        adapter = _GuardedAdapter(
            self._guard, pool_connections=max(32, self.max_workers), pool_maxsize=self.max_workers,
            max_retries=0, pool_block=False)
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        self._session = session
        self._timeout = (min(self.connect_timeout, self.total_timeout), min(self.read_timeout, self.total_timeout))

    # -- lifecycle ---------------------------------------------------------------------------------

    def close(self) -> None:
        """Release pooled connections (a later fetch opens new ones). Does not cancel: see cancel()."""
        self._session.close()

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

    def __enter__(self) -> "Downloader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- public API --------------------------------------------------------------------------------

    def fetch(self, url: str, expect: str = "image") -> FetchResult:
        """Fetch one URL; never raises for network or content problems."""
        self._check_expect(expect)
        t0 = time.monotonic()
        try:
            canonical = canonicalize_url(url)
        except ValueError as exc:
            return self._invalid(url, exc, t0)
        return self._fetch_canonical(canonical, expect, t0)

    def fetch_many(self, urls: Iterable[str], expect: str = "image") -> Iterator[FetchResult]:
        """Fetch many URLs concurrently (max_workers threads); one result per distinct canonical URL
        (later spellings of an already seen URL are skipped), yielded as they finish. Invalid URLs
        give an `invalid_url` result each. `urls` is read lazily, `lookahead` at a time; work is
        dispatched per domain, round robin, only when that domain may start a request, so a slow or
        rate-limited domain does not tie up the workers."""
        self._check_expect(expect)
        source = iter(urls)
        seen: set[str] = set()
        pending: dict[tuple, deque] = {}
        order: list[tuple] = []  # domains with pending work, in round-robin order
        buffered = 0
        exhausted = False
        inflight: dict[cf.Future, tuple] = {}
        dom_inflight: dict[tuple, int] = {}
        planned: dict[tuple, float] = {}  # earliest next start we may dispatch per domain
        pool = cf.ThreadPoolExecutor(self.max_workers, thread_name_prefix="toonface-dl")
        try:
            while True:
                if self._cancel_requested:  # read no more; what was read but not started comes back cancelled
                    exhausted = True
                    for key in order:
                        for canonical in pending[key]:
                            yield self._cancelled_result(canonical, "cancelled before it started")
                    pending.clear()
                    order.clear()
                    buffered = 0
                while not exhausted and buffered < self.lookahead:
                    try:
                        raw = next(source)
                    except StopIteration:
                        exhausted = True
                        break
                    t0 = time.monotonic()
                    try:
                        canonical = canonicalize_url(raw)
                    except ValueError as exc:
                        yield self._invalid(raw, exc, t0)
                        continue
                    if canonical in seen:
                        continue
                    seen.add(canonical)
                    key = self._domain_key(canonical)
                    if key not in pending:
                        pending[key] = deque()
                        order.append(key)
                    pending[key].append(canonical)
                    buffered += 1

                now = time.monotonic()
                wake = None
                moved = []
                for key in list(order):
                    queue = pending[key]
                    while queue and len(inflight) < self.max_workers and dom_inflight.get(key, 0) < self.max_per_domain:
                        start = max(self._limiter.next_start(key), planned.get(key, 0.0))
                        if start > now:
                            wake = start if wake is None else min(wake, start)
                            break
                        canonical = queue.popleft()
                        buffered -= 1
                        fut = pool.submit(self._fetch_canonical, canonical, expect, time.monotonic())
                        inflight[fut] = key
                        dom_inflight[key] = dom_inflight.get(key, 0) + 1
                        planned[key] = now + self._limiter.interval(key)
                        moved.append(key)
                    if len(inflight) >= self.max_workers:
                        break
                for key in dict.fromkeys(moved):  # round robin: served domains go to the back
                    if key in pending:
                        order.remove(key)
                        if pending[key]:
                            order.append(key)
                        else:
                            del pending[key]
                            planned.pop(key, None)

                if not inflight and not pending and exhausted:
                    return
                timeout = None if wake is None else max(0.0, wake - time.monotonic())
                if not inflight:
                    time.sleep(min(timeout if timeout is not None else 0.01, _POLL_S))
                    continue
                done, _ = cf.wait(list(inflight), timeout=timeout, return_when=cf.FIRST_COMPLETED)
                for fut in done:
                    key = inflight.pop(fut)
                    dom_inflight[key] -= 1
                    if not dom_inflight[key]:
                        del dom_inflight[key]
                    yield fut.result()
        finally:
            for fut in inflight:
                fut.cancel()
            pool.shutdown(wait=False, cancel_futures=True)

    # -- one URL -----------------------------------------------------------------------------------

    @staticmethod
    def _check_expect(expect: str) -> None:
        if expect not in _ACCEPT:
            raise ValueError(f"expect must be one of {sorted(_ACCEPT)}, not {expect!r}")

    @staticmethod
    def _domain_key(canonical: str) -> tuple:
        _, host, port = _url_parts(canonical)
        return (host, port)

    @staticmethod
    def _cancelled_result(canonical: str, detail: str) -> FetchResult:
        return FetchResult(canonical, canonical, False, CANCELLED, None, None, None, None, None, 0, 0.0, detail)

    @staticmethod
    def _invalid(url, exc: Exception, t0: float) -> FetchResult:
        text = url if isinstance(url, str) else repr(url)
        return FetchResult(text, text, False, INVALID_URL, None, None, None, None, None, 0,
                           time.monotonic() - t0, str(exc))

    def _fetch_canonical(self, canonical: str, expect: str, t0: float) -> FetchResult:
        if self._cancel_requested:
            return self._cancelled_result(canonical, "the downloader was cancelled; nothing was requested")
        st = _State(final_url=canonical)
        try:
            data, fmt = self._follow(canonical, expect, st)
        except (_Fail, _Retry) as f:  # a _Retry here is a transient DNS failure outside the retry loop
            return FetchResult(canonical, st.final_url, False, f.reason, st.http_status, st.content_type,
                               None, None, None, st.attempts, time.monotonic() - t0, f.detail)
        except Exception as exc:  # a bug: still a result, never an exception
            return FetchResult(canonical, st.final_url, False, INTERNAL_ERROR, st.http_status, st.content_type,
                               None, None, None, st.attempts, time.monotonic() - t0, f"{type(exc).__name__}: {exc}")
        return FetchResult(canonical, st.final_url, True, None, st.http_status, st.content_type,
                           data, sha256_bytes(data), fmt, st.attempts, time.monotonic() - t0, "")

    def _follow(self, canonical: str, expect: str, st: _State) -> tuple[bytes, str | None]:
        current = canonical
        visited = {canonical}
        home = _url_parts(canonical)[1:]  # the origin asked for: what a port-less allow-list entry covers
        for hop in range(self.max_redirects + 1):
            st.final_url = current
            scheme, host, port = _url_parts(current)
            key = (host, port)
            self._precheck(host, port, home)
            if self.obey_robots:
                self._check_robots(scheme, host, port, current)
            outcome = self._with_retries(current, key, lambda r, d: self._handle(r, d, expect, st), st,
                                         _ACCEPT[expect], home)
            if not isinstance(outcome, _Redirect):
                return outcome
            target = self._redirect_target(current, outcome.location)
            if target in visited:
                raise _Fail(REDIRECT_LOOP, f"{current} redirects back to {target}")
            if hop == self.max_redirects:
                raise _Fail(TOO_MANY_REDIRECTS, f"more than {self.max_redirects} redirects (next: {target})")
            visited.add(target)
            current = target
        raise AssertionError("unreachable")

    @staticmethod
    def _redirect_target(current: str, location: str) -> str:
        try:  # http.client decodes headers as latin-1; servers send UTF-8
            location = location.encode("latin-1").decode("utf-8")
        except UnicodeError:
            pass
        try:
            return canonicalize_url(urllib.parse.urljoin(current, location.strip()))
        except ValueError as exc:
            raise _Fail(INVALID_URL, f"redirect to {location!r}: {exc}") from None

    def _precheck(self, host: str, port: int, home: tuple[str, int]) -> None:
        try:
            self._guard.resolve(host, port, home)
        except PrivateAddressError as exc:
            raise _Fail(PRIVATE_ADDRESS, str(exc)) from None
        except socket.gaierror as exc:
            if exc.errno == socket.EAI_AGAIN:
                raise _Retry(CONNECTION_ERROR, f"DNS lookup of {host} failed (temporary): {exc}") from None
            raise _Fail(CONNECTION_ERROR, f"DNS lookup of {host} failed: {exc}") from None
        except UnicodeError as exc:
            raise _Fail(INVALID_URL, f"host {host!r}: {exc}") from None

    # -- requests, retries, timeouts ---------------------------------------------------------------

    def _backoff(self, retry_index: int) -> float:
        delay = min(self.backoff_max_s, self.backoff_base_s * (2 ** retry_index))
        return delay / 2 + self._rng.uniform(0, delay / 2)  # "equal jitter": at least half the delay

    def _with_retries(self, url: str, key: tuple, handler, st: _State | None, accept: str, home: tuple[str, int]):
        for i in range(self.retries + 1):
            if self._cancel_requested:
                raise _Fail(CANCELLED, "the downloader was cancelled")
            if st is not None:
                st.attempts += 1
            try:
                self._precheck(key[0], key[1], home)
                return self._attempt(url, key, handler, st, accept)
            except _Retry as r:
                final = r.reason
                if i == self.retries:
                    raise _Fail(final, f"{r.detail} (after {i + 1} attempts)") from None
                if r.retry_after is not None:
                    if r.retry_after > self.max_retry_after_s:
                        raise _Fail(final, f"{r.detail}; Retry-After {r.retry_after:.0f} s is above "
                                           f"max_retry_after_s={self.max_retry_after_s:g}") from None
                    delay = r.retry_after
                else:
                    delay = self._backoff(i)
                # The whole domain waits, not only this request: the server asked us to slow down.
                self._limiter.defer(key, time.monotonic() + delay)
        raise AssertionError("unreachable")

    def _attempt(self, url: str, key: tuple, handler, st: _State | None, accept: str):
        with self._limiter.slot(key):
            # The watchdog shuts the attempt's sockets down at the deadline or on cancel(); the
            # connection layer, running in this thread, finds the attempt through _CURRENT.
            att = self._watchdog.begin(time.monotonic() + self.total_timeout)
            _CURRENT.attempt = att
            try:
                return self._attempt_watched(att, url, handler, st, accept)
            finally:
                _CURRENT.attempt = None
                self._watchdog.end(att)

    def _aborted(self, att: _Attempt, what: str, exc: BaseException | None) -> Exception:
        """The failure of an attempt the watchdog aborted; `exc` is what the shut-down socket caused."""
        cause = getattr(exc, "detail", None) or (f"{type(exc).__name__}: {exc}" if exc is not None else "")
        cause = f" ({cause})" if cause else ""
        if att.aborted == CANCELLED:
            return _Fail(CANCELLED, f"cancelled while waiting for {what}{cause}")
        return _Retry(TIMEOUT, f"{what} not complete within total_timeout={self.total_timeout:g} s{cause}")

    def _attempt_watched(self, att: _Attempt, url: str, handler, st: _State | None, accept: str):
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
                raise _Retry(TIMEOUT, f"response headers took longer than total_timeout={self.total_timeout:g} s")
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
        """The request up to the response headers; every failure as _Fail or _Retry."""
        try:
            return self._session.get(url, headers={"Accept": accept}, stream=True,
                                     allow_redirects=False, timeout=self._timeout)
        except PrivateAddressError as exc:
            raise _Fail(PRIVATE_ADDRESS, str(exc)) from None
        except requests.exceptions.Timeout as exc:
            raise _Retry(TIMEOUT, f"{type(exc).__name__}: {exc}") from None
        except requests.exceptions.SSLError as exc:
            raise _Fail(CONNECTION_ERROR, f"TLS: {exc}") from None
        except requests.exceptions.ConnectionError as exc:
            private = _find_cause(exc, PrivateAddressError)
            if private is not None:
                raise _Fail(PRIVATE_ADDRESS, str(private)) from None
            if _find_cause(exc, NameResolutionError) is not None:
                raise _Fail(CONNECTION_ERROR, f"DNS: {exc}") from None
            raise _Retry(CONNECTION_ERROR, f"{type(exc).__name__}: {exc}") from None
        except (requests.exceptions.InvalidURL, requests.exceptions.InvalidSchema,
                requests.exceptions.MissingSchema, requests.exceptions.URLRequired) as exc:
            raise _Fail(INVALID_URL, str(exc)) from None
        except requests.exceptions.RequestException as exc:
            raise _Fail(CONNECTION_ERROR, f"{type(exc).__name__}: {exc}") from None

    def _read_body(self, resp: requests.Response, deadline: float, limit: int, *, cut_at_limit: bool = False) -> bytes:
        """Stream the (decoded) body, at most `limit` bytes (too_large beyond, or cut there when
        `cut_at_limit`), within `deadline`."""
        sock = _socket_of(resp)
        raw = resp.raw
        chunks = []
        total = 0
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise _Retry(TIMEOUT, f"body not complete within total_timeout={self.total_timeout:g} s "
                                      f"({total} bytes read)")
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.settimeout(min(self.read_timeout, left))
            try:
                chunk = raw.read1(_CHUNK, decode_content=True)
            except urllib3.exceptions.ReadTimeoutError as exc:
                which = "total_timeout" if time.monotonic() >= deadline - 0.001 else "read_timeout"
                raise _Retry(TIMEOUT, f"{which} while reading the body ({total} bytes read): {exc}") from None
            except urllib3.exceptions.DecodeError as exc:
                raise _Fail(CONNECTION_ERROR, f"bad Content-Encoding: {exc}") from None
            except (urllib3.exceptions.HTTPError, OSError, requests.exceptions.RequestException) as exc:
                raise _Retry(TRUNCATED, f"connection cut after {total} bytes: {exc}") from None
            if not chunk:
                break
            total += len(chunk)
            if total > limit:
                if cut_at_limit:
                    chunks.append(chunk[: len(chunk) - (total - limit)])
                    return b"".join(chunks)
                raise _Fail(TOO_LARGE, f"body above max_bytes={limit}")
            chunks.append(chunk)
        length = _content_length(resp)
        if length is not None and raw.tell() < length:
            raise _Retry(TRUNCATED, f"{raw.tell()} of {length} bytes (Content-Length)")
        return b"".join(chunks)

    def _drain(self, resp: requests.Response, deadline: float) -> None:
        """Read a small unwanted body (redirect, error page) so the connection can be reused."""
        length = _content_length(resp)
        if length is None or length > _DRAIN_MAX:
            return
        with contextlib.suppress(Exception):
            self._read_body(resp, min(deadline, time.monotonic() + 1.0), _DRAIN_MAX)

    def _retryable_status(self, resp: requests.Response, deadline: float, status: int):
        retry_after = _parse_retry_after(resp.headers.get("Retry-After")) if status in (429, 503) else None
        self._drain(resp, deadline)
        reason = TOO_MANY_REQUESTS if status == 429 else f"http_{status}"
        detail = f"HTTP {status}" + (f", Retry-After {retry_after:.1f} s" if retry_after is not None else "")
        return _Retry(reason, detail, retry_after)

    # -- response handling -------------------------------------------------------------------------

    def _redirect_or_retry(self, resp: requests.Response, deadline: float) -> "_Redirect | None":
        """The statuses every response shares: a redirect to follow, or one to retry (raises)."""
        status = resp.status_code
        if status in _REDIRECTS and resp.headers.get("Location"):
            location = resp.headers["Location"]
            self._drain(resp, deadline)
            return _Redirect(location)
        if status in _RETRY_STATUS:
            raise self._retryable_status(resp, deadline, status)
        return None

    def _handle(self, resp: requests.Response, deadline: float, expect: str, st: _State):
        status = resp.status_code
        redirect = self._redirect_or_retry(resp, deadline)
        if redirect is not None:
            return redirect
        if status not in (200, 203):
            self._drain(resp, deadline)
            raise _Fail(f"http_{status}", f"HTTP {status} {resp.reason or ''}".strip())
        blocked = self._x_robots_block(resp)
        if blocked:
            raise _Fail(X_ROBOTS_TAG, f"X-Robots-Tag: {blocked}")
        media = _media_type(resp)
        if expect == "image" and not (media.startswith("image/") or media in _OCTET):
            raise _Fail(WRONG_CONTENT_TYPE, f"Content-Type {media!r} is not an image type")
        if expect == "html" and not (media in _HTML_TYPES or media in _OCTET):
            raise _Fail(WRONG_CONTENT_TYPE, f"Content-Type {media!r} is not HTML")
        length = _content_length(resp)
        if length is not None and length > self.max_bytes:
            raise _Fail(TOO_LARGE, f"Content-Length {length} > max_bytes={self.max_bytes}")
        data = self._read_body(resp, deadline, self.max_bytes)
        fmt = None
        if expect == "image":
            fmt = sniff_format(data)
            if fmt is None:
                raise _Fail(NOT_AN_IMAGE, f"{len(data)} bytes starting {data[:16]!r}, Content-Type {media!r}")
        elif expect == "html" and media not in _HTML_TYPES and not _looks_like_html(data):
            raise _Fail(WRONG_CONTENT_TYPE, f"Content-Type {media!r} and the body does not look like HTML")
        return data, fmt

    def _x_robots_block(self, resp: requests.Response) -> str | None:
        """The X-Robots-Tag line that forbids our use, if any."""
        headers = getattr(resp.raw, "headers", None)
        if headers is not None and hasattr(headers, "getlist"):
            lines = headers.getlist("X-Robots-Tag")
        else:
            lines = [resp.headers["X-Robots-Tag"]] if "X-Robots-Tag" in resp.headers else []
        for line in lines:
            rest = line
            m = _XRT_AGENT.match(line)
            if m and m.group(1).lower() not in _XRT_VALUE_DIRECTIVES:
                if m.group(1).lower() != self.agent_token:
                    continue  # directives for another crawler
                rest = m.group(2)
            for directive in rest.split(","):
                if directive.strip().lower() in self._blocking_directives:
                    return line.strip()
        return None

    # -- robots.txt --------------------------------------------------------------------------------

    def _check_robots(self, scheme: str, host: str, port: int, url: str) -> None:
        rules = self._robots_rules(scheme, host, port)
        if self._cancel_requested:  # robots.txt "unavailable" because we abandoned it is no verdict
            raise _Fail(CANCELLED, f"cancelled while checking robots.txt of {scheme}://{host}:{port}")
        if rules.kind == _RobotsRules.DISALLOW_ALL:
            raise _Fail(ROBOTS_UNAVAILABLE, rules.detail)
        if not rules.allowed(url):
            raise _Fail(ROBOTS_DISALLOWED, f"robots.txt of {scheme}://{host}:{port} disallows {url}")

    def _robots_rules(self, scheme: str, host: str, port: int) -> _RobotsRules:
        origin = (scheme, host, port)
        with self._robots_lock:
            slot = self._robots.get(origin)
            owner = slot is None or (slot.ready.is_set() and slot.expires <= time.monotonic())
            if owner:
                slot = self._robots[origin] = _RobotsSlot()
        if owner:
            try:
                rules = self._fetch_robots(scheme, host, port)
            except Exception as exc:  # never leave waiters hanging
                rules = _RobotsRules(_RobotsRules.DISALLOW_ALL, f"robots.txt check failed: {exc!r}")
            if rules.crawl_delay:
                self._limiter.set_interval((host, port), min(float(rules.crawl_delay), self.max_crawl_delay_s))
            slot.rules = rules
            slot.expires = time.monotonic() + self.robots_ttl_s
            slot.ready.set()
        else:
            while not slot.ready.wait(_POLL_S):
                if self._cancel_requested:
                    raise _Fail(CANCELLED, "cancelled while waiting for robots.txt")
        return slot.rules

    def _fetch_robots(self, scheme: str, host: str, port: int) -> _RobotsRules:
        netloc = f"[{host}]" if ":" in host else host
        if port != _DEFAULT_PORTS[scheme]:
            netloc += f":{port}"
        current = f"{scheme}://{netloc}/robots.txt"
        visited = {current}

        def handler(resp, deadline):
            status = resp.status_code
            redirect = self._redirect_or_retry(resp, deadline)
            if redirect is not None:
                return redirect
            if status >= 500:
                raise _Fail(f"http_{status}", f"HTTP {status}")
            if 200 <= status < 300:
                body = self._read_body(resp, deadline, _ROBOTS_MAX_BYTES, cut_at_limit=True)
                return _RobotsRules.parse(body.decode("utf-8", "replace"), self.agent_token)
            self._drain(resp, deadline)
            return _RobotsRules(_RobotsRules.ALLOW_ALL, f"robots.txt: HTTP {status}")  # 4xx: no rules

        try:
            for _ in range(5 + 1):  # RFC 9309: follow at least five redirects
                r_scheme, r_host, r_port = _url_parts(current)
                self._precheck(r_host, r_port, (host, port))
                outcome = self._with_retries(current, (r_host, r_port), handler, None, "text/plain,*/*;q=0.5",
                                             (host, port))
                if not isinstance(outcome, _Redirect):
                    return outcome
                target = self._redirect_target(current, outcome.location)
                if target in visited:
                    return _RobotsRules(_RobotsRules.ALLOW_ALL, "robots.txt redirect loop")
                visited.add(target)
                current = target
            return _RobotsRules(_RobotsRules.ALLOW_ALL, "robots.txt: too many redirects")  # RFC: unavailable
        except _Fail as f:
            return _RobotsRules(_RobotsRules.DISALLOW_ALL,
                                f"robots.txt of {scheme}://{netloc} unavailable: {f.reason}: {f.detail}")


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
