"""Fixtures of the annotation tests: a real data root, a real server in a subprocess, logins."""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from pipeline.annotate.db import AnnotationDB
from tests.pipeline.annotate.fakedata import build_data_root

PROJECT = Path(__file__).resolve().parents[3]
CSRF_RE = re.compile(r'<meta name="csrf-token" content="([^"]+)">')
NONCE_RE = re.compile(r'name="nonce" value="([^"]+)"')


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def data_root(tmp_path):
    root = tmp_path / "data"
    info = build_data_root(root)
    return root, info


def add_user(root, name: str) -> str:
    db = AnnotationDB(root)
    try:
        return db.add_user(name)
    finally:
        db.close()


class Server:
    """`python -m pipeline.annotate serve` in a subprocess on a free 127.0.0.1 port."""

    def __init__(self, root, *args: str):
        self.root, self.args = Path(root), args
        self.proc = None
        self.port = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 40.0) -> Server:
        self.port = free_port()
        self.log = open(self.root.parent / f"server-{self.port}.log", "w")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "pipeline.annotate",
                "serve",
                "--data-root",
                str(self.root),
                "--port",
                str(self.port),
                *self.args,
            ],
            cwd=PROJECT,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {(self.root.parent / f'server-{self.port}.log').read_text()}")
            try:
                if requests.get(self.base + "/login", timeout=2).status_code == 200:
                    return self
            except requests.ConnectionError:
                time.sleep(0.1)
        raise TimeoutError("server did not start")

    def kill(self) -> int:
        """SIGKILL: no shutdown handler runs."""
        self.proc.send_signal(signal.SIGKILL)
        return self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self.proc is not None:
            self.log.close()


@pytest.fixture
def server_factory():
    servers = []

    def make(root, *args):
        server = Server(root, *args).start()
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.stop()


def login(base: str, name: str, token: str) -> tuple[requests.Session, str]:
    """Log in like the browser does; returns the session and its CSRF token."""
    s = requests.Session()
    page = s.get(base + "/login")
    nonce = NONCE_RE.search(page.text).group(1)
    r = s.post(base + "/login", data={"name": name, "token": token, "nonce": nonce}, allow_redirects=False)
    assert r.status_code == 303, r.text
    pair = s.get(base + "/pair")
    assert pair.status_code == 200
    return s, CSRF_RE.search(pair.text).group(1)
