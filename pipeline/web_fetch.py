"""Fetching for the web sources: one downloader per process and settings, a `downloads` row per
fetch, and the URL cache that keeps a successful image download from being fetched again."""

from __future__ import annotations

import collections
import dataclasses
import datetime as dt
import threading
from pathlib import Path

from pipeline import stopping
from pipeline.config import WebSettings
from pipeline.decode import EXTENSIONS, sniff_format
from pipeline.faults import describe, inject_fault, is_run_fault
from pipeline.runner import RunContext
from pipeline.sources.download import Downloader, DownloadSettings, FetchResult, canonicalize_url
from pipeline.sources.encyclopedia import PageShapeError
from pipeline.store import JSON, FileCache, sha256_bytes

# One downloader per process and settings: shards running in threads of one process share its
# per-domain rate limit and robots.txt cache.
_downloaders: dict[tuple, Downloader] = {}
_downloaders_lock = threading.Lock()


def download_settings(settings: WebSettings, rate_limit_dir: Path) -> DownloadSettings:
    return DownloadSettings(
        user_agent=settings.web_user_agent,
        min_interval_s=settings.web_min_interval_s,
        max_workers=settings.web_max_workers,
        obey_robots=settings.web_obey_robots,
        allow_private_hosts=settings.web_allow_private_hosts,
        total_timeout=settings.web_timeout_s,
        read_timeout=min(20.0, settings.web_timeout_s),
        connect_timeout=min(10.0, settings.web_timeout_s),
        rate_limit_dir=rate_limit_dir,
    )


def downloader_for(ctx: RunContext) -> Downloader:
    """The process's downloader for these settings. Its per-domain spacing is booked in files under
    `<data_root>/cache/ratelimit`, so the processes of a scaled-out run (Dask workers) share it."""
    rate_limit_dir = Path(ctx.data_root) / "cache" / "ratelimit"
    key = (ctx.config.web, str(rate_limit_dir))
    with _downloaders_lock:
        if key not in _downloaders:
            _downloaders[key] = Downloader(download_settings(ctx.config.web, rate_limit_dir))
            stopping.on_stop(_downloaders[key].cancel)  # a stopped run abandons its downloads at once
        return _downloaders[key]


def download_row(
    res: FetchResult,
    album_id: str,
    purpose: str,
    run_id: str,
    asset_id: str | None = None,
    reason: str | None = None,
    detail: str | None = None,
) -> dict:
    return {
        "url": res.url,
        "album_id": album_id,
        "purpose": purpose,
        "final_url": res.final_url,
        "ok": res.ok and reason is None,
        "reason": reason or res.reason,
        "http_status": res.http_status,
        "content_type": res.content_type,
        "asset_id": asset_id,
        "attempts": res.attempts,
        "detail": (detail if detail is not None else res.detail or "")[:1000],
        "fetched_at": dt.datetime.now(dt.UTC),
        "run_id": run_id,
    }


def url_key(url: str) -> str:
    """A URL's key in caches and job lists: its canonical form (or itself, when it has none: the
    downloader records such a URL as invalid_url)."""
    try:
        return canonicalize_url(url)
    except ValueError:
        return url


def records_detail(records: list) -> str:
    """A downloads row's detail for a parsed page: how many records, and for encyclopedia pages which
    rule found them in which container ("61 records; table-column @ table.article-table #12, column 'Name': 61")."""
    found_by = collections.Counter(getattr(r, "found_by", "") for r in records)
    found_by.pop("", None)
    where = "; ".join(f"{rule}: {n}" for rule, n in found_by.most_common(3))
    return f"{len(records)} records" + (f"; {where}" if where else "")


class Fetcher:
    """The fetches of one shard or crawl: through the URL cache, each one a `downloads` row and counted."""

    def __init__(self, ctx: RunContext, album_id: str, counts: collections.Counter):
        self.ctx, self.album_id, self.counts = ctx, album_id, counts
        self.downloader = downloader_for(ctx)
        self.urls = FileCache(Path(ctx.data_root) / "cache" / "urls", JSON)  # canonical URL -> {sha256, format}
        self.downloads: list[dict] = []

    def cached_image(self, url: str) -> bytes | None:
        """The stored bytes of an image fetched before, else None."""
        try:
            hit = self.urls.get(sha256_bytes(canonicalize_url(url).encode()))
        except ValueError:
            return None
        if hit is None:
            return None
        path = self.ctx.store.path_for(hit["sha256"], EXTENSIONS.get(hit["format"], ".bin"))
        return path.read_bytes() if path.exists() else None

    def image(self, url: str, purpose: str) -> bytes | None:
        """One image through the URL cache: stored bytes when fetched before, else a fetch."""
        data = self.cached_image(url)
        if data is not None:
            self.counts["downloads_cached"] += 1
            return data
        return self.record(self.downloader.fetch(url, expect="image"), purpose)

    def record(self, res: FetchResult, purpose: str) -> bytes | None:
        """An image fetch's row; its bytes into the content store and the URL cache when it worked."""
        self.counts["downloads"] += 1
        if not res.ok:
            self.counts[f"drop.download.{res.reason}"] += 1
            self.downloads.append(download_row(res, self.album_id, purpose, self.ctx.run_id))
            return None
        fmt = res.format or sniff_format(res.data) or "bin"
        self.ctx.store.put(res.data, EXTENSIONS.get(fmt, ".bin"))
        self.urls.put(sha256_bytes(res.url.encode()), {"sha256": res.sha256 or sha256_bytes(res.data), "format": fmt})
        self.downloads.append(download_row(res, self.album_id, purpose, self.ctx.run_id, asset_id=res.sha256))
        return res.data

    def page(self, url: str, parse, purpose: str, keep_refused: bool = False) -> Page | None:
        """Fetch a page and parse it; a failed fetch or an unrecognised page is a `downloads` row with
        its reason, never an empty success. A parser bug costs this page, not the run. With
        keep_refused, a page the parser refused still comes back (no records, `refused` set), for a
        caller that can read it another way (a wiki's API)."""
        res = self.downloader.fetch(url, expect="html" if purpose == "encyclopedia" else "any")
        self.counts[f"{purpose}_pages"] += 1
        if not res.ok:
            self.counts[f"drop.{purpose}.{res.reason}"] += 1
            self.downloads.append(download_row(res, self.album_id, purpose, self.ctx.run_id))
            return None
        text = res.data.decode("utf-8", errors="replace") if res.data else ""
        try:
            inject_fault([res.data or b""])
            records = parse(text, res.final_url)
        except PageShapeError as exc:
            self._page_failed(res, purpose, "page_shape_not_recognised", str(exc))
            return Page([], text, res.final_url, refused=True) if keep_refused else None
        except Exception as exc:
            if is_run_fault(exc):
                raise
            self.counts["internal_errors"] += 1
            return self._page_failed(res, purpose, "internal_error", describe(exc))
        self.downloads.append(
            download_row(res, self.album_id, purpose, self.ctx.run_id, detail=records_detail(records))
        )
        return Page(records, text, res.final_url)

    def _page_failed(self, res: FetchResult, purpose: str, reason: str, detail: str) -> None:
        self.counts[f"drop.{purpose}.{reason}"] += 1
        self.downloads.append(download_row(res, self.album_id, purpose, self.ctx.run_id, reason=reason, detail=detail))


@dataclasses.dataclass
class Page:
    records: list
    text: str
    url: str  # where the page was finally fetched from (after redirects)
    refused: bool = False  # the parser did not recognise it (kept for another reading)
