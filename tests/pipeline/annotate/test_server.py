"""The real server (uvicorn in a subprocess): acknowledged decisions survive SIGKILL, raw
path-traversal requests are refused, the command line creates annotators, oversized bodies are
refused unread, SIGTERM and SIGINT stop it promptly."""

import http.client
import select
import signal
import socket
import sqlite3
import subprocess
import sys
import time

import psutil
import pytest

from pipeline.annotate.app import SHUTDOWN_GRACE_S
from tests.pipeline.annotate.conftest import PROJECT, add_user, login


def raw_get(port, path, cookie=None):
    """Send the path exactly as written (no client-side normalisation of '..' or %2F)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.putrequest("GET", path, skip_accept_encoding=True)
    if cookie:
        conn.putheader("Cookie", cookie)
    conn.endheaders()
    r = conn.getresponse()
    body = r.read()
    conn.close()
    return r.status, body


def cli_add_user(root, name):
    out = subprocess.run(
        [sys.executable, "-m", "pipeline.annotate", "add-user", name, "--data-root", str(root)],
        cwd=PROJECT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return out.stdout.strip()


def test_sigkill_between_decisions_loses_nothing_acknowledged(data_root, server_factory):
    root, _ = data_root
    token = cli_add_user(root, "ann")
    assert len(token) >= 32
    server = server_factory(root, "--gold-rate", "0")
    s, csrf = login(server.base, "ann", token)
    h = {"X-CSRF-Token": csrf}
    first = s.get(server.base + "/api/queue?n=2").json()["items"]
    assert [i["face_id"] for i in first] == ["p0", "p1"]
    r1 = s.post(
        server.base + "/api/decide",
        headers=h,
        json={
            "face_id": "p0",
            "proposed": "toon/alice",
            "decision": "same",
            "time_ms": 700,
            "request_id": "kill-test-1",
        },
    )
    assert r1.status_code == 200
    r2 = s.post(
        server.base + "/api/decide",
        headers=h,
        json={
            "face_id": "p1",
            "proposed": "toon/bob",
            "decision": "different",
            "time_ms": 650,
            "request_id": "kill-test-2",
        },
    )
    assert r2.status_code == 200
    assert server.kill() == -9  # right after the second acknowledgement, no shutdown handler

    rows = (
        sqlite3.connect(root / "annotations" / "decisions.sqlite")
        .execute("SELECT uid, face_id, decision FROM decisions ORDER BY id")
        .fetchall()
    )
    assert rows == [("kill-test-1", "p0", "same"), ("kill-test-2", "p1", "different")]

    again = server_factory(root, "--gold-rate", "0")
    q = s.get(again.base + "/api/queue?n=3").json()  # the session survives the restart too
    assert [i["face_id"] for i in q["items"]] == ["p2", "p3", "p4"]
    assert q["progress"]["yours"] == 2
    # the next decision carries on where the killed server stopped
    r3 = s.post(
        again.base + "/api/decide",
        headers=h,
        json={"face_id": "p2", "proposed": "toon/alice", "decision": "same", "request_id": "kill-test-3"},
    )
    assert r3.status_code == 200 and r3.json()["items"][0]["face_id"] == "p3"


def test_raw_traversal_requests_are_refused(data_root, server_factory):
    root, info = data_root
    token = cli_add_user(root, "ann")
    server = server_factory(root, "--gold-rate", "0")
    attacks = [
        "/crop/..%2F..%2Fetc%2Fpasswd",
        "/crop/../../../../etc/passwd",
        "/crop/%2e%2e/%2e%2e/etc/passwd",
        "/crop/..%2F..%2Fannotations%2Fdecisions.sqlite",
        "/crop/" + "a" * 64 + "/../../../etc/passwd",
        "/crop/" + "a" * 63 + "%00",
        "/static/..%2F..%2Fpipeline%2Fstore.py",
        "/static/../app.py",
    ]
    for path in attacks:  # without a session: nothing at all
        status, body = raw_get(server.port, path)
        assert status in (401, 404, 400), (path, status)
        assert b"root:" not in body and b"SQLite" not in body
    s, _ = login(server.base, "ann", token)
    cookie = f"toonface_session={s.cookies.get('toonface_session')}"
    for path in attacks:  # with one: still refused
        status, body = raw_get(server.port, path, cookie)
        assert status in (400, 404), (path, status)
        assert b"root:" not in body and b"SQLite" not in body and b"import" not in body
    status, body = raw_get(server.port, f"/crop/{info['faces']['p0']}", cookie)
    assert status == 200 and body[:2] == b"\xff\xd8"
    status, _ = raw_get(server.port, f"/crop/{info['faces']['p0']}")
    assert status == 401


def test_serve_merges_on_shutdown_when_asked(data_root, server_factory):
    from data_manifest import Manifest

    root, _ = data_root
    token = cli_add_user(root, "ann")
    server = server_factory(root, "--gold-rate", "0", "--merge-on-exit")
    s, csrf = login(server.base, "ann", token)
    r = s.post(
        server.base + "/api/decide",
        headers={"X-CSRF-Token": csrf},
        json={"face_id": "p0", "proposed": "toon/alice", "decision": "same"},
    )
    assert r.status_code == 200
    server.stop()  # SIGINT: uvicorn's graceful shutdown
    assert server.proc.returncode == 0
    labels = Manifest(root).read("labels")
    assert labels[["face_id", "identity", "verdict"]].values.tolist() == [["p0", "toon/alice", "verified"]]
    assert Manifest(root).latest_version() == 1


def post_until_answered(port, path, total, chunked):
    """POST `total` bytes in 1 MiB pieces (with Content-Length, or chunked with none), stopping as
    soon as the server answers. Returns (status, bytes of body sent)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    head = f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/x-www-form-urlencoded\r\n"
    head += "Transfer-Encoding: chunked\r\n\r\n" if chunked else f"Content-Length: {total}\r\n\r\n"
    sock.sendall(head.encode())
    piece, sent = b"a" * (1 << 20), 0
    try:
        while sent < total and not select.select([sock], [], [], 0)[0]:
            sock.sendall(b"%x\r\n%s\r\n" % (len(piece), piece) if chunked else piece)
            sent += len(piece)
        if chunked and sent >= total:
            sock.sendall(b"0\r\n\r\n")
    except (BrokenPipeError, ConnectionResetError):
        pass
    status = int(sock.makefile("rb").readline().split()[1])
    sock.close()
    return status, sent


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_oversized_bodies_are_refused_without_being_read(data_root, server_factory, chunked):
    root, _ = data_root
    server = server_factory(root, "--gold-rate", "0")
    process = psutil.Process(server.proc.pid)
    before = process.memory_info().rss
    start = time.monotonic()
    status, sent = post_until_answered(server.port, "/login", 200 << 20, chunked)
    assert status == 413
    assert sent < 100 << 20 and time.monotonic() - start < 5  # answered long before the body ends
    assert process.memory_info().rss - before < 50 << 20
    assert raw_get(server.port, "/login")[0] == 200  # and it still serves


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_serve_stops_promptly_on_sigterm_and_sigint(data_root, server_factory, sig):
    root, _ = data_root
    token = add_user(root, "ann")
    server = server_factory(root, "--gold-rate", "0")
    s, csrf = login(server.base, "ann", token)  # its keep-alive connection stays open, idle
    r = s.post(
        server.base + "/api/decide",
        headers={"X-CSRF-Token": csrf},
        json={"face_id": "p0", "proposed": "toon/alice", "decision": "same", "request_id": "term-test-1"},
    )
    assert r.status_code == 200
    stalled = socket.create_connection(("127.0.0.1", server.port))  # a client stuck halfway through its body
    stalled.sendall(b"POST /login HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nname=a")
    time.sleep(0.3)
    start = time.monotonic()
    server.proc.send_signal(sig)
    code = server.proc.wait(20)
    stalled.close()
    assert time.monotonic() - start < SHUTDOWN_GRACE_S + 5  # the stalled request is cancelled, not awaited
    # uvicorn re-raises SIGTERM once shut down (exit status -15, 143 in a shell); SIGINT ends with 0
    assert code == {signal.SIGTERM: -signal.SIGTERM, signal.SIGINT: 0}[sig]
    wal = root / "annotations" / "decisions.sqlite-wal"
    assert not wal.exists()  # the shutdown handler ran: closing the database checkpointed the WAL
    rows = (
        sqlite3.connect(root / "annotations" / "decisions.sqlite")
        .execute("SELECT uid, face_id, decision FROM decisions")
        .fetchall()
    )
    assert rows == [("term-test-1", "p0", "same")]
