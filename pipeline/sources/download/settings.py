"""Every tunable of a `Downloader`, in one frozen record; each default is written here only."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable

DEFAULT_USER_AGENT = "toonface/0.1 (+https://github.com/toonface; dataset research crawler)"

# The record holds these as the types named, whatever numbers or truthy values the caller passed.
_FLOAT_FIELDS = (
    "min_interval_s",
    "connect_timeout",
    "read_timeout",
    "total_timeout",
    "backoff_base_s",
    "backoff_max_s",
    "max_retry_after_s",
    "robots_ttl_s",
    "max_crawl_delay_s",
)
_INT_FIELDS = ("max_workers", "max_per_domain", "max_bytes", "max_redirects", "retries")
_BOOL_FIELDS = ("obey_robots", "honour_noindex")


@dataclasses.dataclass(frozen=True, kw_only=True)
class DownloadSettings:
    """How a `Downloader` fetches. ValueError on construction for values out of range.

    user_agent          sent on every request; its product token (before the first '/') is the
                        name looked up in robots.txt and X-Robots-Tag
    min_interval_s      per-domain rate limit: minimum time between two request starts
    max_workers         threads of fetch_many, and connection-pool size per host
    max_per_domain      requests in flight at once per domain
    connect_timeout, read_timeout   per socket operation
    total_timeout       one attempt from connect to last body byte
    max_bytes           body limit, checked on Content-Length and while streaming
    max_redirects       redirect hops followed
    retries             extra attempts on timeouts, connection errors, truncated bodies, 429,
                        500, 502, 503, 504; exponential backoff backoff_base_s * 2**n with
                        jitter, capped at backoff_max_s; Retry-After (seconds or HTTP-date) on
                        429/503 is used instead, up to max_retry_after_s - above that the fetch
                        gives up at once
    obey_robots         robots.txt; robots_ttl_s cache lifetime; max_crawl_delay_s cap on a
                        robots Crawl-delay
    honour_noindex      X-Robots-Tag none/noindex also discard the body
    allow_private_hosts origins that may resolve to non-public addresses: "host:port"
                        (host as written in URLs, IPv6 in brackets) allows that port of the
                        host, redirects included; a bare "host" allows it only at the host:port
                        a fetch starts at, never as a redirect target on another port or from
                        another host. E.g. {"127.0.0.1"} for tests. Kept as a tuple.
    dns_cache_ttl_s     lifetime of a vetted DNS answer (0 = resolve every time)
    lookahead           URLs fetch_many reads ahead to find domains that are ready
                        (None: max(256, 16 * max_workers))
    verify              TLS verification: True (certifi bundle) or a CA bundle path
    rate_limit_dir      a folder shared by every process that crawls from this machine: the
                        per-domain spacing then holds across all of them (None: this process only)
    """

    user_agent: str = DEFAULT_USER_AGENT
    min_interval_s: float = 1.0
    max_workers: int = 16
    max_per_domain: int = 1
    connect_timeout: float = 10.0
    read_timeout: float = 20.0
    total_timeout: float = 60.0
    max_bytes: int = 20 * 1024 * 1024
    max_redirects: int = 5
    retries: int = 3
    backoff_base_s: float = 0.5
    backoff_max_s: float = 30.0
    max_retry_after_s: float = 120.0
    obey_robots: bool = True
    robots_ttl_s: float = 24 * 3600.0
    max_crawl_delay_s: float = 30.0
    honour_noindex: bool = False
    allow_private_hosts: Iterable[str] = ()
    dns_cache_ttl_s: float = 30.0
    lookahead: int | None = None
    verify: bool | str = True
    rate_limit_dir: str | os.PathLike | None = None

    def __post_init__(self) -> None:
        if self.max_workers < 1 or self.max_per_domain < 1:
            raise ValueError("max_workers and max_per_domain must be >= 1")
        if min(self.connect_timeout, self.read_timeout, self.total_timeout) <= 0:
            raise ValueError("timeouts must be > 0")
        if self.min_interval_s < 0 or self.retries < 0 or self.max_redirects < 0 or self.max_bytes < 1:
            raise ValueError("min_interval_s, retries and max_redirects must be >= 0, max_bytes >= 1")
        # Frozen: normalising needs object.__setattr__. A tuple keeps the record hashable and lets a
        # one-shot iterator of hosts be read more than once.
        for names, kind in ((_FLOAT_FIELDS, float), (_INT_FIELDS, int), (_BOOL_FIELDS, bool)):
            for name in names:
                object.__setattr__(self, name, kind(getattr(self, name)))
        hosts = self.allow_private_hosts
        object.__setattr__(self, "allow_private_hosts", (hosts,) if isinstance(hosts, str) else tuple(hosts))

    @property
    def agent_token(self) -> str:
        """Our product token: the user agent up to the first '/', lower case (robots.txt, X-Robots-Tag)."""
        return self.user_agent.split("/", 1)[0].strip().lower()

    @property
    def fetch_many_lookahead(self) -> int:
        return int(self.lookahead) if self.lookahead else max(256, 16 * self.max_workers)
