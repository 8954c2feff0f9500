"""The containers of a MediaWiki page that list characters, found by their structure.

A list of characters is a run of similar items, each naming one character, most of them linking to
that character's article on the same wiki and many showing a picture: table rows, gallery boxes or list
items. `find_candidates(root, base, page_url)` finds every such run on the page's content, with the
evidence for it (how many items, what share links to distinct articles, what share has a picture, the
words of its header and of the heading above it); `choose(candidates, title)` keeps the best group of
containers of one structure (one table per generation, one list per letter), or nothing when the
evidence is weak: a page we cannot read is "not recognised", never a list of something else. Every character keeps the rule and container it came from (`found_by`).
"""

from __future__ import annotations

import re

from bs4 import Tag

from pipeline.sources.encyclopedia.blocks import card_candidates, gallery_candidate, list_candidate
from pipeline.sources.encyclopedia.candidate import LIST_PAGE, MIN_ITEMS, NOT_HERE, Candidate, cue
from pipeline.sources.encyclopedia.mediawiki_markup import _text
from pipeline.sources.encyclopedia.tables import table_candidate

__all__ = ["Candidate", "MIN_ITEMS", "NOT_HERE", "choose", "cue", "find_candidates"]


def find_candidates(root: Tag, base: str, page_url: str) -> list[Candidate]:
    """Every table, gallery and list of the content that looks like a run of named items, in page
    order, each with the nearest heading above it. Nested containers are read on their own."""
    out, heading = [], ""
    for position, tag in enumerate(root.find_all(True)):
        if re.fullmatch(r"h[1-6]", tag.name):
            headline = tag.select_one(".mw-headline")
            heading = _text(headline or tag)
            continue
        found = None
        classes = set(tag.get("class") or [])
        if tag.name == "table":
            found = table_candidate(tag, base, page_url, heading, position)
        elif {"gallery", "wikia-gallery", "mw-gallery-traditional", "mw-gallery-packed"} & classes or (
            tag.name == "ul" and "gallery" in " ".join(classes)
        ):
            found = gallery_candidate(tag, base, page_url, heading, position)
        elif tag.name in ("ul", "ol") and not ({"gallery"} & classes):
            found = list_candidate(tag, base, page_url, heading, position)
        if found is not None:
            out.append(found)
        if len(tag.contents) >= MIN_ITEMS:
            out.extend(card_candidates(tag, base, page_url, heading, position))
    return out


def choose(candidates: list[Candidate], title: str, min_quality: float = 0.5) -> list[Candidate]:
    """The best group of containers of one structure (one table per generation, one list per letter),
    or [] when the evidence is weak. A container needs good structure (quality), no word saying it
    lists something else (page title, its heading, its header) and a word saying it lists characters
    (same places). A page titled "List of ..." may stand in for that word when the structure is
    strong: items linked to distinct articles and pictured."""
    page_cue = cue(title)
    if page_cue < 0:  # NOT_HERE too: a title is never "See also"
        return []  # an episode, a chapter, a list of items: not an album's characters
    groups: dict[tuple, list[tuple[int, Candidate]]] = {}
    for c in candidates:
        local = 1 if c.header_cue else cue(c.heading)
        # "Season 2" over a table of a page titled "... characters" is a group of characters
        if local == NOT_HERE or (local < 0 and page_cue <= 0) or c.quality < min_quality:
            continue
        evidence = max(page_cue, local)
        strong = c.linked >= 0.8 and c.pictured >= 0.5 and len(c.characters) >= 5
        if evidence <= 0 and not (LIST_PAGE.search(title) and strong):
            continue
        groups.setdefault(c.signature, []).append((evidence, c))
    if not groups:
        return []

    def strength(group):
        return (max(e for e, _ in group), sum(len(c.characters) * c.quality for _, c in group))

    return [c for _, c in max(groups.values(), key=strength)]
