"""URL canonicalisation: one spelling per resource, for URL-level dedup (see `canonicalize_url`)."""

from __future__ import annotations

import ipaddress
import re
import urllib.parse

import idna  # a dependency of requests; IDNA 2008 with UTS 46 mapping, like browsers

#: Query parameters removed by `canonicalize_url` (besides every `utm_*`), compared case-insensitively.
TRACKING_PARAMS = frozenset(
    {
        "fbclid",
        "gclid",
        "dclid",
        "gbraid",
        "wbraid",
        "msclkid",
        "yclid",
        "twclid",
        "ttclid",
        "igshid",
        "mc_cid",
        "mc_eid",
        "_ga",
        "_gl",
    }
)

_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
SUB_DELIMS = "!$&'()*+,;="
_PATH_SAFE = frozenset(SUB_DELIMS + ":@/")
_QUERY_SAFE = frozenset(SUB_DELIMS + ":@/?")
_USERINFO_SAFE = frozenset(SUB_DELIMS + ":")
_HEXDIGITS = frozenset("0123456789abcdefABCDEF")
DEFAULT_PORTS = {"http": 80, "https": 443}
_HOST_OK = re.compile(r"^[a-z0-9_-]+(\.[a-z0-9_-]+)*$")
DIGITS = re.compile(r"^[0-9]+$")
_HEXNUM = re.compile(r"^0[xX][0-9a-fA-F]*$")
_OCTNUM = re.compile(r"^0[0-7]+$")


def normalize_percent(s: str, safe: frozenset) -> str:
    """Decode %XX of unreserved characters, upper-case the other escapes, escape what must be."""
    if "%" not in s and all(c in _UNRESERVED or c in safe for c in s):
        return s
    out = []
    i, n = 0, len(s)
    while i < n:
        c = s[i]
        if c == "%":
            if i + 2 < n and s[i + 1] in _HEXDIGITS and s[i + 2] in _HEXDIGITS:
                hx = s[i + 1 : i + 3]
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
    if DIGITS.match(part):
        return int(part)
    raise ValueError(f"bad IPv4 part {part!r}")


def _parse_ipv4(host: str) -> str | None:
    """WHATWG host parsing: a host whose last label is a number is an IPv4 address in any of the
    forms inet_aton accepts (127.1, 0x7f.0.0.1, 2130706433, 0177.0.0.1); give it dotted-quad form.
    None when the host is a domain name."""
    parts = host.split(".")
    last = parts[-1]
    if not (DIGITS.match(last) or _HEXNUM.match(last)):
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


def normalize_hostname(raw: str) -> str:
    host = urllib.parse.unquote(raw, errors="strict")
    if host.endswith("."):
        host = host[:-1]
    if not host:
        raise ValueError("empty host")
    if not host.isascii():
        try:
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
        rest = hostport[end + 1 :]
        if rest and not rest.startswith(":"):
            raise ValueError(f"junk after IPv6 literal: {rest!r}")
        port_s = rest[1:]
    else:
        raw_host, _, port_s = hostport.partition(":")
        host = normalize_hostname(raw_host)
    port = None
    if port_s:
        if not DIGITS.match(port_s):
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
    if scheme not in DEFAULT_PORTS:
        raise ValueError(f"unsupported scheme {parts.scheme!r}" if scheme else "not an absolute URL")
    if not parts.netloc:
        raise ValueError("URL has no host")
    userinfo, host, port = _split_netloc(parts.netloc)
    netloc = host
    if port is not None and port != DEFAULT_PORTS[scheme]:
        netloc = f"{host}:{port}"
    if userinfo:
        netloc = f"{normalize_percent(userinfo, _USERINFO_SAFE)}@{netloc}"
    path = normalize_percent(parts.path, _PATH_SAFE) or "/"
    if not path.startswith("/"):
        path = "/" + path
    path = _remove_dot_segments(path)
    query = _canonical_query(parts.query)
    return f"{scheme}://{netloc}{path}" + (f"?{query}" if query else "")


def _canonical_query(query: str) -> str:
    """Empty pieces and tracking parameters dropped, escapes normalised, sorted by name (stably)."""
    pieces = []
    for piece in query.split("&"):
        if not piece:
            continue
        key, eq, value = piece.partition("=")
        key = normalize_percent(key, _QUERY_SAFE)
        if _is_tracking(key):
            continue
        pieces.append((key, key + eq + normalize_percent(value, _QUERY_SAFE)))
    pieces.sort(key=lambda kv: kv[0])
    return "&".join(p for _, p in pieces)


def url_parts(canonical: str) -> tuple[str, str, int]:
    """(scheme, host without brackets, effective port) of a canonical URL."""
    parts = urllib.parse.urlsplit(canonical)
    _, host, port = _split_netloc(parts.netloc)
    return parts.scheme, host.strip("[]"), port or DEFAULT_PORTS[parts.scheme]
