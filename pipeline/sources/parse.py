"""One entry point for saved pages: encyclopedia pages give characters, search pages give images.

`parse_page(text, page_url, kind)` returns plain dicts (ready for JSON):
  * kind mediawiki / baike: {"name", "image_url", "source_url", "aliases", "found_by"}
  * kind bing / baidu / google: {"image_url", "thumb_url", "source_url", "title", "width", "height"}
With kind "auto" the site is recognised from page_url's host when it is a known one, else from
the markup (see `encyclopedia.detect_site`). A page nobody recognises raises PageShapeError.

Whatever the text, every kind returns a list or raises PageShapeError, never another exception:
an entry with wrong-typed values (a number where a URL belongs, a list where an object does) is
skipped and the rest of the page kept; data nested too deeply (JSON past Python's recursion limit,
HTML past encyclopedia.MAX_DEPTH) makes the page unreadable. tests/pipeline/sources/test_parser_fuzz.py
fuzzes this. Only an unknown `kind` (or a page_url urllib cannot split) raises a plain ValueError.
"""

from __future__ import annotations

from dataclasses import asdict

from pipeline.sources.encyclopedia import PageShapeError, detect_site, parse_characters
from pipeline.sources.image_search import parse_search

ENCYCLOPEDIA_KINDS = ("mediawiki", "baike", "generic")
SEARCH_KINDS = ("bing", "baidu", "google")
KINDS = ("auto",) + ENCYCLOPEDIA_KINDS + SEARCH_KINDS


def parse_page(text: str, page_url: str = "", kind: str = "auto") -> list[dict]:
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
    if kind == "auto":
        kind = detect_site(text, page_url)
        if kind == "unknown":  # no known site: a character list may still be read by its structure
            try:
                return [c.as_record() for c in parse_characters(text, page_url, "generic")]
            except PageShapeError as exc:
                raise PageShapeError(
                    "neither an encyclopedia page (MediaWiki, Baike) nor an image-search page (Bing, Baidu, "
                    f"Google), and {str(exc).removeprefix('page shape not recognised: ')}; pass --kind to force one"
                ) from None
    if kind in ENCYCLOPEDIA_KINDS:
        return [c.as_record() for c in parse_characters(text, page_url, kind)]
    return [asdict(r) for r in parse_search(text, page_url, kind)]
