"""The downloader's wall-clock deadline and cancellation, against servers that trickle bytes.

requests' read timeout restarts on every received packet, so a server that sends one byte every
half second never trips it; these servers do exactly that, in the status line and headers, in the
body, in robots.txt and in a TLS handshake. All of them listen on 127.0.0.1 and stop their threads
when the test ends.
"""

from __future__ import annotations

import os
import signal
import socket
import threading
import time

import pytest

from pipeline.sources.download import Downloader, DownloadSettings, FetchResult, is_reason

JPEG = b"\xff\xd8\xff\xe0" + b"\0" * 60  # magic bytes are enough for a successful fetch
SLOW_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n" % len(JPEG)
MARGIN_S = 0.8  # the watchdog polls every 0.1 s; the rest is a loaded CI machine


class TrickleServer:
    """A raw-socket HTTP server on 127.0.0.1 that controls the timing of every byte it sends.

    Paths: /fast.jpg answers at once; /slow-head.jpg sends its status line and headers one byte
    every `every` seconds; /slow-body.jpg sends the headers at once and the body a byte at a time;
    /redirect answers 302 to /slow-head.jpg; /robots.txt answers like `robots` names ("fast" or
    "slow-head"). With tls_stall=True it reads the ClientHello and then trickles a TLS record."""

    def __init__(self, every: float = 0.5, robots: str = "fast", tls_stall: bool = False):
        self.every = every
        self.robots = robots
        self.tls_stall = tls_stall
        self.stop = threading.Event()
        self.paths: list[str] = []
        self.connections = 0
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.05)
        self.port = self.sock.getsockname()[1]
        self.threads = [threading.Thread(target=self._accept, daemon=True)]
        self.threads[0].start()

    def url(self, path: str, scheme: str = "http") -> str:
        return f"{scheme}://127.0.0.1:{self.port}{path}"

    def close(self) -> None:
        self.stop.set()
        for t in list(self.threads):
            t.join(timeout=3)
        self.sock.close()
        assert not any(t.is_alive() for t in self.threads)

    def _accept(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            self.connections += 1
            t = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            self.threads.append(t)
            t.start()

    def _trickle(self, conn: socket.socket, data: bytes) -> None:
        for i in range(len(data)):
            if self.stop.wait(self.every):
                return
            conn.sendall(data[i : i + 1])

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(0.2)
            try:
                if self.tls_stall:  # a record header announcing 16 KiB, then its bytes one by one
                    conn.recv(65536)
                    conn.sendall(b"\x16\x03\x03\x40\x00")
                    return self._trickle(conn, b"\0" * 16384)
                while not self.stop.is_set():  # keep-alive: one request after another
                    head = b""
                    while b"\r\n\r\n" not in head and not self.stop.is_set():
                        try:
                            chunk = conn.recv(4096)
                        except TimeoutError:
                            continue
                        if not chunk:
                            return
                        head += chunk
                    if self.stop.is_set():
                        return
                    path = head.split(b" ", 2)[1].decode()
                    self.paths.append(path)
                    self._answer(conn, path)
            except OSError:  # the client gave up and closed or reset the connection
                return

    def _answer(self, conn: socket.socket, path: str) -> None:
        path = path.split("?", 1)[0]
        if path == "/robots.txt":
            path = "/slow-head.jpg" if self.robots == "slow-head" else "/robots-ok"
        if path == "/robots-ok":
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 0\r\n\r\n")
        elif path == "/fast.jpg":
            conn.sendall(SLOW_HEAD + JPEG)
        elif path == "/slow-head.jpg":
            self._trickle(conn, SLOW_HEAD + JPEG)
        elif path == "/slow-body.jpg":
            conn.sendall(SLOW_HEAD)
            self._trickle(conn, JPEG)
        elif path == "/redirect":
            conn.sendall(b"HTTP/1.1 302 Found\r\nLocation: /slow-head.jpg\r\nContent-Length: 0\r\n\r\n")
        else:
            conn.sendall(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")


@pytest.fixture
def slow():
    srv = TrickleServer()
    yield srv
    srv.close()


def make(**kw) -> Downloader:
    # read_timeout well above the byte interval: only the total (wall-clock) timeout can fire.
    settings = dict(
        min_interval_s=0.0,
        connect_timeout=1.0,
        read_timeout=2.0,
        total_timeout=1.5,
        retries=0,
        obey_robots=False,
        allow_private_hosts={"127.0.0.1"},
    )
    settings.update(kw)
    return Downloader(DownloadSettings(**settings))


def timed_fetch(dl: Downloader, url: str, **kw) -> tuple[FetchResult, float]:
    t0 = time.monotonic()
    res = dl.fetch(url, **kw)
    return res, time.monotonic() - t0


def assert_failed(res: FetchResult, reason: str) -> None:
    assert res.reason == reason, (res.reason, res.detail)
    assert not res.ok and res.data is None and is_reason(res.reason)


# ---------------------------------------------------------------------------------------------
# The wall-clock deadline


def test_headers_trickled_one_byte_at_a_time_hit_the_total_timeout(slow):
    with make() as dl:
        res, took = timed_fetch(dl, slow.url("/slow-head.jpg"))
    assert_failed(res, "timeout")
    assert "total_timeout=1.5" in res.detail
    assert 1.4 <= took < 1.5 + MARGIN_S, took
    assert res.attempts == 1 and res.http_status is None


def test_body_trickled_one_byte_at_a_time_hits_the_total_timeout(slow):
    with make() as dl:
        res, took = timed_fetch(dl, slow.url("/slow-body.jpg"))
    assert_failed(res, "timeout")
    assert "total_timeout" in res.detail and res.http_status == 200
    assert 1.4 <= took < 1.5 + MARGIN_S, took


def test_each_retry_gets_its_own_deadline(slow):
    with make(total_timeout=0.6, retries=1, backoff_base_s=0.01, backoff_max_s=0.01) as dl:
        res, took = timed_fetch(dl, slow.url("/slow-head.jpg"))
    assert_failed(res, "timeout")
    assert res.attempts == 2 and took < 2 * 0.6 + MARGIN_S, took


def test_a_redirect_hop_has_the_deadline_too(slow):
    with make() as dl:
        res, took = timed_fetch(dl, slow.url("/redirect"))
    assert_failed(res, "timeout")
    assert res.attempts == 2 and res.final_url == slow.url("/slow-head.jpg")
    assert took < 1.5 + MARGIN_S, took


def test_a_trickled_robots_txt_times_out_and_disallows_the_host():
    srv = TrickleServer(robots="slow-head")
    try:
        with make(obey_robots=True) as dl:
            res, took = timed_fetch(dl, srv.url("/fast.jpg"))
        assert_failed(res, "robots_unavailable")
        assert "timeout" in res.detail and "total_timeout" in res.detail
        assert took < 1.5 + MARGIN_S, took
        assert srv.paths == ["/robots.txt"]
    finally:
        srv.close()


def test_a_trickled_tls_handshake_hits_the_total_timeout():
    srv = TrickleServer(tls_stall=True)
    try:
        # ssl bounds one handshake call by the socket timeout, so only a connect timeout above
        # total_timeout leaves the handshake to the deadline.
        with make(connect_timeout=5.0) as dl:
            res, took = timed_fetch(dl, srv.url("/fast.jpg", "https"))
        assert_failed(res, "timeout")
        assert "total_timeout" in res.detail
        assert 1.4 <= took < 1.5 + MARGIN_S, took
    finally:
        srv.close()


@pytest.fixture
def black_hole():
    """A port whose connects hang: a listener that never accepts, its one-slot queue already full, so
    the kernel drops our SYN and keeps retrying it."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(0)
    port = srv.getsockname()[1]
    fillers = []
    for _ in range(4):
        c = socket.socket()
        c.setblocking(False)
        c.connect_ex(("127.0.0.1", port))
        fillers.append(c)
    probe = socket.socket()
    probe.settimeout(0.3)
    try:
        probe.connect(("127.0.0.1", port))
        hangs = False
    except TimeoutError:
        hangs = True
    try:
        if not hangs:
            pytest.skip("this kernel completes connects to a full listen queue")
        yield f"http://127.0.0.1:{port}/x.jpg"
    finally:
        for s in [probe, srv, *fillers]:
            s.close()


def test_a_connect_left_hanging_hits_the_total_timeout(black_hole):
    with make(connect_timeout=30.0) as dl:
        res, took = timed_fetch(dl, black_hole)
    assert_failed(res, "timeout")
    assert 1.4 <= took < 1.5 + MARGIN_S, took


def test_a_fast_server_is_unaffected(slow):
    with make() as dl:
        for _ in range(3):  # a reused keep-alive connection is watched like a new one
            res, took = timed_fetch(dl, slow.url("/fast.jpg"))
            assert res.ok, (res.reason, res.detail)
            assert res.data == JPEG and took < 1.0
    assert slow.connections == 1


# ---------------------------------------------------------------------------------------------
# Cancellation


def fetch_in_thread(dl: Downloader, url: str) -> tuple[threading.Thread, list]:
    out: list = []
    t = threading.Thread(target=lambda: out.append(dl.fetch(url)), daemon=True)
    t.start()
    return t, out


def test_cancel_abandons_a_fetch_stuck_in_the_headers(slow):
    dl = make(total_timeout=60.0, read_timeout=30.0)
    t, out = fetch_in_thread(dl, slow.url("/slow-head.jpg"))
    time.sleep(0.7)  # the request is sent and a byte or two of the status line arrived
    assert slow.paths == ["/slow-head.jpg"]
    t0 = time.monotonic()
    dl.cancel()
    t.join(timeout=2.0)
    assert not t.is_alive() and time.monotonic() - t0 < 2.0
    assert_failed(out[0], "cancelled")
    assert dl.cancelled

    # New fetches are refused without touching the network.
    before = slow.connections
    res, took = timed_fetch(dl, slow.url("/fast.jpg"))
    assert_failed(res, "cancelled")
    assert res.attempts == 0 and took < 0.1 and slow.connections == before
    dl.close()


def test_cancel_abandons_a_fetch_stuck_in_the_body(slow):
    dl = make(total_timeout=60.0, read_timeout=30.0)
    t, out = fetch_in_thread(dl, slow.url("/slow-body.jpg"))
    time.sleep(0.7)
    t0 = time.monotonic()
    dl.cancel()
    t.join(timeout=2.0)
    assert not t.is_alive() and time.monotonic() - t0 < 2.0
    assert_failed(out[0], "cancelled")
    dl.close()


def test_cancel_abandons_a_hanging_connect(black_hole):
    dl = make(connect_timeout=30.0, total_timeout=60.0)
    t, out = fetch_in_thread(dl, black_hole)
    time.sleep(0.5)
    t0 = time.monotonic()
    dl.cancel()
    t.join(timeout=2.0)
    assert not t.is_alive() and time.monotonic() - t0 < 2.0
    assert_failed(out[0], "cancelled")
    dl.close()


def test_cancel_wakes_a_fetch_waiting_for_the_rate_limit(slow):
    dl = make(min_interval_s=60.0)
    assert dl.fetch(slow.url("/fast.jpg")).ok
    t, out = fetch_in_thread(dl, slow.url("/fast.jpg?again"))  # must wait 60 s for its turn
    time.sleep(0.3)
    t0 = time.monotonic()
    dl.cancel()
    t.join(timeout=2.0)
    assert not t.is_alive() and time.monotonic() - t0 < 2.0
    assert_failed(out[0], "cancelled")
    assert slow.paths == ["/fast.jpg"]
    dl.close()


def test_cancel_ends_fetch_many_promptly(slow):
    urls = [slow.url(f"/slow-head.jpg?{i}") for i in range(3)] + [slow.url("/fast.jpg")]
    dl = make(total_timeout=60.0, read_timeout=30.0, max_workers=2, max_per_domain=2)
    threading.Timer(0.7, dl.cancel).start()
    t0 = time.monotonic()
    results = list(dl.fetch_many(urls))
    assert time.monotonic() - t0 < 0.7 + 2.0
    # The two in flight and the two still queued all come back, as cancelled.
    assert sorted(r.url for r in results) == sorted(urls)
    assert {r.reason for r in results} == {"cancelled"}
    dl.close()


def test_cancel_from_a_signal_handler(slow):
    """What the ingest does on SIGTERM: the handler runs in the main thread, which is itself blocked
    in the fetch; cancel() must neither deadlock there nor wait for the server."""
    dl = make(total_timeout=60.0, read_timeout=30.0)
    previous = signal.signal(signal.SIGUSR1, lambda signum, frame: dl.cancel())
    try:
        threading.Timer(0.7, os.kill, (os.getpid(), signal.SIGUSR1)).start()
        res, took = timed_fetch(dl, slow.url("/slow-head.jpg"))
    finally:
        signal.signal(signal.SIGUSR1, previous)
        dl.close()
    assert_failed(res, "cancelled")
    assert took < 0.7 + 2.0, took
