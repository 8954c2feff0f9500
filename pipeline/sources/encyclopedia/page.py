"""Page basics for the encyclopedia parsers: the Character record, PageShapeError, the lxml soup
with its depth bound, text and URL helpers shared by every page shape, and site detection."""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from bs4 import BeautifulSoup, Tag


@dataclass
class Character:
    name: str
    image_url: str | None
    source_url: str
    aliases: list[str] = field(default_factory=list)
    # Which rule found the name, in which container ("table-column @ table.article-table #5, column 'Name'"):
    # kept in the downloads table's detail and shown by `toonface parse`, for debugging.
    found_by: str = field(default="", compare=False)

    def as_record(self) -> dict:
        return {
            "name": self.name,
            "image_url": self.image_url,
            "source_url": self.source_url,
            "aliases": list(self.aliases),
            "found_by": self.found_by,
        }


def name_key(name: str) -> str:
    """How character names are compared: NFKC (full-width forms), case and spacing do not count."""
    return " ".join(unicodedata.normalize("NFKC", name).casefold().split())


class PageShapeError(ValueError):
    """The markup matches no shape we know; the message starts with "page shape not recognised"."""

    def __init__(self, why: str):
        super().__init__(f"page shape not recognised: {why}")


# Blink's HTML parser stops nesting at 512 elements too; the saved pages in ../shared nest 14-25 deep.
# The bound keeps ancestor walks (find_parent, soupsieve's descendant selectors, role items) short.
MAX_DEPTH = 512
_SURROGATE = re.compile("[\ud800-\udfff]")


def without_surrogates(text: str) -> str:
    """Lone surrogates (from JSON \\udXXX escapes or a str built in code) as U+FFFD: lxml and the
    UTF-8 output of the CLI both refuse them."""
    return _SURROGATE.sub("\ufffd", text)


def html_soup(html: str) -> BeautifulSoup:
    """The page parsed by lxml; a page nested deeper than MAX_DEPTH raises PageShapeError."""
    soup = BeautifulSoup(without_surrogates(html), "lxml")
    stack = [(soup, 0)]
    while stack:  # iterative: the tree may be far deeper than Python's recursion limit
        tag, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise PageShapeError(f"HTML nested deeper than {MAX_DEPTH} elements")
        stack.extend((child, depth + 1) for child in tag.contents if isinstance(child, Tag))
    return soup


def _split(url: str):
    """urlsplit, or None for a URL urllib refuses (bad IPv6 host, NFKC look-alikes): page data can
    hold anything."""
    try:
        return urlsplit(url)
    except ValueError:
        return None


_FOOTNOTE = re.compile(r"\[\s*(\d+|[a-z]|note \d+|citation needed)\s*\]", re.I)


def _text(tag: Tag) -> str:
    return _FOOTNOTE.sub("", " ".join(tag.get_text(" ").split())).strip()


class _Collected:
    """Characters in page order, one per name; a later sighting may add a missing image/alias."""

    def __init__(self):
        self.by_name: dict[str, Character] = {}

    def add(self, ch: Character | None):
        if ch is None or not ch.name:
            return
        have = self.by_name.get(ch.name)
        if have is None:
            self.by_name[ch.name] = ch
            return
        have.image_url = have.image_url or ch.image_url
        have.aliases += [a for a in ch.aliases if a not in have.aliases]

    def result(self) -> list[Character]:
        return list(self.by_name.values())


# --------------------------------------------------------------------------- site detection


def detect_site(html: str, page_url: str = "") -> str:
    """'mediawiki', 'baike', 'bing', 'baidu', 'google' or 'unknown': from the URL's host when it is
    a known one, else from markers in the text (cheap string tests, no parsing)."""
    host = (urlsplit(page_url).hostname or "").lower() if page_url else ""
    if host:
        if host == "baike.baidu.com" or host.endswith(".baike.baidu.com"):
            return "baike"
        if host.endswith("image.baidu.com"):
            return "baidu"
        if host == "bing.com" or host.endswith(".bing.com"):
            return "bing"
        if re.match(r"^(www\.|images\.)?google\.[a-z.]+$", host):
            return "google"
        if host.endswith(
            (".wikipedia.org", ".fandom.com", ".wikia.com", ".wikia.org", "bulbagarden.net", ".wikimedia.org")
        ):
            return "mediawiki"
    head = html[:400_000]
    if "flip.setData('imgData'" in head or re.search(r'"(objURL|thumbURL|middleURL)"\s*:', head):
        return "baidu"
    if re.search(r"""class=["'][^"']*\biusc\b""", head):
        return "bing"
    if "rg_meta" in head or '"ischj"' in head or ("AF_initDataCallback" in head and "gstatic.com/images" in head):
        return "google"
    if re.search(r"encrypted-tbn\d\.gstatic\.com/images", head) and re.search(r"""href=["']/(url|imgres)\?""", head):
        return "google"  # the basic-HTML result page: links to results around Google's thumbnails
    if re.search(
        r'content="MediaWiki|class="[^"]*\bmediawiki\b|mw-parser-output|id="mw-content-text"'
        r'|"wgPageName"|class="mw-headline"|class="[^"]*\bwikitable\b',
        head,
    ):
        return "mediawiki"
    if re.search(r"baike\.baidu\.com|bkimg\.cdn\.bcebos\.com|lemmaWgt|J-lemma-title|lemma-summary", head):
        return "baike"
    return "unknown"
