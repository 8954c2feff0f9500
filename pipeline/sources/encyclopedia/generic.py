"""Character lists on sites that are neither MediaWiki nor Baike (fan guides, game databases): read by
structure alone, and only where the words agree.

Such a page lists characters as a grid of cards: sibling blocks of one shape (same tag and class), each
with a portrait and a link to the character's own page on the same site. A card's name is the text
that repeats its portrait's alt text, else its first short line of text. The words must say
characters (page title or the heading above the grid): with no wiki markup to lean on, a grid of
anything else (products, articles, weapons) is not recognised.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from bs4 import BeautifulSoup, NavigableString, Tag

from pipeline.sources.encyclopedia.candidate import MIN_ITEMS, Candidate, describe, sibling_groups
from pipeline.sources.encyclopedia.containers import cue
from pipeline.sources.encyclopedia.images import _display_width, _without_fragment, absolute_url, image_url
from pipeline.sources.encyclopedia.page import Character, PageShapeError, _Collected, _text

_CHROME = "nav, header, footer, aside, form, script, style, noscript, [role=navigation], [role=banner]"
_MAX_NAME_WORDS = 5


def _title(soup: BeautifulSoup) -> str:
    """The page's <h1> and its <title> (a guide site's h1 often names the game, its title the page)."""
    h1 = soup.find("h1")
    title = soup.title.get_text() if soup.title else ""
    return " | ".join(x for x in (_text(h1) if h1 is not None else "", " ".join(title.split())) if x)


def _site_link(a: Tag, base: str) -> str | None:
    """The absolute URL of a link to another page of the same site."""
    href = (a.get("href") or "").strip()
    if not href or href.startswith(("#", "javascript:", "mailto:")):
        return None
    url = absolute_url(href, base)
    page, target = urlsplit(base), urlsplit(url or "")
    if not url or target.scheme not in ("http", "https") or (page.netloc and target.netloc != page.netloc):
        return None
    return None if target.path.rstrip("/") == page.path.rstrip("/") else _without_fragment(url)


def _short_lines(card: Tag) -> list[str]:
    lines = (" ".join(str(s).split()) for s in card.find_all(string=True) if isinstance(s, NavigableString))
    return [x for x in lines if x and len(x.split()) <= _MAX_NAME_WORDS and not x.endswith(":")]


def _card(card: Tag, base: str) -> tuple[str, str, str | None] | None:
    """(name, link, picture) of a card, or None when it has no link of the site or no name."""
    link_tag = card if card.name == "a" else card.find("a", href=True)
    url = _site_link(link_tag, base) if link_tag is not None else None
    img = next((i for i in card.find_all("img") if (_display_width(i) or 100) >= 40), None)
    if url is None or img is None:
        return None
    lines = _short_lines(card)
    alt = " ".join((img.get("alt") or "").split())
    name = alt if alt and alt in lines else (lines[0] if lines else "")
    return (name, url, image_url(img, base)) if name else None


def _grids(root: Tag, base: str, page_url: str) -> list[Candidate]:
    out, heading = [], ""
    for position, parent in enumerate(root.find_all(True)):
        if re.fullmatch(r"h[1-6]", parent.name):
            heading = _text(parent)
            continue
        for (tag_name, classes), blocks in sibling_groups(parent).items():
            if len(blocks) < MIN_ITEMS:
                continue
            cards = [c for c in (_card(b, base) for b in blocks) if c]
            if len(cards) < MIN_ITEMS or len(cards) / len(blocks) < 0.8:
                continue
            where = f"{len(blocks)} {tag_name} cards in {describe(parent, position)}"
            characters = [Character(n, pic, url, [], found_by=f"cards @ {where}") for n, url, pic in cards]
            targets = len({url for _, url, _ in cards})
            signature = ("cards", tag_name, classes)
            out.append(
                Candidate.of_items(
                    "cards", where, signature, characters, len(cards), targets, len(cards), heading, position
                )
            )
    return out


def parse_generic(soup: BeautifulSoup, base: str, page_url: str) -> list[Character]:
    title = _title(soup)
    root = soup.find("main") or soup.body or soup
    for tag in root.select(_CHROME):
        tag.decompose()
    candidates = [c for c in _grids(root, base, page_url) if max(cue(title), cue(c.heading)) > 0]
    if cue(title) < 0 or not candidates:
        raise PageShapeError(
            f"no encyclopedia markup, and no grid of linked portraits under words that say characters on {title!r}"
        )
    best = max(candidates, key=lambda c: (len(c.characters) * c.distinct, -c.position))
    found = _Collected()
    for ch in best.characters:
        found.add(ch)
    return found.result()
