"""Crawling an album's web sources, as the paper collects them: encyclopedia pages -> characters,
each with a typical image, stored as references (assets of kind `reference`, through the same face
funnel); then image search with "[character] [album]" and the album's own URL lists -> the image
URLs that `pipeline/web_images.py` downloads in shards.

Every HTTP fetch is a row of the `downloads` table with its outcome and reason.
"""

from __future__ import annotations

import collections
import functools
import json
from pathlib import Path

from pipeline.runner import ImageInput, RunContext, ShardRunner
from pipeline.sources.download import FetchResult
from pipeline.sources.encyclopedia import PageShapeError, next_page_url, parse_characters
from pipeline.sources.encyclopedia.mediawiki_api import (
    PAGE_IMAGES_BATCH,
    api_endpoint,
    article_title,
    category_members_url,
    category_title,
    next_api_url,
    page_images_url,
    parse_api_response,
    parse_page_images,
)
from pipeline.sources.encyclopedia.page import name_key
from pipeline.sources.image_search import character_query, parse_search, search_url
from pipeline.sources.library import Album
from pipeline.sources.url_list import read_url_list
from pipeline.web_fetch import Fetcher, Page, download_row, url_key
from pipeline.web_images import ImageJob


class CharacterBook:
    """An album's characters from all its sources, one entry per character.

    Names that differ only in case, spacing or character width are one character. A name from the
    albums file that is the alias of exactly one encyclopedia character (the user's "Rick" for the
    wiki's "Rick Sanchez") joins that character. Encyclopedia entries never merge by alias: two
    characters can share a nickname. Anything else stays apart; look-alike references under two
    names are reported by the identity stage as conflicts, never merged."""

    def __init__(self):
        self.entries: dict[str, dict] = {}  # display name -> {aliases, images, source_url, origin}
        self._names: dict[str, str] = {}  # name_key -> display name
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


def collect_characters(album: Album, fetcher: Fetcher, max_pages: int) -> dict[str, dict]:
    """name -> {aliases, images, source_url, origin}, from the encyclopedia pages and the albums file."""
    book = CharacterBook()
    for first in album.encyclopedia:
        for ch in encyclopedia_listing(first, fetcher, max_pages, fetcher.ctx.config.web.encyclopedia_api):
            book.add(ch.name, ch.aliases, [ch.image_url] if ch.image_url else [], ch.source_url, "encyclopedia")
    for named in album.characters:
        book.add(named.name, named.aliases, named.images, "albums-file", "albums_file")
    fetcher.counts["characters"] += len(book.entries)
    if book.merged:
        fetcher.counts["characters_merged"] += book.merged
    return book.entries


def encyclopedia_listing(url: str, fetcher: Fetcher, max_pages: int, use_api: bool = True) -> list:
    """The characters of an encyclopedia page and of the pages its listing continues on (a category
    of more than 200 members), up to `max_pages` pages. With use_api, a MediaWiki category is read
    through the wiki's API when it answers (`api_listing`), else from its HTML, and characters read
    from HTML without a picture get their article's lead image (`fill_lead_images`)."""
    first = fetcher.page(url, parse_characters, "encyclopedia", keep_refused=use_api)
    if first is not None and use_api:
        from_api = api_listing(first, fetcher, max_pages)
        if from_api is not None:
            return from_api
    if first is None or first.refused:
        return []
    characters = html_listing(first, fetcher, max_pages)
    if use_api:
        fill_lead_images(characters, first, fetcher, max_pages)
    return characters


def html_listing(first: Page, fetcher: Fetcher, max_pages: int) -> list:
    """The first page's characters and those of the pages its "next" links lead to. A next link that
    leads back to a page already read ends the listing (`drop.encyclopedia.page_loop`)."""
    characters, seen, page = list(first.records), {url_key(first.url)}, first
    while (url := next_page_url(page.text, page.url)) is not None:
        if url_key(url) in seen:
            fetcher.counts["drop.encyclopedia.page_loop"] += 1
            break
        if len(seen) >= max_pages:
            fetcher.counts["drop.encyclopedia.page_limit"] += 1
            break
        seen.add(url_key(url))
        page = fetcher.page(url, parse_characters, "encyclopedia")
        if page is None:
            break
        characters += page.records
    return characters


def fill_lead_images(characters: list, page: Page, fetcher: Fetcher, max_requests: int):
    """Characters without a picture that link to an article of the same wiki get that article's lead
    image, asked of the wiki's API 50 titles at a time; a failed answer ends the filling, never the crawl."""
    api = api_endpoint(page.url, page.text)
    wanted: dict[str, list] = collections.defaultdict(list)
    for ch in characters if api else []:
        title = article_title(ch.source_url, api) if ch.image_url is None else None
        if title:
            wanted[title].append(ch)
    titles = list(wanted)
    for start in range(0, min(len(titles), max_requests * PAGE_IMAGES_BATCH), PAGE_IMAGES_BATCH):
        batch = titles[start : start + PAGE_IMAGES_BATCH]
        parse = functools.partial(_parse_images_text, titles=batch)
        answer = fetcher.page(page_images_url(api, batch), parse, "encyclopedia_api")
        if answer is None:
            return
        for title, image in answer.records:
            for ch in wanted[title]:
                ch.image_url = image
        fetcher.counts["lead_images"] += len(answer.records)


def _api_json(text: str):
    try:
        return json.loads(text)
    except ValueError:
        raise PageShapeError("the API answered something other than JSON") from None


def _parse_images_text(text: str, url: str, titles: list[str]) -> list[tuple[str, str]]:
    return list(parse_page_images(_api_json(text), titles).items())


def _parse_api_text(text: str, url: str) -> list:
    return parse_api_response(_api_json(text), url)


def api_listing(page: Page, fetcher: Fetcher, max_pages: int) -> list | None:
    """A category's members read through its wiki's api.php (found from the page's EditURI link), batch
    after batch; None when the page is no category, the wiki shows no API, or an answer fails (each
    fetch is a `downloads` row of purpose `encyclopedia_api`), so the HTML listing is used."""
    title = category_title(page.url, page.text)
    api = api_endpoint(page.url, page.text) if title else None
    if api is None:
        return None
    characters, url = [], category_members_url(api, title)
    for _ in range(max_pages):
        answer = fetcher.page(url, _parse_api_text, "encyclopedia_api")
        if answer is None:
            return None  # a listing cut short is worse than the HTML one, which pages on its own
        characters += answer.records
        url = next_api_url(api, title, _api_json(answer.text))
        if url is None:
            return characters
    fetcher.counts["drop.encyclopedia_api.page_limit"] += 1
    return characters


def reference_rows(album: Album, found: dict[str, dict], fetcher: Fetcher, runner: ShardRunner) -> list[dict]:
    """Each character's typical images through the funnel as references; its `characters` row."""
    characters = []
    for name, entry in found.items():
        asset_id = None
        for image in entry["images"]:
            runner.counts["references"] += 1
            if image.startswith(("http://", "https://")):
                data = fetcher.image(image, "reference")
            else:
                data = Path(image).read_bytes() if Path(image).is_file() else None
            if data is not None:
                analysis = runner.analyse_now(
                    ImageInput(
                        content=data,
                        album_id=album.album_id,
                        source=image,
                        kind="reference",
                        columns={"character": name, "query": None},
                    )
                )
                asset_id = asset_id or analysis.asset_id
        characters.append(
            {
                "album_id": album.album_id,
                "name": name,
                "aliases": json.dumps(entry["aliases"]),
                "image_url": entry["images"][0] if entry["images"] else None,
                "image_asset_id": asset_id,
                "source_url": entry["source_url"],
                "origin": entry["origin"],
                "run_id": runner.ctx.run_id,
            }
        )
    return characters


def _with_base(url: str, base: str | None) -> str:
    """Send an engine's query to another address (a mirror, a proxy, a test server)."""
    if not base:
        return url
    return base + ("&" if "?" in base else "?") + url.split("?", 1)[1]


def image_jobs(album: Album, names: list[str], fetcher: Fetcher, max_results: int) -> list[ImageJob]:
    """Searches "[character] [album]" and the album's own URL lists, one job per canonical URL."""
    jobs: dict[str, ImageJob] = {}
    for engine, base in album.search:
        parse = functools.partial(parse_search, kind=engine)
        for name in names:
            query = character_query(name, album.name)
            for number in range(album.search_pages):
                page = fetcher.page(_with_base(search_url(engine, query, number), base), parse, "search")
                for r in (page.records if page else [])[:max_results]:
                    jobs.setdefault(url_key(r.image_url), ImageJob(r.image_url, album.album_id, name, query))
    for url_list in album.url_lists:
        for r in read_url_list(url_list):
            jobs.setdefault(url_key(r.image_url), ImageJob(r.image_url, album.album_id, None, None))
    fetcher.counts["image_urls"] += len(jobs)
    return list(jobs.values())


def crawl_album(album: Album, ctx: RunContext) -> tuple[list[ImageJob], dict[str, int]]:
    """Characters and references of an album, and the image URLs its searches and lists give."""
    runner = ShardRunner(ctx)
    fetcher = Fetcher(ctx, album.album_id, runner.counts)
    found = collect_characters(album, fetcher, ctx.config.web.encyclopedia_max_pages)
    characters = reference_rows(album, found, fetcher, runner)
    jobs = image_jobs(album, list(found), fetcher, ctx.config.web.web_max_results_per_query)
    counts = runner.publish(f"crawl-{album.album_id}", downloads=fetcher.downloads, characters=characters)
    return jobs, counts


def record_crawl_failure(album: Album, ctx: RunContext, detail: str) -> tuple[list[ImageJob], dict[str, int]]:
    """An album whose crawl failed as a whole: a `downloads` row per encyclopedia page saying so, and no
    image jobs; its stills and episodes are published as usual."""
    rows = [
        download_row(
            FetchResult(url=url, final_url=url, ok=False, reason="internal_error", detail=detail),
            album.album_id,
            "encyclopedia",
            ctx.run_id,
        )
        for url in album.encyclopedia or ["albums-file"]
    ]
    ctx.staging().write("downloads", f"crawl-{album.album_id}", rows)
    return [], {"drop.crawl.internal_error": 1, "internal_errors": 1}
