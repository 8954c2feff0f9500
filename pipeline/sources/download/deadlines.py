"""Wall-clock deadlines and cancellation of request attempts.

A socket timeout restarts with every packet, so a server trickling its headers a byte at a time
never trips one: a watchdog thread shuts the attempt's socket down when the deadline passes, which
ends a blocked connect, TLS handshake, header read or body read at once (reason `timeout`)."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable

from pipeline.sources.download.reasons import CANCELLED, TIMEOUT

POLL_S = 0.1  # how often blocked waits look at deadlines and the cancel flag
_CURRENT = threading.local()  # .attempt: the Attempt the calling thread is making, for the connection layer


def current_attempt() -> Attempt | None:
    """The attempt the calling thread is making, if any (the connection layer watches its sockets)."""
    return getattr(_CURRENT, "attempt", None)


def set_current_attempt(att: Attempt | None) -> None:
    _CURRENT.attempt = att


def _shutdown(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)


class Attempt:
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


class Watchdog:
    """Aborts every live attempt whose deadline has passed, and all of them once `is_cancelled()`.
    One thread per downloader, alive only while attempts are (it exits after a second idle). It polls
    instead of being woken, so cancel() can be a plain flag store, safe inside a signal handler."""

    def __init__(self, is_cancelled: Callable[[], bool]):
        self._is_cancelled = is_cancelled
        self._live: set[Attempt] = set()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def begin(self, deadline: float) -> Attempt:
        att = Attempt(deadline)
        with self._lock:
            self._live.add(att)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="toonface-dl-watchdog", daemon=True)
                self._thread.start()
        if self._is_cancelled():
            att.abort(CANCELLED)
        return att

    def end(self, att: Attempt) -> None:
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
            nearest = min((a.deadline for a in live if not a.aborted), default=now + POLL_S)
            time.sleep(min(POLL_S, max(0.005, nearest - time.monotonic())))
