"""Web sources of an album, as the paper collects them:

1. `crawl_album`: encyclopedia pages -> characters, each with a typical image, stored as
   references (assets of kind `reference`, through the same face funnel); then image search with
   "[character] [album]" and the album's own URL lists -> a list of image URLs to download.
2. `download_images`: one shard of those URLs -> downloaded, validated, stored, face funnel
   (assets of kind `web`).

Every HTTP fetch is a row of the `downloads` table with its outcome and reason. A successful image
download is remembered per canonical URL, so reruns and resumed runs never fetch it again; a failed
one is tried again by the next run.
"""
from __future__ import annotations

import collections
import dataclasses
import datetime as dt
import functools
import json
import threading
import unicodedata
from pathlib import Path

from pipeline import stopping
from pipeline.config import IngestConfig
from pipeline.decode import EXTENSIONS, sniff_format
from pipeline.detect import get_detector
from pipeline.faces import FunnelCache, ImageAnalysis, funnel_key
from pipeline.shards import (RunContext, analyse_each, asset_row, count_analysis, describe, embed_kept,
                             face_rows, failed_input_rows, inject_fault, is_run_fault)
from pipeline.sources.downloader import Downloader, FetchResult, canonicalize_url
from pipeline.sources.encyclopedia import PageShapeError, next_page_url, parse_characters
from pipeline.sources.image_search import character_query, parse_search, read_url_list, search_url
from pipeline.sources.library import Album
from pipeline.store import atomic_write, sha256_bytes


@dataclasses.dataclass(frozen=True)
class ImageJob:
    url: str
    album_id: str
    character: str | None
    query: str | None


@dataclasses.dataclass(frozen=True)
class WebShard:
    album_id: str
    index: int
    jobs: tuple[ImageJob, ...]

    @property
    def name(self) -> str:
        return f"web-{self.album_id}-{self.index:05d}"

    def record_failure(self, ctx: RunContext, detail: str) -> dict[str, int]:
        """Rows for every image URL of a shard that failed as a whole: each one dropped as internal_error."""
        rows, counts = failed_input_rows(ctx, self.album_id, [job.url for job in self.jobs], "web", detail)
        rows = [{**row, "character": job.character, "query": job.query} for row, job in zip(rows, self.jobs)]
        ctx.staging().write("assets", self.name, rows)
        return dict(counts)


# One downloader per process and settings: shards running in threads of one process share its
# per-domain rate limit and robots.txt cache.
_downloaders: dict[tuple, Downloader] = {}
_downloaders_lock = threading.Lock()


def downloader_for(ctx: RunContext) -> Downloader:
    """The process's downloader for these settings. Its per-domain spacing is booked in files under
    `<data_root>/cache/ratelimit`, so the processes of a scaled-out run (Dask workers) share it."""
    config = ctx.config
    rate_limit_dir = Path(ctx.data_root) / "cache" / "ratelimit"
    key = (config.web_user_agent, config.web_min_interval_s, config.web_max_workers, config.web_obey_robots,
           tuple(config.web_allow_private_hosts), config.web_timeout_s, str(rate_limit_dir))
    with _downloaders_lock:
        if key not in _downloaders:
            _downloaders[key] = Downloader(
                user_agent=config.web_user_agent, min_interval_s=config.web_min_interval_s,
                max_workers=config.web_max_workers, obey_robots=config.web_obey_robots,
                allow_private_hosts=config.web_allow_private_hosts, total_timeout=config.web_timeout_s,
                read_timeout=min(20.0, config.web_timeout_s), connect_timeout=min(10.0, config.web_timeout_s),
                rate_limit_dir=rate_limit_dir)
            stopping.on_stop(_downloaders[key].cancel)  # a stopped run abandons its downloads at once
        return _downloaders[key]


def _download_row(res: FetchResult, album_id: str, purpose: str, run_id: str, asset_id: str | None = None,
                  reason: str | None = None, detail: str | None = None) -> dict:
    return {"url": res.url, "album_id": album_id, "purpose": purpose, "final_url": res.final_url,
            "ok": res.ok and reason is None, "reason": reason or res.reason, "http_status": res.http_status,
            "content_type": res.content_type, "asset_id": asset_id, "attempts": res.attempts,
            "detail": (detail if detail is not None else res.detail or "")[:1000],
            "fetched_at": dt.datetime.now(dt.timezone.utc), "run_id": run_id}


class UrlCache:
    """Canonical URL -> sha256 and format of the bytes it gave (successful image fetches only)."""

    def __init__(self, data_root: str):
        self.dir = Path(data_root) / "cache" / "urls"

    def _path(self, url: str) -> Path:
        key = sha256_bytes(url.encode())
        return self.dir / key[:2] / f"{key}.json"

    def get(self, url: str) -> dict | None:
        try:
            return json.loads(self._path(url).read_text())
        except (FileNotFoundError, ValueError):
            return None

    def put(self, url: str, sha: str, fmt: str) -> None:
        atomic_write(self._path(url), json.dumps({"sha256": sha, "format": fmt}).encode())


def _text(res: FetchResult) -> str:
    return res.data.decode("utf-8", errors="replace") if res.data else ""


def _with_base(url: str, base: str | None) -> str:
    """Send an engine's query to another address (a mirror, a proxy, a test server)."""
    if not base:
        return url
    return base + ("&" if "?" in base else "?") + url.split("?", 1)[1]


class _ImageIngest:
    """Fetched or local image bytes -> content store, face funnel, manifest rows."""

    def __init__(self, ctx: RunContext, counts: collections.Counter):
        self.ctx, self.counts = ctx, counts
        self.detector = get_detector(ctx.config.detector, ctx.config.detector_weights, ctx.config.detector_size)
        self.cache = FunnelCache(ctx.data_root, funnel_key(ctx.config, self.detector))
        self.assets: list[dict] = []
        self.faces: list[dict] = []
        self._queued: list[tuple[bytes, tuple]] = []

    def queue(self, data: bytes, album_id: str, source: str, kind: str, character: str | None,
              query: str | None) -> None:
        """Analyse later, in one detector batch with the next images (detect_batch_size at a time)."""
        self._queued.append((data, (album_id, source, kind, character, query)))
        if len(self._queued) >= self.ctx.config.detect_batch_size:
            self.flush()

    def add(self, data: bytes, album_id: str, source: str, kind: str, character: str | None,
            query: str | None) -> ImageAnalysis:
        """Analyse now (with whatever is queued) and return this image's analysis."""
        self._queued.append((data, (album_id, source, kind, character, query)))
        return self.flush()[-1]

    def flush(self) -> list[ImageAnalysis]:
        stopping.check()
        queued, self._queued = self._queued, []
        results = analyse_each([data for data, _ in queued], self.ctx.config, self.detector, self.ctx.store,
                               self.cache)
        for (_, (album_id, source, kind, character, query)), (analysis, cached) in zip(queued, results):
            count_analysis(self.counts, analysis, cached, self.detector.precision)
            row = asset_row(analysis, self.ctx, album_id, source, kind)
            row.update(character=character, query=query)
            self.assets.append(row)
            self.faces.extend(face_rows(analysis, album_id, self.ctx.run_id))
        return [analysis for analysis, _ in results]


@dataclasses.dataclass
class _Page:
    records: list
    text: str
    url: str                     # where the page was finally fetched from (after redirects)


def _fetch_page(dl: Downloader, url: str, parse, purpose: str, album_id: str, ctx: RunContext,
                downloads: list, counts: collections.Counter) -> _Page | None:
    """Fetch a page and parse it; a failed fetch or an unrecognised page is a `downloads` row with
    its reason, never an empty success."""
    res = dl.fetch(url, expect="html" if purpose == "encyclopedia" else "any")
    counts[f"{purpose}_pages"] += 1
    if not res.ok:
        counts[f"drop.{purpose}.{res.reason}"] += 1
        downloads.append(_download_row(res, album_id, purpose, ctx.run_id))
        return None
    text = _text(res)
    try:
        inject_fault([res.data or b""])
        records = parse(text, res.final_url)
    except PageShapeError as exc:
        counts[f"drop.{purpose}.page_shape_not_recognised"] += 1
        downloads.append(_download_row(res, album_id, purpose, ctx.run_id,
                                       reason="page_shape_not_recognised", detail=str(exc)))
        return None
    except Exception as exc:  # a parser bug costs this page, not the run
        if is_run_fault(exc):
            raise
        counts[f"drop.{purpose}.internal_error"] += 1
        counts["internal_errors"] += 1
        downloads.append(_download_row(res, album_id, purpose, ctx.run_id, reason="internal_error",
                                       detail=describe(exc)))
        return None
    downloads.append(_download_row(res, album_id, purpose, ctx.run_id, detail=f"{len(records)} records"))
    return _Page(records, text, res.final_url)


def name_key(name: str) -> str:
    """How character names are compared: NFKC (full-width forms), case and spacing do not count."""
    return " ".join(unicodedata.normalize("NFKC", name).casefold().split())


class CharacterBook:
    """An album's characters from all its sources, one entry per character.

    Names that differ only in case, spacing or character width are one character. A name from the
    albums file that is the alias of exactly one encyclopedia character (the user's "Rick" for the
    wiki's "Rick Sanchez") joins that character. Encyclopedia entries never merge by alias: two
    characters can share a nickname. Anything else stays apart; look-alike references under two
    names are reported by the identity stage as conflicts, never merged."""

    def __init__(self):
        self.entries: dict[str, dict] = {}          # display name -> {aliases, images, source_url, origin}
        self._names: dict[str, str] = {}            # name_key -> display name
        self._aliases: dict[str, set[str]] = collections.defaultdict(set)  # name_key of an alias -> display names
        self.merged = 0

    def add(self, name: str, aliases, images, source_url: str, origin: str) -> str:
        """Record a character; returns the display name of the entry it went to."""
        key = name_key(name)
        display = self._names.get(key)
        if display is None and origin == "albums_file" and len(self._aliases.get(key, ())) == 1:
            display = next(iter(self._aliases[key]))
        if display is None:
            display = name
            self.entries[display] = {"aliases": [], "images": [], "source_url": source_url, "origin": origin}
            self._names[key] = display
        else:
            self.merged += 1
        entry = self.entries[display]
        for other in [name, *aliases]:
            if name_key(other) != name_key(display) and other not in entry["aliases"]:
                entry["aliases"].append(other)
        for alias in aliases:
            self._aliases[name_key(alias)].add(display)
        entry["images"].extend(i for i in images if i not in entry["images"])
        return display


def _collect_characters(album: Album, dl: Downloader, ctx: RunContext, downloads: list,
                        counts: collections.Counter) -> dict[str, dict]:
    """name -> {aliases, images, source_url, origin}, from the encyclopedia pages and the albums file."""
    book = CharacterBook()
    for first in album.encyclopedia:
        for ch in encyclopedia_listing(first, dl, album, ctx, downloads, counts):
            book.add(ch.name, ch.aliases, [ch.image_url] if ch.image_url else [], ch.source_url, "encyclopedia")
    for named in album.characters:
        book.add(named.name, named.aliases, named.images, "albums-file", "albums_file")
    counts["characters"] += len(book.entries)
    if book.merged:
        counts["characters_merged"] += book.merged
    return book.entries


def encyclopedia_listing(url: str, dl: Downloader, album: Album, ctx: RunContext, downloads: list,
             counts: collections.Counter) -> list:
    """The characters of an encyclopedia page and of the pages its listing continues on (a category
    of more than 200 members), up to `encyclopedia_max_pages` pages. A next link that leads back to
    a page already read ends the listing (counted as `drop.encyclopedia.page_loop`)."""
    def key(u: str) -> str:
        try:
            return canonicalize_url(u)
        except ValueError:  # the fetch records why such a URL is unusable
            return u

    characters, seen = [], set()
    while True:
        seen.add(key(url))
        page = _fetch_page(dl, url, parse_characters, "encyclopedia", album.album_id, ctx, downloads, counts)
        if page is None:
            return characters
        characters += page.records
        url = next_page_url(page.text, page.url)
        if url is None:
            return characters
        if key(url) in seen:
            counts["drop.encyclopedia.page_loop"] += 1
            return characters
        if len(seen) >= ctx.config.encyclopedia_max_pages:
            counts["drop.encyclopedia.page_limit"] += 1
            return characters


def crawl_album(album: Album, ctx: RunContext) -> tuple[list[ImageJob], dict[str, int]]:
    """Characters and references of an album, and the image URLs its searches and lists give."""
    dl = downloader_for(ctx)
    counts: collections.Counter = collections.Counter()
    downloads: list[dict] = []
    found = _collect_characters(album, dl, ctx, downloads, counts)

    # Typical images: one or more per character, stored as references.
    refs = _ImageIngest(ctx, counts)
    url_cache = UrlCache(ctx.data_root)
    characters = []
    for name, entry in found.items():
        asset_id = None
        for image in entry["images"]:
            counts["references"] += 1
            if image.startswith(("http://", "https://")):
                data = _fetch_image(dl, url_cache, ctx, image, album.album_id, "reference", downloads, counts)
            else:
                data = Path(image).read_bytes() if Path(image).is_file() else None
            if data is not None:
                analysis = refs.add(data, album.album_id, image, "reference", name, None)
                asset_id = asset_id or analysis.asset_id
        characters.append({"album_id": album.album_id, "name": name, "aliases": json.dumps(entry["aliases"]),
                           "image_url": entry["images"][0] if entry["images"] else None,
                           "image_asset_id": asset_id, "source_url": entry["source_url"],
                           "origin": entry["origin"], "run_id": ctx.run_id})

    # Searches "[character] [album]" and the album's own URL lists.
    jobs: dict[str, ImageJob] = {}
    for engine, base in album.search:
        parse = functools.partial(parse_search, kind=engine)
        for name in found:
            query = character_query(name, album.name)
            for page in range(album.search_pages):
                url = _with_base(search_url(engine, query, page), base)
                page = _fetch_page(dl, url, parse, "search", album.album_id, ctx, downloads, counts)
                for r in (page.records if page else [])[: ctx.config.web_max_results_per_query]:
                    _add_job(jobs, r.image_url, album.album_id, name, query)
    for url_list in album.url_lists:
        for r in read_url_list(url_list):
            _add_job(jobs, r.image_url, album.album_id, None, None)
    counts["image_urls"] += len(jobs)

    embed_kept(refs.faces, ctx)
    staging = ctx.staging()
    part = f"crawl-{album.album_id}"
    staging.write("downloads", part, downloads)
    staging.write("characters", part, characters)
    staging.write("assets", part, refs.assets)
    staging.write("faces", part, refs.faces)
    return list(jobs.values()), dict(counts)


def record_crawl_failure(album: Album, ctx: RunContext, detail: str) -> tuple[list[ImageJob], dict[str, int]]:
    """An album whose crawl failed as a whole: a `downloads` row per encyclopedia page saying so, and no
    image jobs; its stills and episodes are published as usual."""
    rows = [_download_row(FetchResult(url, url, False, "internal_error", None, None, None, None, None, 0, 0.0,
                                      detail), album.album_id, "encyclopedia", ctx.run_id)
            for url in album.encyclopedia or ["albums-file"]]
    ctx.staging().write("downloads", f"crawl-{album.album_id}", rows)
    return [], {"drop.crawl.internal_error": 1, "internal_errors": 1}


def _add_job(jobs: dict, url: str, album_id: str, character: str | None, query: str | None) -> None:
    try:
        key = canonicalize_url(url)
    except ValueError:
        key = url  # the downloader records it as invalid_url
    jobs.setdefault(key, ImageJob(url, album_id, character, query))


def _fetch_image(dl: Downloader, url_cache: UrlCache, ctx: RunContext, url: str, album_id: str, purpose: str,
                 downloads: list, counts: collections.Counter) -> bytes | None:
    """One image through the URL cache: stored bytes when fetched before, else a fetch."""
    data = _cached_bytes(url_cache, ctx, url)
    if data is not None:
        counts["downloads_cached"] += 1
        return data
    res = dl.fetch(url, expect="image")
    return _record_fetch(res, url_cache, ctx, album_id, purpose, downloads, counts)


def _cached_bytes(url_cache: UrlCache, ctx: RunContext, url: str) -> bytes | None:
    try:
        hit = url_cache.get(canonicalize_url(url))
    except ValueError:
        return None
    if hit is None:
        return None
    path = ctx.store.path_for(hit["sha256"], EXTENSIONS.get(hit["format"], ".bin"))
    return path.read_bytes() if path.exists() else None


def _record_fetch(res: FetchResult, url_cache: UrlCache, ctx: RunContext, album_id: str, purpose: str,
                  downloads: list, counts: collections.Counter) -> bytes | None:
    counts["downloads"] += 1
    if not res.ok:
        counts[f"drop.download.{res.reason}"] += 1
        downloads.append(_download_row(res, album_id, purpose, ctx.run_id))
        return None
    fmt = res.format or sniff_format(res.data) or "bin"
    ctx.store.put(res.data, EXTENSIONS.get(fmt, ".bin"))
    url_cache.put(res.url, res.sha256 or sha256_bytes(res.data), fmt)
    downloads.append(_download_row(res, album_id, purpose, ctx.run_id, asset_id=res.sha256))
    return res.data


def download_images(shard: WebShard, ctx: RunContext) -> dict[str, int]:
    """Download one shard of image URLs and run each image through the face funnel."""
    dl = downloader_for(ctx)
    url_cache = UrlCache(ctx.data_root)
    counts: collections.Counter = collections.Counter()
    images = _ImageIngest(ctx, counts)
    downloads: list[dict] = []
    pending: dict[str, list[ImageJob]] = {}
    for job in shard.jobs:
        data = _cached_bytes(url_cache, ctx, job.url)
        if data is not None:
            counts["downloads_cached"] += 1
            images.queue(data, job.album_id, job.url, "web", job.character, job.query)
            continue
        try:
            pending.setdefault(canonicalize_url(job.url), []).append(job)
        except ValueError:
            pending.setdefault(job.url, []).append(job)
    for res in dl.fetch_many([jobs[0].url for jobs in pending.values()], expect="image"):
        jobs = pending.get(res.url) or next((v for k, v in pending.items() if v[0].url == res.url), [])
        if not jobs:
            continue
        data = _record_fetch(res, url_cache, ctx, shard.album_id, "image", downloads, counts)
        if data is not None:
            for job in jobs:
                images.queue(data, job.album_id, job.url, "web", job.character, job.query)
    images.flush()
    embed_kept(images.faces, ctx)
    staging = ctx.staging()
    staging.write("downloads", shard.name, downloads)
    staging.write("faces", shard.name, images.faces)
    staging.write("assets", shard.name, images.assets)
    return dict(counts)


def web_shards(jobs: list[ImageJob], per_shard: int) -> list[WebShard]:
    by_album: dict[str, list[ImageJob]] = {}
    for job in jobs:
        by_album.setdefault(job.album_id, []).append(job)
    shards = []
    for album_id, album_jobs in sorted(by_album.items()):
        for i in range(0, len(album_jobs), max(1, per_shard)):
            shards.append(WebShard(album_id, i // per_shard, tuple(album_jobs[i:i + per_shard])))
    return shards
