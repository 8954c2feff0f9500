"""The SSRF guard: which addresses a request may reach, and the allow-list of private origins.

No request ever goes to a private, loopback, link-local, multicast, reserved, unspecified, CGNAT or
otherwise non-global address (IPv4 and IPv6, including IPv4-mapped, NAT64 and 6to4 forms of those),
unless `allow_private_hosts` allows that origin (see `AddressGuard`)."""

from __future__ import annotations

import ipaddress
import socket
import threading
import time
from collections.abc import Iterable

from pipeline.sources.download.urls import DIGITS, normalize_hostname

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
        ip.is_private or ip.is_loopback or ip.is_link_local or ip.is_multicast or ip.is_reserved or ip.is_unspecified
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
        return normalize_hostname(host)
    except ValueError:
        return host


def parse_allow_entry(entry: str) -> tuple[str, int | None]:
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
                raise ValueError(
                    f"allow_private_hosts entry {entry!r}: bad IPv6 literal (write [addr]:port for a port)"
                ) from None
    if not host.strip():
        raise ValueError(f"allow_private_hosts entry {entry!r}: no host")
    port = None
    if port_s is not None:
        if not DIGITS.match(port_s) or not 0 < int(port_s) <= 65535:
            raise ValueError(f"allow_private_hosts entry {entry!r}: bad port {port_s!r}")
        port = int(port_s)
    return _norm_host_key(host), port


class PrivateAddressError(Exception):
    """Raised (inside the download package only) when a host resolves to a non-public address. Deliberately
    not an OSError, so urllib3/requests let it through unwrapped and never retry it."""


class AddressGuard:
    """getaddrinfo with a short cache; refuses non-public results unless allow-listed.

    allow_private_hosts entries are origins: 'host:port' allows that port of the host, wherever a
    fetch comes from (a redirect included). An entry without a port allows the host only at the
    origin a fetch starts at (`home`: the URL asked for, or a robots.txt's own origin), so a page on
    an allowed 127.0.0.1:8080 cannot redirect us to 127.0.0.1:6379."""

    def __init__(self, allow: Iterable[str], ttl_s: float):
        entries = [parse_allow_entry(e) for e in ([allow] if isinstance(allow, str) else allow)]
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
                msg += (
                    f"; port {port} of it is not allowed (allow_private_hosts {sorted(self.allow)}: an entry "
                    f"without a port covers only the host:port a fetch starts at)"
                )
            raise PrivateAddressError(msg)
        if not ips:
            raise socket.gaierror(socket.EAI_NONAME, f"no addresses for {host}")
        return ips
