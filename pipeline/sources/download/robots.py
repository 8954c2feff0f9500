"""robots.txt (RFC 9309) and the X-Robots-Tag response header.

robots.txt is fetched once per scheme+host+port (cached `robots_ttl_s`), through the same rate
limiter; 2xx is parsed (first 512 KiB), 4xx means "no rules" (allowed), 429/5xx/timeouts/network
errors (after the retries) mean "disallow the whole host" for the cache lifetime. Parsing and
matching follow RFC 9309 (see `RobotsRules` for why not urllib.robotparser): the group for our
product token (`user_agent` up to the first '/', case-insensitive, exact) else `*`; the longest
matching rule wins, Allow wins a tie; `*` and `$` wildcards. A robots.txt `Crawl-delay` (seconds,
capped by `max_crawl_delay_s`) raises the interval for that domain.

`X-Robots-Tag` headers carrying `noai` / `noimageai` (and `none` / `noindex` when
`honour_noindex=True`), for all agents or for our token (`toonface: noai`), make the body be
discarded unread: reason `x_robots_tag`. HTML `<meta name="robots">` tags are not read."""

from __future__ import annotations

import contextlib
import re
import threading
import time
import urllib.parse
from collections.abc import Callable

import requests

from pipeline.sources.download.deadlines import POLL_S
from pipeline.sources.download.domains import DomainLimiter
from pipeline.sources.download.reasons import CANCELLED, ROBOTS_DISALLOWED, ROBOTS_UNAVAILABLE
from pipeline.sources.download.requesting import Requester, redirect_target
from pipeline.sources.download.results import Fail, Redirect
from pipeline.sources.download.settings import DownloadSettings
from pipeline.sources.download.urls import DEFAULT_PORTS, SUB_DELIMS, normalize_percent, url_parts

_ROBOTS_MAX_BYTES = 512 * 1024

_ROBOTS_LINE = re.compile(r"^\s*([A-Za-z-]+)\s*:\s*(.*?)\s*$")
_ROBOTS_PATH_SAFE = frozenset(SUB_DELIMS + ":@/?")


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
    body = ".*".join(re.escape(normalize_percent(p, _ROBOTS_PATH_SAFE)) for p in path.split("*"))
    return re.compile(body + ("$" if anchored else ""), re.DOTALL)


class RobotsRules:
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
    def parse(cls, text: str, token: str) -> RobotsRules:
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
                    rules.append((_rule_regex(value), len(normalize_percent(value, _ROBOTS_PATH_SAFE)), key == "allow"))
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
    """One origin's robots.txt: filled once by the thread that fetches it; the others wait on `ready`."""

    __slots__ = ("ready", "rules", "expires")

    def __init__(self):
        self.ready = threading.Event()
        self.rules: RobotsRules | None = None
        self.expires = 0.0


_XRT_VALUE_DIRECTIVES = frozenset({"max-snippet", "max-image-preview", "max-video-preview", "unavailable_after"})
_XRT_AGENT = re.compile(r"^\s*([A-Za-z0-9_.-]+)\s*:\s*(.*)$", re.DOTALL)


def x_robots_block(resp: requests.Response, agent_token: str, blocking_directives: frozenset) -> str | None:
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
            if m.group(1).lower() != agent_token:
                continue  # directives for another crawler
            rest = m.group(2)
        for directive in rest.split(","):
            if directive.strip().lower() in blocking_directives:
                return line.strip()
    return None


class RobotsCache:
    """robots.txt verdicts per origin (scheme, host, port), fetched once per `robots_ttl_s`: the
    first thread to ask fetches it; the others wait for that fetch (or give up on cancel())."""

    def __init__(
        self, settings: DownloadSettings, requester: Requester, limiter: DomainLimiter, is_cancelled: Callable[[], bool]
    ):
        self._settings = settings
        self._requester = requester
        self._limiter = limiter
        self._is_cancelled = is_cancelled
        self._slots: dict[tuple, _RobotsSlot] = {}
        self._lock = threading.Lock()

    def check(self, scheme: str, host: str, port: int, url: str) -> None:
        """Fail (robots_disallowed, robots_unavailable or cancelled) unless robots.txt lets us fetch `url`."""
        rules = self._rules(scheme, host, port)
        if self._is_cancelled():  # robots.txt "unavailable" because we abandoned it is no verdict
            raise Fail(CANCELLED, f"cancelled while checking robots.txt of {scheme}://{host}:{port}")
        if rules.kind == RobotsRules.DISALLOW_ALL:
            raise Fail(ROBOTS_UNAVAILABLE, rules.detail)
        if not rules.allowed(url):
            raise Fail(ROBOTS_DISALLOWED, f"robots.txt of {scheme}://{host}:{port} disallows {url}")

    def _rules(self, scheme: str, host: str, port: int) -> RobotsRules:
        origin = (scheme, host, port)
        with self._lock:
            slot = self._slots.get(origin)
            owner = slot is None or (slot.ready.is_set() and slot.expires <= time.monotonic())
            if owner:
                slot = self._slots[origin] = _RobotsSlot()
        if owner:
            try:
                rules = self._fetch(scheme, host, port)
            except Exception as exc:  # never leave waiters hanging
                rules = RobotsRules(RobotsRules.DISALLOW_ALL, f"robots.txt check failed: {exc!r}")
            if rules.crawl_delay:
                delay = min(float(rules.crawl_delay), self._settings.max_crawl_delay_s)
                self._limiter.set_interval((host, port), delay)
            slot.rules = rules
            slot.expires = time.monotonic() + self._settings.robots_ttl_s
            slot.ready.set()
        else:
            while not slot.ready.wait(POLL_S):
                if self._is_cancelled():
                    raise Fail(CANCELLED, "cancelled while waiting for robots.txt")
        return slot.rules

    def _fetch(self, scheme: str, host: str, port: int) -> RobotsRules:
        """The rules of one origin; robots.txt redirects are followed (home stays this origin)."""
        netloc = f"[{host}]" if ":" in host else host
        if port != DEFAULT_PORTS[scheme]:
            netloc += f":{port}"
        current = f"{scheme}://{netloc}/robots.txt"
        visited = {current}
        try:
            for _ in range(5 + 1):  # RFC 9309: follow at least five redirects
                r_scheme, r_host, r_port = url_parts(current)
                self._requester.precheck(r_host, r_port, (host, port))
                outcome = self._requester.request_with_retries(
                    current, (r_host, r_port), self._read_response, None, "text/plain,*/*;q=0.5", (host, port)
                )
                if not isinstance(outcome, Redirect):
                    return outcome
                target = redirect_target(current, outcome.location)
                if target in visited:
                    return RobotsRules(RobotsRules.ALLOW_ALL, "robots.txt redirect loop")
                visited.add(target)
                current = target
            return RobotsRules(RobotsRules.ALLOW_ALL, "robots.txt: too many redirects")  # RFC: unavailable
        except Fail as f:
            return RobotsRules(
                RobotsRules.DISALLOW_ALL, f"robots.txt of {scheme}://{netloc} unavailable: {f.reason}: {f.detail}"
            )

    def _read_response(self, resp: requests.Response, deadline: float) -> RobotsRules | Redirect:
        status = resp.status_code
        redirect = self._requester.redirect_or_retry(resp, deadline)
        if redirect is not None:
            return redirect
        if status >= 500:
            raise Fail(f"http_{status}", f"HTTP {status}")
        if 200 <= status < 300:
            body = self._requester.read_body(resp, deadline, _ROBOTS_MAX_BYTES, cut_at_limit=True)
            return RobotsRules.parse(body.decode("utf-8", "replace"), self._settings.agent_token)
        self._requester.drain(resp, deadline)
        return RobotsRules(RobotsRules.ALLOW_ALL, f"robots.txt: HTTP {status}")  # 4xx: no rules
