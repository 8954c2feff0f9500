"""MediaWiki pages (Wikipedia, Fandom/Wikia, Bulbapedia, ...) -> characters: a section, a category
listing, a list of characters or a character page with an infobox."""

from __future__ import annotations

from urllib.parse import unquote, urlsplit

from bs4 import BeautifulSoup, Tag

from pipeline.sources.encyclopedia.containers import MIN_ITEMS, Candidate, choose, cue, find_candidates
from pipeline.sources.encyclopedia.images import _picture, _without_fragment, image_url
from pipeline.sources.encyclopedia.mediawiki_markup import (
    _CHARACTER_FIELDS,
    _CHARACTER_LIST_TITLE,
    _article_link,
    _is_category,
    _is_mediawiki,
    _page_title,
    is_member_character,
    remove_noise,
)
from pipeline.sources.encyclopedia.mediawiki_sections import _Doc, _list_characters, _section_characters
from pipeline.sources.encyclopedia.page import Character, PageShapeError, _Collected, _text


def _parse_mediawiki(soup: BeautifulSoup, base: str, page_url: str, section: str | None) -> list[Character]:
    if not _is_mediawiki(soup):
        raise PageShapeError("no MediaWiki markup (generator meta, body.mediawiki, #mw-content-text)")
    title = _page_title(soup)
    root = (
        soup.select_one("#mw-content-text .mw-parser-output")
        or soup.select_one("#mw-content-text")
        or soup.select_one(".mw-parser-output")
        or soup.body
        or soup
    )
    remove_noise(root)
    doc = _Doc(root)

    fragment = unquote(urlsplit(page_url).fragment) if page_url else ""
    wanted = section or fragment
    page_url = _without_fragment(base or page_url)  # what entries without a page of their own cite
    if wanted:
        heading = doc.find_heading(wanted)
        if heading is not None:
            # Sub-headings are characters on a list of characters, or under "Cast and characters"
            listing = _CHARACTER_LIST_TITLE.search(title) or cue(doc.heading_text(heading)) > 0
            return _section_characters(doc, heading, base, page_url, listing)
        if section:  # asked for by name: a missing section is an error, a stray URL fragment is not
            raise PageShapeError(f"no section {section!r} on MediaWiki page {title!r}")

    if _is_category(soup, title):
        return _category_characters(soup, base)
    if cue(title) < 0:
        raise PageShapeError(f"MediaWiki page {title!r} is about something other than characters ({title!r})")
    infobox = soup.select_one("table.infobox, aside.portable-infobox, table[class*=infobox], div.infobox")
    if infobox is not None and _is_character_infobox(infobox):
        return [_infobox_character(infobox, title, base)]
    candidates = find_candidates(root, base, page_url)
    if _CHARACTER_LIST_TITLE.search(title):
        headings = _list_characters(doc, base, page_url)
        if len(headings) >= MIN_ITEMS:
            candidates.append(
                Candidate("headings", "the page's headings", ("headings",), headings, 1.0, 1.0, 0.0, True, title, 0)
            )
    chosen = choose(candidates, title)
    if chosen:
        found = _Collected()
        for ch in _named_apart([ch for container in chosen for ch in container.characters]):
            found.add(ch)
        return found.result()
    why = "its infobox describes no person" if infobox is not None else "no person infobox"
    raise PageShapeError(
        f"MediaWiki page {title!r} is not a category, {why}, and no table, gallery or list on it reads as a "
        f"list of characters ({len(candidates)} containers looked at); to read the characters of one "
        "section, pass section= or a URL #fragment naming the heading"
    )


def _named_apart(characters: list[Character]) -> list[Character]:
    """Two people listed under one name ("Aegon Targaryen", linking to two articles) keep apart under
    their article titles ("Aegon Targaryen (son of Aenys I)"), the shown name as an alias."""
    targets: dict[str, set[str]] = {}
    for ch in characters:
        targets.setdefault(ch.name, set()).add(ch.source_url)
    for ch in characters:
        if len(targets[ch.name]) > 1 and ch.aliases and ch.aliases[0] != ch.name:
            ch.name, ch.aliases = ch.aliases[0], [ch.name] + ch.aliases[1:]
    return characters


# ----- categories


def _category_characters(soup: BeautifulSoup, base: str) -> list[Character]:
    found = _Collected()

    def member(a: Tag | None, img: Tag | None, where: str):
        link = _article_link(a, base) if a is not None else None
        if link and is_member_character(link[0]):  # the page title names the member
            found.add(Character(link[0], image_url(img, base), link[1], [], found_by=f"category @ {where}"))

    # Oasis skin (2013-2019): a gallery of the most visited pages, each `a[title] > img`.
    for item in soup.select("div.category-gallery-item"):
        member(item.find("a", title=True), item.find("img"), "div.category-gallery-item")
    # Fandom UCP (2019-): one row per member, thumbnails lazy-loaded.
    for li in soup.select("li.category-page__member"):
        member(li.select_one("a.category-page__member-link"), li.select_one("img"), "li.category-page__member")
    # Classic MediaWiki listing (also on Oasis): names only.
    for a in soup.select("#mw-pages li a"):
        member(a, None, "#mw-pages")
    return found.result()


# ----- character pages


def _infobox_labels(box: Tag) -> list[str]:
    # Bulbapedia-style boxes label their rows in bold text inside td cells
    labels = [_text(t) for t in box.select("th, .pi-data-label, .infobox-label, td > b, td > a > b")]
    return labels + [t.get("data-source", "") for t in box.select("[data-source]")]


def _is_character_infobox(box: Tag) -> bool:
    return any(_CHARACTER_FIELDS.search(label) for label in _infobox_labels(box))


def _infobox_character(box: Tag, title: str, base: str) -> Character:
    picture = _picture(box, base, 80)
    names = [box.select_one(sel) for sel in (".pi-title", ".infobox-above", "caption")]
    first_row = box.find("tr")
    bold = first_row.find_all(["b", "strong"]) if first_row is not None else []
    aliases = []
    for tag in [n for n in names if n is not None] + bold:
        text = _text(tag)
        if text and text != title and len(text) <= 80 and text not in aliases:
            aliases.append(text)
    where = ".".join([box.name, *(box.get("class") or [])[:2]])
    return Character(title, picture, _without_fragment(base), aliases, found_by=f"infobox @ {where}")
