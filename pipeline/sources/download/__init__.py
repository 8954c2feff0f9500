"""A polite, SSRF-safe HTTP downloader for building datasets from the open web.

    from pipeline.sources.download import Downloader, DownloadSettings, canonicalize_url

    with Downloader(DownloadSettings(max_workers=16, min_interval_s=1.0)) as dl:
        for res in dl.fetch_many(urls, expect="image"):
            if res.ok:
                store.put(res.data, EXTENSIONS[res.format])
            else:
                log(res.url, res.reason, res.detail)

Every tunable is a field of `DownloadSettings` (defaults there); a `Downloader` takes one whole.

What it guarantees
------------------
* Every failure is a `FetchResult` with `ok=False` and a stable `reason` (see `REASONS`); `fetch` and
  `fetch_many` never raise for anything the network or the server does.
* Politeness, per domain (a domain is host + port, so two ports are two domains): two requests to
  the same domain never *start* less than `min_interval_s` apart, across all threads, retries,
  redirect hops and robots.txt fetches; at most `max_per_domain` requests to a domain are in flight
  at once; a robots.txt `Crawl-delay` (seconds, capped by `max_crawl_delay_s`) raises the
  interval for that domain; a 429/5xx/timeout pushes the whole domain back (the backoff delay, or
  `Retry-After`), not only the one request.
* robots.txt (RFC 9309): fetched once per scheme+host+port (cached `robots_ttl_s`), through the same
  rate limiter; 2xx is parsed (first 512 KiB), 4xx means "no rules" (allowed), 429/5xx/timeouts/
  network errors (after the retries) mean "disallow the whole host" for the cache lifetime. Parsing
  and matching follow RFC 9309 (see `robots.RobotsRules` for why not urllib.robotparser): the group for
  our product token (`user_agent` up to the first '/', case-insensitive, exact) else `*`; the longest
  matching rule wins, Allow wins a tie; `*` and `$` wildcards.
* `X-Robots-Tag` response headers carrying `noai` / `noimageai` (and `none` / `noindex` when
  `honour_noindex=True`), for all agents or for our token (`toonface: noai`), make the body be
  discarded unread: reason `x_robots_tag`.
* No request ever goes to a private, loopback, link-local, multicast, reserved, unspecified,
  CGNAT or otherwise non-global address (IPv4 and IPv6, including IPv4-mapped, NAT64 and 6to4
  forms of those), unless `allow_private_hosts` allows that origin: an entry "host:port" allows
  exactly that port of the host (also as a redirect target); a bare "host" allows the host only at
  the host:port the fetch started at, so a redirect or a robots.txt redirect to another port of an
  allowed host, or from one allowed host to another, is refused. The host is resolved and
  checked before every request and every redirect hop (`private_address`, nothing sent), and the
  connection layer itself is pinned: each new socket connects only to addresses from the same vetted
  resolution (see `connection._GuardedConnectionMixin`), so DNS rebinding between the check and the connect
  cannot reach an internal address. Environment proxies and .netrc are ignored (`trust_env=False`),
  cookies are never stored or sent.
* Size and time bounds: `Content-Length` above `max_bytes` is refused before the body is read, and
  the body is counted while streaming (after Content-Encoding decoding, so a gzip bomb stops at
  `max_bytes` too); `total_timeout` is a wall-clock limit on each request attempt (each retry, each
  redirect hop, each robots.txt request) from connect to last body byte. A socket timeout restarts
  with every packet, so a server trickling its headers a byte at a time never trips one: a watchdog
  thread shuts the attempt's socket down when the deadline passes, which ends a blocked connect,
  TLS handshake, header read or body read at once (reason `timeout`). A fetch therefore takes at
  most about (retries + 1) * total_timeout per hop, plus backoff and rate-limit waits.
* `cancel()` (safe in a signal handler) abandons every fetch in flight within about 0.1 s, wakes
  every rate-limit / Retry-After / robots.txt wait, and refuses new fetches: all `cancelled`.
* Redirects are followed by hand (`allow_redirects=False`): every hop is canonicalised, checked for
  private addresses and robots.txt, and rate limited; a hop back to an already visited URL is a
  `redirect_loop`; more than `max_redirects` hops is `too_many_redirects`.

Known limits
------------
* DNS lookups go through the system resolver (`socket.getaddrinfo`), which has no timeout of ours.
* Resolutions are cached for `dns_cache_ttl_s` (default 30 s) for speed; the pin means a changed
  record is picked up only after that.
* The HTTP-date form of Retry-After has 1 s resolution.
* HTML `<meta name="robots">` tags are not read (only the `X-Robots-Tag` header).
* The rate limit and robots cache live in one Downloader (one process), unless `rate_limit_dir`
  names a folder: then the spacing of request starts per domain is shared (through locked files) by
  every process that uses that folder, e.g. the workers of a local Dask cluster. Machines that do not
  share a filesystem with working locks do not coordinate, nor does the in-flight limit. Spacing is
  enforced on request *starts* in the client; what the server sees can differ by the send jitter
  (a few ms).
* No HTTP proxy support (a proxy would defeat the address pin).
* `total_timeout` and `cancel()` can be overrun while the system resolver is blocked (see above).

Modules, one concern each: `reasons` (reason codes), `urls` (canonicalisation), `addresses` (the
SSRF guard), `deadlines` (watchdog, cancellation), `connection` (pinned, watched sockets),
`domains` (per-domain rate limit), `requesting` (one request: retries, bodies), `robots`,
`results`, `batch` (fetch_many's dispatcher), `settings` (`DownloadSettings`), `client`
(`Downloader`).
"""

from __future__ import annotations

from pipeline.sources.download.addresses import PrivateAddressError, is_public_address
from pipeline.sources.download.client import Downloader
from pipeline.sources.download.reasons import REASONS, is_reason
from pipeline.sources.download.results import FetchResult
from pipeline.sources.download.settings import DEFAULT_USER_AGENT, DownloadSettings
from pipeline.sources.download.urls import TRACKING_PARAMS, canonicalize_url

__all__ = [
    "DEFAULT_USER_AGENT",
    "REASONS",
    "TRACKING_PARAMS",
    "DownloadSettings",
    "Downloader",
    "FetchResult",
    "PrivateAddressError",
    "canonicalize_url",
    "is_public_address",
    "is_reason",
]
