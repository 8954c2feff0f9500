"""The connection layer: a requests session whose every socket goes only to addresses the
`AddressGuard` vetted, and is watched by the calling thread's `Attempt` (deadline, cancel()).

Environment proxies and .netrc are ignored (`trust_env=False`), cookies are never stored or sent,
and there is no HTTP proxy support (a proxy would defeat the address pin)."""

from __future__ import annotations

import errno
import http.cookiejar
import os
import selectors
import socket
import sys
import time

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import ConnectTimeoutError, NameResolutionError, NewConnectionError

from pipeline.sources.download.addresses import AddressGuard
from pipeline.sources.download.deadlines import POLL_S, Attempt, current_attempt


def _connect(ip: str, port: int, timeout, source_address, socket_options, att: Attempt | None) -> socket.socket:
    """Connect to one vetted IP like urllib3's create_connection, but wait for the handshake in short
    slices, so the attempt's deadline and cancel() also end a connect the network leaves hanging."""
    timeout = float(timeout) if isinstance(timeout, (int, float)) else None
    family, socktype, proto, _, sockaddr = socket.getaddrinfo(
        ip, port, 0, socket.SOCK_STREAM, 0, socket.AI_NUMERICHOST
    )[0]
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
                while not sel.select(min(POLL_S, max(0.0, end - time.monotonic()))):
                    if att is not None and att.aborted:
                        raise ConnectionAbortedError(f"connect abandoned: {att.aborted}")
                    if time.monotonic() >= end:
                        raise TimeoutError("timed out")
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
    calling thread's current Attempt, which shuts it down when the attempt's deadline passes."""

    _guard: AddressGuard

    def _new_conn(self) -> socket.socket:  # overrides urllib3.connection.HTTPConnection._new_conn
        try:
            ips = self._guard.resolve(self._dns_host, self.port)
        except socket.gaierror as exc:
            raise NameResolutionError(self.host, self, exc) from exc
        att = current_attempt()
        error: Exception | None = None
        for ip in ips:
            try:
                sock = _connect(ip, self.port, self.timeout, self.source_address, self.socket_options, att)
            except TimeoutError as exc:
                error = ConnectTimeoutError(
                    self, f"Connection to {self.host} ({ip}) timed out. (connect timeout={self.timeout})"
                )
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
        att = current_attempt()
        if att is not None and self.sock is not None:
            att.watch(self.sock)
        return super().request(*args, **kwargs)


class _Session(requests.Session):
    def resolve_redirects(self, *args, **kwargs):
        # requests calls this even with allow_redirects=False, to fill `response.next`, and it reads
        # the whole body of a 3xx response into memory, unbounded. We follow redirects ourselves.
        return iter(())


class _GuardedAdapter(HTTPAdapter):
    def __init__(self, guard: AddressGuard, **kwargs):
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


def guarded_session(guard: AddressGuard, *, user_agent: str, max_workers: int, verify: bool | str) -> requests.Session:
    """A session that connects only through `guard`, with a connection pool sized for `max_workers`."""
    session = _Session()
    session.trust_env = False  # no env proxies (they would bypass the address pin), no .netrc
    session.verify = verify  # TLS verification: True (certifi) or a CA bundle path
    session.headers.update({"User-Agent": user_agent})
    session.cookies.set_policy(http.cookiejar.DefaultCookiePolicy(allowed_domains=[]))  # no cookies
    adapter = _GuardedAdapter(
        guard, pool_connections=max(32, max_workers), pool_maxsize=max_workers, max_retries=0, pool_block=False
    )
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session
