"""The downloader against a real local HTTP server that injects faults by path.

All traffic stays on 127.0.0.1 / localhost: an audit hook records every socket.connect of the test
process and each test checks that nothing else was dialled (the private-address tests check the
refused address was never dialled at all).
"""

from __future__ import annotations

import datetime
import email.utils
import re
import ssl
import subprocess
import sys
import threading
import time
import urllib.parse
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import cv2
import numpy as np
import pytest

from pipeline.sources.download import (
    REASONS,
    Downloader,
    DownloadSettings,
    FetchResult,
    canonicalize_url,
    is_public_address,
    is_reason,
)
from pipeline.sources.download.addresses import parse_allow_entry
from pipeline.sources.download.results import parse_retry_after
from pipeline.sources.download.robots import RobotsRules
from tests.conftest import PROJECT

# ---------------------------------------------------------------------------------------------
# Every outgoing connection of this process (the audit event fires before the connect happens).

_CONNECTS: list = []


def _audit(event, args):
    if event == "socket.connect":
        _CONNECTS.append(args[1])


sys.addaudithook(_audit)


def _connected_hosts(since: int) -> set[str]:
    return {addr[0] for addr in _CONNECTS[since:] if isinstance(addr, tuple)}


@pytest.fixture(autouse=True)
def only_local_traffic():
    start = len(_CONNECTS)
    yield start
    assert _connected_hosts(start) <= {"127.0.0.1", "::1"}, _connected_hosts(start)


# ---------------------------------------------------------------------------------------------
# Test images: generated gradients, never files from ../shared.

_JPEGS: dict[str, bytes] = {}


def jpeg(name: str = "a", w: int = 64, h: int = 48) -> bytes:
    key = f"{name}:{w}x{h}"
    if key not in _JPEGS:
        seed = zlib.crc32(name.encode())
        y, x = np.mgrid[0:h, 0:w]
        img = np.stack([(x * 4 + seed) % 256, (y * 5 + seed // 7) % 256, ((x + y) * 3) % 256], axis=-1)
        ok, buf = cv2.imencode(".jpg", img.astype(np.uint8), [cv2.IMWRITE_JPEG_QUALITY, 90])
        assert ok
        _JPEGS[key] = buf.tobytes()
    return _JPEGS[key]


HTML = b"<!doctype html><html><head><title>not an image</title></head><body>hi</body></html>"

ROBOTS_RULES = """\
User-agent: otherbot
Disallow: /

User-agent: toonface

Disallow: /private/
Allow: /private/open
Disallow: /*.png$
"""

ROBOTS_CRAWL_DELAY = "User-agent: *\nCrawl-delay: 1\nDisallow: /private/\n"


class FaultServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, robots: str = "rules", tls: ssl.SSLContext | None = None):
        super().__init__(("127.0.0.1", 0), FaultHandler)
        if tls is not None:
            self.socket = tls.wrap_socket(self.socket, server_side=True)
        self.scheme = "https" if tls is not None else "http"
        self.robots = robots
        self.lock = threading.Lock()
        self.records: list[tuple[float, str, str]] = []  # (monotonic arrival, Host header, path)
        self.counters: dict[str, int] = {}
        self.thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def handle_error(self, request, client_address) -> None:
        # A client that gives up mid-request (a redirect loop, a timeout) resets its connection: the
        # behaviour under test, not a server fault, so no traceback in the test output.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)

    @property
    def port(self) -> int:
        return self.server_address[1]

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"{self.scheme}://{host}:{self.port}{path}"

    def record(self, host: str, path: str) -> int:
        with self.lock:
            self.records.append((time.monotonic(), host, path))
            self.counters[path] = self.counters.get(path, 0) + 1
            return self.counters[path]

    def paths(self) -> list[str]:
        with self.lock:
            return [p for _, _, p in self.records]

    def times(self, path: str | None = None, host: str | None = None) -> list[float]:
        with self.lock:
            return sorted(
                t
                for t, h, p in self.records
                if (path is None or p == path) and (host is None or h.split(":")[0] == host)
            )

    def close(self) -> None:
        self.shutdown()
        self.server_close()


# The downloader spaces request *starts*; the server sees arrivals, which a loaded machine delays now
# and then: the server's threads share the test process's GIL with the downloader's 8 workers. A late
# arrival shortens the next gap by as much (CI saw 0.211 s then 0.188 s at a 0.2 s interval; a clean
# clone on 2026-12-04 saw 0.253 s then 0.149 s, one arrival 53 ms late, the pair still 0.402 s). A limiter
# that let two requests through at once would show a gap near 0, far below 0.2 s - 0.08 s.
ARRIVAL_JITTER_S = 0.08


def assert_spaced(times: list[float], interval: float) -> None:
    """Requests arrived at least `interval` apart, up to arrival jitter: every gap, and every run of k
    gaps spans k intervals (so jitter cannot hide a limiter that lets two requests through at once)."""
    t = np.asarray(times)
    for k in range(1, len(t)):
        spans = t[k:] - t[:-k]
        assert spans.min() >= k * interval - ARRIVAL_JITTER_S, (k, np.diff(t).round(3).tolist())


class FaultHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # else small bodies wait 40 ms for a delayed ACK
    server: FaultServer

    def log_message(self, *args) -> None:
        pass

    def send(
        self,
        status: int,
        body: bytes = b"",
        ctype: str | None = "image/jpeg",
        headers: dict | None = None,
        length: int | None = None,
    ) -> None:
        self.send_response(status)
        if ctype is not None:
            self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body) if length is None else length))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:  # noqa: C901 - a routing table
        path = self.path
        n = self.server.record(self.headers.get("Host", ""), path)
        try:
            self.route(path, n)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def route(self, path: str, n: int) -> None:
        name = path.rsplit("/", 1)[-1]
        if path == "/robots.txt":
            mode = self.server.robots
            if mode == "rules":
                return self.send(200, ROBOTS_RULES.encode(), "text/plain")
            if mode == "crawl-delay":
                return self.send(200, ROBOTS_CRAWL_DELAY.encode(), "text/plain")
            if mode.startswith("http"):  # robots.txt redirects there
                return self.send(301, b"", "text/plain", {"Location": mode})
            return self.send(int(mode), b"no robots here", "text/plain")
        if path.startswith("/img/") or path.startswith("/private/") or path.startswith("/chain/10"):
            return self.send(200, jpeg(name))
        if path == "/slow.jpg":
            time.sleep(1.0)
            return self.send(200, jpeg(name))
        if path == "/drip.jpg":  # each piece well within read_timeout, the whole far beyond total_timeout
            body = jpeg("drip", 320, 240)
            self.send_response(200)
            self.send_header("Content-Type", "image/jpeg")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            for i in range(0, len(body), 256):
                self.wfile.write(body[i : i + 256])
                self.wfile.flush()
                time.sleep(0.1)
            return
        if path == "/err500.jpg":
            return self.send(500, b"boom", "text/plain")
        m = re.match(r"^/flaky/\w+/(\d+)\.jpg$", path)
        if m:
            if n <= int(m.group(1)):
                return self.send(500, b"try again", "text/plain")
            return self.send(200, jpeg(name))
        if path.startswith("/rl/"):
            if n == 1:
                return self.send(429, b"slow down", "text/plain", {"Retry-After": "1"})
            return self.send(200, jpeg(name))
        if path.startswith("/rl-date/"):
            if n == 1:
                when = email.utils.formatdate(time.time() + 2, usegmt=True)
                return self.send(503, b"later", "text/plain", {"Retry-After": when})
            return self.send(200, jpeg(name))
        if path == "/rl-long.jpg":
            return self.send(429, b"come back in ten minutes", "text/plain", {"Retry-After": "600"})
        if path == "/rl-always.jpg":
            return self.send(429, b"no", "text/plain", {"Retry-After": "0"})
        if path == "/truncated.jpg":
            body = jpeg("truncated")
            self.send(200, body[: len(body) // 2], length=len(body))
            self.close_connection = True
            return
        if path == "/text-jpeg.jpg":
            return self.send(200, jpeg(name), "text/plain")
        if path == "/octet.jpg":
            return self.send(200, jpeg(name), "application/octet-stream")
        if path == "/notype.jpg":
            return self.send(200, jpeg(name), None)
        if path == "/html-as-jpeg.jpg":
            return self.send(200, HTML, "image/jpeg")
        if path == "/page.html":
            return self.send(200, HTML, "text/html; charset=utf-8")
        if path == "/loop/a":
            return self.send(302, b"", "text/plain", {"Location": "/loop/b"})
        if path == "/loop/b":
            return self.send(301, b"", "text/plain", {"Location": f"http://127.0.0.1:{self.server.port}/loop/a#x"})
        m = re.match(r"^/chain/(\d+)$", path)
        if m:
            return self.send(302, b"moved", "text/plain", {"Location": f"/chain/{int(m.group(1)) + 1}"})
        if path.startswith("/redirect?to="):
            return self.send(302, b"", "text/plain", {"Location": urllib.parse.unquote(path.split("=", 1)[1])})
        if path == "/big-cl.jpg":
            self.send(200, jpeg(name)[:100], length=50_000_000)
            self.close_connection = True
            return
        if path == "/big-chunked.jpg":
            self.send_response(200)
            self.send_header("Content-Type", "image/jpeg")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            chunk = jpeg("big", 320, 240)[:16384].ljust(16384, b"\0")
            for _ in range(128):  # 2 MiB
                self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            self.wfile.write(b"0\r\n\r\n")
            return
        if path == "/noai.jpg":
            return self.send(200, jpeg(name), headers={"X-Robots-Tag": "noai"})
        if path == "/noimageai.jpg":
            return self.send(200, jpeg(name), headers={"X-Robots-Tag": "max-image-preview:large, noimageai"})
        if path == "/mine-noai.jpg":
            return self.send(200, jpeg(name), headers={"X-Robots-Tag": "toonface: noai"})
        if path == "/otherbot-noai.jpg":
            return self.send(200, jpeg(name), headers={"X-Robots-Tag": "otherbot: noai"})
        if path == "/noindex.jpg":
            return self.send(200, jpeg(name), headers={"X-Robots-Tag": "noindex"})
        return self.send(404, b"not found", "text/plain")


@pytest.fixture(scope="module")
def server():
    srv = FaultServer()
    yield srv
    srv.close()


def make(**kw) -> Downloader:
    """Short timeouts and intervals so the whole file stays fast."""
    settings = dict(
        min_interval_s=0.0,
        connect_timeout=1.0,
        read_timeout=1.0,
        total_timeout=3.0,
        retries=0,
        backoff_base_s=0.01,
        allow_private_hosts={"127.0.0.1"},
    )
    settings.update(kw)
    return Downloader(DownloadSettings(**settings))


def check(res: FetchResult, reason: str | None) -> FetchResult:
    assert isinstance(res, FetchResult)
    assert res.reason == reason, (res.reason, res.detail)
    assert res.ok is (reason is None)
    if res.ok:
        assert res.data and res.sha256 and len(res.sha256) == 64
    else:
        assert res.data is None and res.sha256 is None and is_reason(res.reason)
    return res


# ---------------------------------------------------------------------------------------------
# canonicalize_url


@pytest.mark.parametrize(
    "url, expected",
    [
        ("HTTP://Example.COM:80/a/./b/../c?b=2&a=1#frag", "http://example.com/a/c?a=1&b=2"),
        ("https://example.com:443", "https://example.com/"),
        ("https://example.com:8443/x", "https://example.com:8443/x"),
        ("http://example.com:443/x", "http://example.com:443/x"),
        ("http://example.com/%7euser/%41%62c%2f%2a", "http://example.com/~user/Abc%2F%2A"),
        ("http://example.com/a%3ab", "http://example.com/a%3Ab"),
        ("http://example.com/a b/é", "http://example.com/a%20b/%C3%A9"),
        ("http://example.com/100%", "http://example.com/100%25"),
        ("http://example.com/a/../../b/./c/", "http://example.com/b/c/"),
        ("http://example.com/%2e%2E/x/%2E", "http://example.com/x/"),
        ("http://example.com/a//b", "http://example.com/a//b"),
        ("http://example.com/?utm_source=x&id=3&fbclid=y&gclid=z&UTM_Medium=q", "http://example.com/?id=3"),
        ("http://example.com/?", "http://example.com/"),
        ("http://example.com/p?&&b=1&&a", "http://example.com/p?a&b=1"),
        ("http://example.com/p?q=a+b&p=%2b&q=%7E", "http://example.com/p?p=%2B&q=a+b&q=~"),
        ("http://bücher.example/", "http://xn--bcher-kva.example/"),
        ("http://ＥＸＡＭＰＬＥ.com/", "http://example.com/"),
        ("http://EXAMPLE.com./", "http://example.com/"),
        ("http://[::FFFF:7F00:1]:80/", "http://[::ffff:7f00:1]/"),
        ("http://0x7f.1/", "http://127.0.0.1/"),
        ("http://2130706433/", "http://127.0.0.1/"),
        ("http://0177.0.0.01/", "http://127.0.0.1/"),
        ("http://user:p%61ss@Example.com/", "http://user:pass@example.com/"),
        ("  http://example.com/x\n", "http://example.com/x"),
    ],
)
def test_canonicalize(url, expected):
    assert canonicalize_url(url) == expected
    assert canonicalize_url(expected) == expected  # idempotent


@pytest.mark.parametrize(
    "url",
    [
        "",
        "example.com/a.jpg",
        "//example.com/a.jpg",
        "ftp://example.com/a",
        "javascript:alert(1)",
        "http:///a",
        "http://exa mple.com/",
        "http://example.com:99999/",
        "http://example.com:0/",
        "http://example.com:8o/",
        "http://[::1/",
        "http://[fe80::1%25eth0]/",
        "http://1.2.3.4.5/",
        "http://256.1.1.1/",
        "http://a..b/",
        "http://exa<mple.com/",
    ],
)
def test_canonicalize_rejects(url):
    with pytest.raises(ValueError):
        canonicalize_url(url)


@pytest.mark.parametrize(
    "addr, public",
    [
        ("8.8.8.8", True),
        ("2001:4860:4860::8888", True),
        ("::ffff:8.8.8.8", True),
        ("64:ff9b::808:808", True),
        ("10.0.0.1", False),
        ("172.16.0.1", False),
        ("192.168.1.1", False),
        ("127.0.0.1", False),
        ("169.254.169.254", False),
        ("100.64.0.1", False),
        ("0.0.0.0", False),
        ("224.0.0.1", False),
        ("255.255.255.255", False),
        ("240.0.0.1", False),
        ("192.0.2.1", False),
        ("::1", False),
        ("::", False),
        ("fe80::1", False),
        ("fc00::1", False),
        ("fec0::1", False),
        ("ff02::1", False),
        ("ff0e::1", False),
        ("::ffff:127.0.0.1", False),
        ("::ffff:169.254.169.254", False),
        ("::ffff:10.0.0.1", False),
        ("64:ff9b::a00:1", False),
        ("64:ff9b:1::1", False),
        ("2002:a00:1::1", False),
        ("2001::1", False),
        ("2001:db8::1", False),
        ("::127.0.0.1", False),
    ],
)
def test_is_public_address(addr, public):
    assert is_public_address(addr) is public


def test_reason_codes_documented():
    for code in [
        "invalid_url",
        "private_address",
        "robots_disallowed",
        "robots_unavailable",
        "x_robots_tag",
        "timeout",
        "connection_error",
        "too_many_requests",
        "too_many_redirects",
        "redirect_loop",
        "too_large",
        "truncated",
        "wrong_content_type",
        "not_an_image",
    ]:
        assert code in REASONS
    assert is_reason("http_404") and is_reason("http_500") and not is_reason("http_5000")


def test_retry_after_parsing():
    assert parse_retry_after("7") == 7.0
    later = parse_retry_after(email.utils.formatdate(time.time() + 30, usegmt=True))
    assert 28 <= later <= 31
    assert parse_retry_after(email.utils.formatdate(time.time() - 30, usegmt=True)) == 0.0
    assert parse_retry_after("soon") is None and parse_retry_after(None) is None


# ---------------------------------------------------------------------------------------------
# Happy paths and content checks


def test_fetch_image_ok(server):
    with make() as dl:
        res = check(dl.fetch(server.url("/img/ok.jpg")), None)
    assert res.data == jpeg("ok.jpg") and res.format == "jpeg" and res.http_status == 200
    assert res.attempts == 1 and res.content_type == "image/jpeg"
    assert res.url == res.final_url == server.url("/img/ok.jpg")


def test_content_type_rules(server):
    with make() as dl:
        check(dl.fetch(server.url("/text-jpeg.jpg")), "wrong_content_type")
        assert check(dl.fetch(server.url("/octet.jpg")), None).format == "jpeg"
        check(dl.fetch(server.url("/notype.jpg")), None)
        res = check(dl.fetch(server.url("/html-as-jpeg.jpg")), "not_an_image")
        assert res.content_type == "image/jpeg"
        assert check(dl.fetch(server.url("/page.html"), expect="html"), None).data == HTML
        check(dl.fetch(server.url("/img/a.jpg"), expect="html"), "wrong_content_type")


def test_http_errors(server):
    with make(retries=1) as dl:
        res = check(dl.fetch(server.url("/nope.jpg")), "http_404")
        assert res.attempts == 1 and res.http_status == 404  # 4xx is not retried
        res = check(dl.fetch(server.url("/err500.jpg")), "http_500")
        assert res.attempts == 2 and res.http_status == 500


def test_invalid_urls():
    with make() as dl:
        check(dl.fetch("ftp://127.0.0.1/x.jpg"), "invalid_url")
        check(dl.fetch("not a url"), "invalid_url")


# ---------------------------------------------------------------------------------------------
# Timeouts, retries, Retry-After


def test_read_timeout(server):
    with make(read_timeout=0.3) as dl:
        t0 = time.monotonic()
        res = check(dl.fetch(server.url("/slow.jpg")), "timeout")
        assert time.monotonic() - t0 < 0.9 and res.attempts == 1


def test_total_timeout_while_streaming(server):
    # 256 bytes every 0.1 s: the read timeout never fires, the total timeout must.
    with make(read_timeout=0.5, total_timeout=0.6) as dl:
        t0 = time.monotonic()
        res = check(dl.fetch(server.url("/drip.jpg")), "timeout")
        assert time.monotonic() - t0 < 1.2
        assert "total_timeout" in res.detail


def test_retry_until_success(server):
    with make(retries=3) as dl:
        res = check(dl.fetch(server.url("/flaky/twice/2.jpg")), None)
    assert res.attempts == 3
    assert server.paths().count("/flaky/twice/2.jpg") == 3


def test_retry_after_seconds_is_honoured(server):
    path = "/rl/secs.jpg"
    with make(retries=2) as dl:
        res = check(dl.fetch(server.url(path)), None)
    assert res.attempts == 2
    first, second = server.times(path)
    assert second - first >= 1.0 - ARRIVAL_JITTER_S, second - first


def test_retry_after_http_date(server):
    path = "/rl-date/d.jpg"
    with make(retries=2) as dl:
        res = check(dl.fetch(server.url(path)), None)
    assert res.attempts == 2
    first, second = server.times(path)
    assert second - first >= 0.9, second - first  # HTTP-date has 1 s resolution


def test_retry_after_too_long_gives_up(server):
    with make(retries=3, max_retry_after_s=2) as dl:
        t0 = time.monotonic()
        res = check(dl.fetch(server.url("/rl-long.jpg")), "too_many_requests")
    assert res.attempts == 1 and time.monotonic() - t0 < 1.0 and "max_retry_after_s" in res.detail


def test_429_after_retries(server):
    with make(retries=1) as dl:
        res = check(dl.fetch(server.url("/rl-always.jpg")), "too_many_requests")
    assert res.attempts == 2 and res.http_status == 429


# ---------------------------------------------------------------------------------------------
# Size and truncation


def test_truncated_body(server):
    with make() as dl:
        check(dl.fetch(server.url("/truncated.jpg")), "truncated")


def test_too_large(server):
    with make(max_bytes=100_000) as dl:
        res = check(dl.fetch(server.url("/big-cl.jpg")), "too_large")
        assert "Content-Length" in res.detail
        t0 = time.monotonic()
        res = check(dl.fetch(server.url("/big-chunked.jpg")), "too_large")
        assert "Content-Length" not in res.detail and time.monotonic() - t0 < 2


# ---------------------------------------------------------------------------------------------
# Redirects


def test_redirect_loop(server):
    with make() as dl:
        res = check(dl.fetch(server.url("/loop/a")), "redirect_loop")
    assert res.attempts == 2


def test_redirect_chain(server):
    with make(max_redirects=3) as dl:
        res = check(dl.fetch(server.url("/chain/0")), "too_many_redirects")
        assert res.attempts == 4
        res = check(dl.fetch(server.url("/chain/7")), None)  # 7 -> 8 -> 9 -> 10: three hops
        assert res.final_url == server.url("/chain/10") and res.url == server.url("/chain/7")
        assert res.attempts == 4


@pytest.mark.parametrize(
    "target, refused_ip",
    [
        ("http://10.0.0.1/x", "10.0.0.1"),
        ("http://169.254.169.254/latest/meta-data/", "169.254.169.254"),
        ("http://[::ffff:a9fe:a9fe]/latest/meta-data/", "::ffff:a9fe:a9fe"),
        ("http://0xA9FEA9FE/", "169.254.169.254"),
    ],
)
def test_redirect_to_private_address_is_refused_before_connecting(server, only_local_traffic, target, refused_ip):
    with make() as dl:
        res = check(dl.fetch(server.url(f"/redirect?to={target}")), "private_address")
    assert res.final_url == canonicalize_url(target)
    assert res.attempts == 1  # only the redirect itself was requested
    dialled = _connected_hosts(only_local_traffic)
    assert refused_ip not in dialled and dialled <= {"127.0.0.1"}


def test_redirect_to_non_allowlisted_local_name(server, only_local_traffic):
    # localhost resolves to 127.0.0.1 but only the literal 127.0.0.1 is allow-listed.
    with make() as dl:
        check(dl.fetch(server.url(f"/redirect?to=http://localhost:{server.port}/img/l.jpg")), "private_address")
    assert "/img/l.jpg" not in server.paths()


def test_private_address_not_allow_listed(server, only_local_traffic):
    before = len(server.paths())
    with make(allow_private_hosts=set()) as dl:
        for url in [
            server.url("/img/p.jpg"),
            server.url("/img/p.jpg", "localhost"),
            f"http://[::ffff:127.0.0.1]:{server.port}/img/p.jpg",
            f"http://2130706433:{server.port}/x.jpg",
        ]:
            res = check(dl.fetch(url), "private_address")
            assert res.attempts == 0
    assert len(server.paths()) == before  # not even robots.txt
    assert not _connected_hosts(only_local_traffic)


def test_connection_pin_refuses_rebinding(server, only_local_traffic, monkeypatch):
    """The connect step re-checks: a name that passed the first check but resolves to a private
    address when the connection is made (DNS rebinding) is refused, not dialled."""
    with make(allow_private_hosts=set(), obey_robots=False) as dl:
        real = dl._guard.resolve
        calls = []

        def rebinding(host, *args):
            calls.append(host)
            if len(calls) == 1 or len(calls) == 2:
                return ["93.184.215.14"]  # pretend the pre-checks saw a public address
            return real(host, *args)  # then the connection layer resolves to 127.0.0.1

        monkeypatch.setattr(dl._guard, "resolve", rebinding)
        check(dl.fetch(server.url("/img/rebind.jpg")), "private_address")
    assert len(calls) >= 3
    assert "/img/rebind.jpg" not in server.paths()
    assert not _connected_hosts(only_local_traffic)


# ---------------------------------------------------------------------------------------------
# The private-host allow-list holds origins: a redirect cannot move to another port of an allowed host.


@pytest.fixture
def other():
    """A second server on the same host, another port: what a redirect must not reach unasked."""
    srv = FaultServer()
    yield srv
    srv.close()


def _dialled_ports(since: int) -> set[int]:
    return {addr[1] for addr in _CONNECTS[since:] if isinstance(addr, tuple)}


def test_allowed_host_without_port_does_not_let_a_redirect_reach_another_port(server, other, only_local_traffic):
    with make() as dl:  # allow_private_hosts={"127.0.0.1"}
        res = check(dl.fetch(server.url(f"/redirect?to={other.url('/img/o.jpg')}")), "private_address")
        assert res.final_url == other.url("/img/o.jpg") and res.attempts == 1
        assert f"port {other.port}" in res.detail and "allow_private_hosts" in res.detail
        assert other.paths() == [] and other.port not in _dialled_ports(only_local_traffic)
        check(dl.fetch(other.url("/img/o.jpg")), None)  # asked for directly, that origin is fine


def test_allow_list_entry_with_a_port_is_that_origin_only(server, other, only_local_traffic):
    to_other = server.url(f"/redirect?to={other.url('/img/o2.jpg')}")
    with make(allow_private_hosts={f"127.0.0.1:{server.port}"}) as dl:
        check(dl.fetch(server.url("/img/s.jpg")), None)
        check(dl.fetch(to_other), "private_address")
        res = check(dl.fetch(other.url("/img/o2.jpg")), "private_address")
        assert res.attempts == 0
    assert other.paths() == [] and other.port not in _dialled_ports(only_local_traffic)
    with make(allow_private_hosts=[f"127.0.0.1:{server.port}", f"127.0.0.1:{other.port}"]) as dl:
        res = check(dl.fetch(to_other), None)  # both origins listed: the redirect may go there
        assert res.final_url == other.url("/img/o2.jpg") and res.attempts == 2


def test_allowed_bare_hosts_cover_only_the_origin_a_fetch_starts_at(server):
    # localhost and 127.0.0.1 are both listed, but a fetch started at localhost may not hop to 127.0.0.1.
    with make(allow_private_hosts={"127.0.0.1", "localhost"}) as dl:
        url = server.url(f"/redirect?to={server.url('/img/b.jpg')}", "localhost")
        check(dl.fetch(url), "private_address")
        check(dl.fetch(server.url("/redirect?to=/img/b.jpg", "localhost")), None)  # same origin is fine


def test_robots_txt_redirect_to_another_port_is_refused(other, only_local_traffic):
    srv = FaultServer(robots=other.url("/robots.txt"))
    try:
        with make() as dl:
            res = check(dl.fetch(srv.url("/img/r.jpg")), "robots_unavailable")
        assert "private_address" in res.detail
        assert srv.paths() == ["/robots.txt"] and other.paths() == []
        assert other.port not in _dialled_ports(only_local_traffic)
    finally:
        srv.close()


@pytest.mark.parametrize(
    "entry, parsed",
    [
        ("127.0.0.1", ("127.0.0.1", None)),
        (" LocalHost:8080 ", ("localhost", 8080)),
        ("::1", ("::1", None)),
        ("[::1]", ("::1", None)),
        ("[0:0::1]:8443", ("::1", 8443)),
        ("10.1.2.3", ("10.1.2.3", None)),
    ],
)
def test_allow_list_entries(entry, parsed):
    assert parse_allow_entry(entry) == parsed


@pytest.mark.parametrize(
    "entry",
    [
        "127.0.0.1:",
        "127.0.0.1:0",
        "127.0.0.1:99999",
        "host:http",
        "[::1",
        "[::1]x",
        ":80",
        "::1:zz",
        "http://127.0.0.1:8080",
    ],
)
def test_malformed_allow_list_entries_are_refused(entry):
    with pytest.raises(ValueError, match="allow_private_hosts"):
        Downloader(DownloadSettings(allow_private_hosts=[entry]))


# ---------------------------------------------------------------------------------------------
# robots.txt and X-Robots-Tag


def test_robots_disallow(server):
    with make() as dl:
        check(dl.fetch(server.url("/private/secret.jpg")), "robots_disallowed")
        check(dl.fetch(server.url("/private/open.jpg")), None)  # longer Allow wins
        check(dl.fetch(server.url("/img/pic.png")), "robots_disallowed")  # wildcard + '$'
        check(dl.fetch(server.url("/img/pic.png?v=2")), None)
    paths = server.paths()
    assert "/private/secret.jpg" not in paths and "/img/pic.png" not in paths
    with make(obey_robots=False) as dl:
        check(dl.fetch(server.url("/private/secret.jpg")), None)


def test_robots_fetched_once_per_origin(server):
    with make() as dl:
        before = server.paths().count("/robots.txt")
        for i in range(3):
            check(dl.fetch(server.url(f"/img/once{i}.jpg")), None)
        assert server.paths().count("/robots.txt") == before + 1


@pytest.mark.parametrize(
    "mode, reason", [("500", "robots_unavailable"), ("503", "robots_unavailable"), ("404", None), ("403", None)]
)
def test_robots_status(mode, reason):
    srv = FaultServer(robots=mode)
    try:
        with make() as dl:
            check(dl.fetch(srv.url("/img/r1.jpg")), reason)
            check(dl.fetch(srv.url("/img/r2.jpg")), reason)
        paths = srv.paths()
        assert paths.count("/robots.txt") == 1
        if reason:
            assert paths == ["/robots.txt"]  # the images were never requested
    finally:
        srv.close()


def test_x_robots_tag(server):
    with make() as dl:
        check(dl.fetch(server.url("/noai.jpg")), "x_robots_tag")
        check(dl.fetch(server.url("/noimageai.jpg")), "x_robots_tag")
        check(dl.fetch(server.url("/mine-noai.jpg")), "x_robots_tag")
        check(dl.fetch(server.url("/otherbot-noai.jpg")), None)
        check(dl.fetch(server.url("/noindex.jpg")), None)
    with make(honour_noindex=True) as dl:
        check(dl.fetch(server.url("/noindex.jpg")), "x_robots_tag")


# ---------------------------------------------------------------------------------------------
# fetch_many: dedup and the per-domain rate limit


def test_fetch_many_dedups_spellings(server):
    port = server.port
    urls = [
        f"http://127.0.0.1:{port}/img/dedup.jpg",
        f"HTTP://127.0.0.1:{port}/./img/%64edup.jpg#top",
        f"http://127.0.0.1:{port}/img/x/../dedup.jpg?utm_source=mail",
        "mailto:someone@example.com",
    ]
    with make() as dl:
        results = list(dl.fetch_many(urls))
    assert sorted(r.reason or "ok" for r in results) == ["invalid_url", "ok"]
    assert server.paths().count("/img/dedup.jpg") == 1


def test_rate_limit_per_domain_across_threads():
    srv = FaultServer()
    try:
        urls = []
        for host in ("127.0.0.1", "localhost"):
            urls += [srv.url(f"/img/rate{i}.jpg", host) for i in range(11)]
            urls.append(srv.url(f"/flaky/{host.replace('.', '_')}/1.jpg", host))  # one retry, rate limited too
        interval = 0.2
        with make(
            min_interval_s=interval,
            max_workers=8,
            max_per_domain=4,
            retries=2,
            allow_private_hosts={"127.0.0.1", "localhost"},
        ) as dl:
            t0 = time.monotonic()
            results = list(dl.fetch_many(urls))
            elapsed = time.monotonic() - t0
        assert len(results) == 24 and all(r.ok for r in results), [(r.url, r.reason) for r in results if not r.ok]
        spans = []
        for host in ("127.0.0.1", "localhost"):
            times = srv.times(host=host)
            assert len(times) == 14  # robots.txt + 12 URLs + 1 retry
            assert_spaced(times, interval)
            spans.append((times[0], times[-1]))
        # The two domains proceed in parallel: their time spans overlap, and the whole run takes about
        # as long as one domain alone, not the sum.
        assert max(s for s, _ in spans) < min(e for _, e in spans)
        assert elapsed < 14 * interval * 1.5, elapsed
        paths = srv.paths()
        assert paths.count("/robots.txt") == 2
    finally:
        srv.close()


CRAWLER = """
import sys, time
from pipeline.sources.download import Downloader, DownloadSettings
base, start_at, shared, tag = sys.argv[1], float(sys.argv[2]), sys.argv[3] or None, sys.argv[4]
dl = Downloader(DownloadSettings(min_interval_s=0.25, retries=0, obey_robots=False,
                                 allow_private_hosts={"127.0.0.1"}, rate_limit_dir=shared))
time.sleep(max(0.0, start_at - time.time()))
for i in range(4):
    assert dl.fetch(f"{base}/img/{tag}{i}.jpg").ok
"""


@pytest.mark.parametrize("shared", [True, False])
def test_rate_limit_shared_by_processes_through_a_folder(tmp_path, shared):
    """Two crawler processes start at the same moment. With a shared rate-limit folder the server
    sees the per-domain spacing across both; without one (the control) each keeps only its own."""
    srv = FaultServer()
    try:
        start_at = time.time() + 3.0  # both are up and waiting by then
        procs = [
            subprocess.Popen(
                [
                    sys.executable,
                    "-c",
                    CRAWLER,
                    srv.url(""),
                    str(start_at),
                    str(tmp_path / "ratelimit") if shared else "",
                    tag,
                ],
                cwd=PROJECT,
            )
            for tag in ("a", "b")
        ]
        assert [p.wait(60) for p in procs] == [0, 0]
        times = srv.times()
        assert len(times) == 8
        if shared:
            assert_spaced(times, 0.25)
        else:
            assert np.diff(times).min() < 0.1, np.diff(times).round(3).tolist()
    finally:
        srv.close()


def test_crawl_delay_raises_the_interval():
    srv = FaultServer(robots="crawl-delay")
    try:
        with make() as dl:  # min_interval_s=0, but robots.txt asks for 1 s
            check(dl.fetch(srv.url("/img/cd1.jpg")), None)
            check(dl.fetch(srv.url("/img/cd2.jpg")), None)
        first, second = srv.times("/img/cd1.jpg") + srv.times("/img/cd2.jpg")
        assert second - first >= 1.0 - ARRIVAL_JITTER_S
    finally:
        srv.close()


# ---------------------------------------------------------------------------------------------
# HTTPS through the pinned connection: certificate and host name are still verified.


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "toonface test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    folder = tmp_path_factory.mktemp("tls")
    (folder / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (folder / "key.pem").write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return folder / "cert.pem", folder / "key.pem"


def test_https_verifies_certificate_and_host_name(tls_files):
    cert, key = tls_files
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    srv = FaultServer(tls=ctx)
    allow = {"127.0.0.1", "localhost"}
    try:
        # Trusted CA, name in the certificate: fine, although the socket is connected to the vetted IP.
        with make(verify=str(cert), allow_private_hosts=allow) as dl:
            res = check(dl.fetch(srv.url("/img/tls.jpg", "localhost")), None)
            assert res.url.startswith("https://localhost:")
            # Same server by IP: the certificate does not name 127.0.0.1.
            res = check(dl.fetch(srv.url("/img/tls.jpg")), "robots_unavailable")
            assert "CERTIFICATE_VERIFY_FAILED" in res.detail or "certificate" in res.detail.lower()
        # Default trust store: self-signed is refused (no retry for TLS errors).
        with make(allow_private_hosts=allow, obey_robots=False, retries=2) as dl:
            res = check(dl.fetch(srv.url("/img/tls.jpg", "localhost")), "connection_error")
            assert res.attempts == 1 and "TLS" in res.detail
    finally:
        srv.close()


# ---------------------------------------------------------------------------------------------
# robots.txt matching (RFC 9309 on top of urllib.robotparser's parsing), no network


@pytest.mark.parametrize(
    "robots, path, allowed",
    [
        ("User-agent: *\nDisallow: /a/\n", "/a/x.jpg", False),
        ("User-agent: *\nDisallow: /a/\n", "/b/x.jpg", True),
        ("User-agent: *\nDisallow: /\nAllow: /img/\n", "/img/x.jpg", True),  # longest match, not first
        ("User-agent: *\nAllow: /img/\nDisallow: /img/private/\n", "/img/private/x.jpg", False),
        ("User-agent: *\nDisallow: /x\nAllow: /x\n", "/x.jpg", True),  # tie: Allow wins
        ("User-agent: *\nDisallow: /*.gif$\n", "/a/b.gif", False),
        ("User-agent: *\nDisallow: /*.gif$\n", "/a/b.gif?x=1", True),
        ("User-agent: *\nDisallow: /*?\n", "/a.jpg?size=big", False),
        ("User-agent: *\nDisallow: /*?\n", "/a.jpg", True),
        ("User-agent: *\nDisallow: /\n\nUser-agent: toonface\nDisallow: /private/\n", "/img/a.jpg", True),
        ("User-agent: *\nDisallow: /\n\nUser-agent: ToonFace/2.0\nDisallow:\n", "/img/a.jpg", True),
        ("User-agent: face\nDisallow: /\n", "/img/a.jpg", True),  # not a substring match
        ("User-agent: toonface\n\nDisallow: /img/\n", "/img/a.jpg", False),  # blank line inside a group
        ("User-agent: otherbot\nDisallow: /\n", "/img/a.jpg", True),
        ("User-agent: *\nDisallow: /\n", "/robots.txt", True),
        ("User-agent: *\nDisallow: /caf%C3%A9/\n", "/café/x.jpg", False),
    ],
)
def test_robots_matching(robots, path, allowed):
    rules = RobotsRules.parse(robots, "toonface")
    url = canonicalize_url("http://example.com" + path)
    assert rules.allowed(url) is allowed


def test_fetch_many_yields_as_completed_and_slow_domains_do_not_block(server):
    urls = [server.url("/slow.jpg"), server.url("/img/fast.jpg", "localhost")]
    with make(read_timeout=0.3, max_workers=2, allow_private_hosts={"127.0.0.1", "localhost"}) as dl:
        results = list(dl.fetch_many(urls))
    assert [r.reason for r in results] == [None, "timeout"]
