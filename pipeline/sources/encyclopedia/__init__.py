"""Encyclopedia pages -> an album's characters, each with one typical image (the paper's first step).

Pure functions: HTML text in, `Character` records out; nothing here touches the network.
`parse_characters(html, page_url)` recognises the page shape; a page it does not understand raises
`PageShapeError` ("page shape not recognised: ...") rather than returning an empty list. A page of a
recognised shape that really lists nobody (an empty category, an empty role module, a requested
section with no character entries) returns [].

MediaWiki family (Wikipedia, Fandom/Wikia, Bulbapedia, ...), in this order:
  * a section, when `section=` is given or `page_url` has a #fragment naming a heading
    (`.../wiki/Team_Rocket#In_animation`): the characters named in that section's structured
    entries, i.e. figure/gallery captions made only of links to articles, `dl > dt` terms, list
    items that start with a bold name, and wikitable rows with a Character/Name column. Prose is
    not read: its links mix characters with places, episodes and series, and markup cannot tell
    them apart. On a "... characters" list page the sub-headings count too (see below).
  * a category page: the Oasis (2016) `div.category-gallery-item` gallery, Fandom's
    `li.category-page__member` rows (lazy-loaded thumbnails) and the classic `#mw-pages` list.
    Gallery characters come first (the wiki's own pick of its most visited pages), then the rest
    in listing order. A listing longer than one page (200 members) links its next page ("next
    200", Fandom's pagination arrow): `next_page_url` gives it, and the crawler follows it.
  * a list of characters (title says "characters"/"cast"/角色/登场人物, as Wikipedia's "List of
    ... characters"): one character per heading, where headings whose title names a group
    ("Main characters", "The Smith family") or whose sub-headings are not aspects of one person
    ("Personality", "Reception", ...) are groups, and boilerplate headings (See also,
    References, ...) are skipped; plus the structured entries above in group sections.
    Both heading markups are read: Vector-2022 `div.mw-heading > hN` and `hN > span.mw-headline`.
  * a character page: an infobox (`table.infobox`, Fandom `aside.portable-infobox`) whose labels
    describe a person (gender, age, voice actor, ...), giving one Character named after the page
    title, with the infobox image and the infobox's bold title names as aliases. An infobox of an
    organisation or a series (leader, region, episodes, ...) is not a character page.

One typical image per character: a figure naming several characters is a group shot, so those
characters get image_url None rather than a picture with several faces (the image becomes the
identity's reference face downstream).

Other sites (fan guides, game databases; kind "generic", and "auto" for a page of no known site): a
grid of cards, each a portrait and a link to the character's page on the same site, under words that
say characters (pipeline.sources.encyclopedia.generic).

Baidu Baike (baike.baidu.com album pages), the role module (角色介绍 / 主要角色):
  * modern markup (2023-, CSS-module class names with hashes): elements whose class contains
    `roleName` / `role-name` / `role_name`, inside a container whose class contains
    `roleIntroduction` / `roleList` / `role-list`; the image is the item's `img` (`src`/`data-src`);
  * classic markup (`div.lemmaWgt-roleIntroduction`, `div.role-list li`, `.role-name`,
    `.role-pic img`).
  Both are read by the same rule: each outermost role-name element is one character, its item
  is the largest ancestor that holds no other role name, and the item's picture is its image.
  A trailing parenthesis in the name becomes an alias (蒙奇·D·路飞（Monkey D. Luffy）) unless it
  names a voice actor (配音/CV/声优). The shapes come from knowledge of Baike's markup, not from a
  saved page; the tests use small hand-written pages.

Image URLs are made absolute (page_url, else the page's canonical link, is the base;
protocol-relative URLs get https) and brought to a useful size:
  * `srcset`/`data-srcset`: the largest candidate wins; lazy images: `data-src` before a
    placeholder `src="data:..."`; with no URL at all, a Fandom `data-image-key` becomes
    `<wiki>/wiki/Special:FilePath/<key>` (MediaWiki redirects that to the original file);
  * MediaWiki thumbnails `.../thumb/a/ab/File.png/120px-File.png` -> the original
    `.../a/ab/File.png`. When the original is not a raster image the browser can use (SVG, PDF,
    TIFF, DjVu, video) the thumbnail is kept at 800 px instead (`.../800px-File.svg.png`);
  * Fandom/Wikia `.../revision/latest/<any scaling or crop>?cb=...` -> `.../revision/latest?cb=...`
    (the original);
  * Baike `bkimg.cdn.bcebos.com/pic/<id>?x-bce-process=...` -> without the resize query (original).
"""

from __future__ import annotations

from urllib.parse import parse_qs

from pipeline.sources.encyclopedia.baike import _parse_baike
from pipeline.sources.encyclopedia.generic import parse_generic
from pipeline.sources.encyclopedia.images import _base_url, _without_fragment, absolute_url, full_size_url, image_url
from pipeline.sources.encyclopedia.mediawiki import _parse_mediawiki
from pipeline.sources.encyclopedia.mediawiki_markup import _is_category, _is_mediawiki, _page_title
from pipeline.sources.encyclopedia.page import (
    MAX_DEPTH,
    Character,
    PageShapeError,
    _split,
    detect_site,
    html_soup,
    without_surrogates,
)

KINDS = ("auto", "mediawiki", "baike", "generic")


# --------------------------------------------------------------------------- entry point


def parse_characters(html: str, page_url: str, kind: str = "auto", section: str | None = None) -> list[Character]:
    """Characters listed on an encyclopedia page. `section` (a heading's text or id) restricts a
    MediaWiki page to one section; a #fragment in page_url does the same when it names a heading."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
    if kind == "auto":
        kind = detect_site(html, page_url)
        kind = "generic" if kind == "unknown" else kind
        if kind not in ("mediawiki", "baike", "generic"):
            raise PageShapeError(f"a {kind} search page, not an encyclopedia page")
    soup = html_soup(html)
    base = _base_url(soup, page_url)
    if kind == "baike":
        return _parse_baike(soup, base)
    if kind == "generic":
        return parse_generic(soup, base, page_url)
    return _parse_mediawiki(soup, base, page_url, section)


def next_page_url(html: str, page_url: str) -> str | None:
    """The next page of a MediaWiki category listing, as an absolute URL; None on the last page and
    on any other kind of page. Classic MediaWiki and the Oasis skin link it as "next 200" with a
    `pagefrom=` (old wikis: `from=`) query; the previous page uses `pageuntil=`/`until=` and is never
    taken. Fandom's 2019- skin has `a.category-page__pagination-next`."""
    soup = html_soup(html)
    if not _is_mediawiki(soup) or not _is_category(soup, _page_title(soup)):
        return None
    base = _base_url(soup, page_url)
    link = soup.select_one("a.category-page__pagination-next[href]")
    if link is None:
        for a in soup.select("#mw-pages a[href]"):
            parts = _split(a["href"])
            query = parse_qs(parts.query) if parts else {}
            if ("pagefrom" in query or "from" in query) and not ({"pageuntil", "until"} & set(query)):
                link = a
                break
    url = absolute_url(link["href"], base) if link is not None else None
    return _without_fragment(url) if url else None


__all__ = [
    "KINDS",
    "MAX_DEPTH",
    "Character",
    "PageShapeError",
    "parse_characters",
    "next_page_url",
    "detect_site",
    "html_soup",
    "without_surrogates",
    "absolute_url",
    "full_size_url",
    "image_url",
]
