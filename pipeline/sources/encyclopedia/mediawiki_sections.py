"""MediaWiki sections read in document order: character headings of list pages and the
structured entries (captions, dt terms, bold list items, name-column tables) of a section."""

from __future__ import annotations

import re
from urllib.parse import quote, urlsplit, urlunsplit

from bs4 import NavigableString, Tag

from pipeline.sources.encyclopedia.blocks import list_candidate
from pipeline.sources.encyclopedia.candidate import CHARACTER_HEADER, NAME_HEADER, NOT_A_NAME, cue, header_words
from pipeline.sources.encyclopedia.images import _display_width, _picture, image_url
from pipeline.sources.encyclopedia.mediawiki_markup import (
    _ASPECT,
    _BOILERPLATE,
    _CAPTION_GLUE,
    _GROUP,
    _HEADING,
    _MAIN_ARTICLE,
    _article_link,
    _character_from_link,
)
from pipeline.sources.encyclopedia.page import Character, _Collected, _text
from pipeline.sources.encyclopedia.tables import table_candidate

# ----- document order helpers for sections


class _Doc:
    """The content's tags in document order and its headings, so a section is a slice."""

    def __init__(self, root: Tag):
        self.tags = root.find_all(True)
        self.pos = {id(t): i for i, t in enumerate(self.tags)}
        self.headings = [t for t in self.tags if _HEADING.match(t.name)]
        # Each heading's section ends at the next heading of its level or higher: found once for
        # all (a stack of open sections), so a page with thousands of headings stays linear.
        self.index = {id(h): k for k, h in enumerate(self.headings)}
        self.section_end = [len(self.headings)] * len(self.headings)
        open_sections: list[int] = []
        for k, h in enumerate(self.headings):
            while open_sections and self.level(self.headings[open_sections[-1]]) >= self.level(h):
                self.section_end[open_sections.pop()] = k
            open_sections.append(k)

    @staticmethod
    def level(h: Tag) -> int:
        return int(h.name[1])

    @staticmethod
    def heading_text(h: Tag) -> str:
        headline = h.select_one(".mw-headline")
        return _text(headline or h)

    @staticmethod
    def heading_ids(h: Tag) -> set[str]:
        ids = {h.get("id", "")} | {s.get("id", "") for s in h.find_all(id=True)}
        return {i for i in ids if i}

    def find_heading(self, wanted: str) -> Tag | None:
        keys = {wanted, wanted.replace(" ", "_"), wanted.replace("_", " ")}
        for h in self.headings:
            if self.heading_ids(h) & keys or self.heading_text(h) in keys:
                return h
        return None

    def end_of(self, h: Tag, any_level: bool = False) -> int:
        """Index after the last tag of h's section (up to the next heading of its level or
        higher; with any_level, up to the next heading at all)."""
        k = self.index[id(h)]
        end = k + 1 if any_level else self.section_end[k]
        return self.pos[id(self.headings[end])] if end < len(self.headings) else len(self.tags)

    def subheadings(self, h: Tag) -> list[Tag]:
        k = self.index[id(h)]
        return self.headings[k + 1 : self.section_end[k]]

    def between(self, start: int, end: int) -> list[Tag]:
        return self.tags[start:end]


def _heading_kinds(doc: _Doc, headings: list[Tag]) -> list[tuple[Tag, str]]:
    """('character' | 'group') for each heading worth reading; aspects of a character and
    boilerplate sections are left out with everything under them."""
    out, skip_below = [], None
    for h in headings:
        if skip_below is not None and doc.level(h) > skip_below:
            continue
        skip_below = None
        text = doc.heading_text(h)
        if _BOILERPLATE.match(text):
            skip_below = doc.level(h)
            continue
        subs = doc.subheadings(h)
        top = min((doc.level(s) for s in subs), default=0)
        direct = [s for s in subs if doc.level(s) == top]
        if _GROUP.search(text) or (direct and not any(_ASPECT.match(doc.heading_text(s)) for s in direct)):
            out.append((h, "group"))
        else:
            out.append((h, "character"))
            skip_below = doc.level(h)
    return out


def _heading_character(doc: _Doc, h: Tag, base: str, page_url: str) -> Character:
    start, end = doc.pos[id(h)], doc.end_of(h)
    name = doc.heading_text(h)
    anchor = next(iter(sorted(doc.heading_ids(h))), name.replace(" ", "_"))
    source = urlunsplit(urlsplit(base)._replace(fragment=quote(anchor, safe="_.-:()"))) if base else page_url
    image = None
    for tag in doc.between(start + 1, end):
        # "Main article: X" points at the character's own page, a better source than the list.
        if ("hatnote" in (tag.get("class") or []) or tag.get("role") == "note") and _MAIN_ARTICLE.match(_text(tag)):
            links = [link for link in (_article_link(a, base) for a in tag.find_all("a")) if link]
            if links:
                source = links[0][1]
        if tag.name == "img" and image is None and not tag.find_parent(class_="hatnote"):
            width = _display_width(tag)
            if width is None or width >= 60:
                image = image_url(tag, base)
    return Character(name, image, source, [], found_by=f"heading @ {h.name}")


def _entries_in(
    tags: list[Tag], base: str, page_url: str, found: _Collected, link_lists: bool = False, cast: bool = False
):
    """Structured character entries among `tags` (one section's tags, sub-sections excluded by
    the caller where needed): captions of figures/galleries, dt terms, bold-led list items and
    name-column table rows; with link_lists, also the items of lists that start with a link to an
    article; with cast, list items read as "Actor as Character" (see section_reading)."""
    seen = set()
    for tag in tags:
        if id(tag) in seen:
            continue
        classes = tag.get("class") or []
        listed = (
            list_candidate(tag, base, page_url, "", 0, min_items=1) if link_lists and tag.name in ("ul", "ol") else None
        )
        if listed is not None:
            seen.update(id(t) for t in tag.find_all(True))
            for ch in listed.characters:
                found.add(ch)
            continue
        if tag.name == "figure" or {"thumb", "gallerybox", "wikia-gallery-item"} & set(classes):
            for t in tag.find_all(True):
                seen.add(id(t))
            _caption_entries(tag, base, found)
        elif tag.name == "dt" and not _labels_a_list(tag):
            name = _clean_term(_text(tag))
            link = tag.find("a")  # the term is a link to the character's page: cite that page
            ch = _character_from_link(link, base, None) if link is not None and _text(link) == name else None
            found.add(_tagged(ch or (Character(name, None, page_url or base) if name else None), "term @ dl"))
        elif cast and tag.name == "li" and tag.parent is not None and tag.parent.name in ("ul", "ol"):
            for ch in _cast_item(tag, base, page_url):
                found.add(ch)
        elif tag.name == "li" and tag.parent is not None and tag.parent.name in ("ul", "ol"):
            found.add(_tagged(_bold_item(tag, base, page_url), f"bold-item @ {tag.parent.name}"))
        elif tag.name == "table" and "wikitable" in classes:
            for ch in _table_characters(tag, base, page_url):
                found.add(ch)


def _labels_a_list(dt: Tag) -> bool:
    """A term standing alone over a list ("Straw Hat Pirates" above its members) is a group label."""
    dl = dt.find_parent("dl")
    following = dl.find_next_sibling(True) if dl is not None and len(dl.find_all("dd")) == 0 else None
    return following is not None and following.name in ("ul", "ol")


def _tagged(ch: Character | None, found_by: str) -> Character | None:
    if ch is not None:
        ch.found_by = ch.found_by or found_by
    return ch


def _caption_entries(fig: Tag, base: str, found: _Collected):
    cap = fig.select_one("figcaption, .thumbcaption, .gallerytext, .lightbox-caption, .caption")
    if cap is None:
        return
    links = [a for a in cap.find_all("a") if _article_link(a, base)]
    rest = "".join(s for s in cap.find_all(string=True) if not s.find_parent("a"))
    if not links or _CAPTION_GLUE.sub("", rest):  # words besides names: "Team Rocket in ..."
        return
    picture = _picture(fig, base, 40)
    for a in links:
        found.add(_tagged(_character_from_link(a, base, picture if len(links) == 1 else None), f"caption @ {fig.name}"))


def _clean_term(text: str) -> str:
    text = re.sub(r"\s*\((voiced|portrayed|played) by [^)]*\)\s*$", "", text, flags=re.I)
    return re.split(r"\s+[–—-]\s+|:\s", text, maxsplit=1)[0].strip()


def _bold_item(li: Tag, base: str, page_url: str) -> Character | None:
    """`* '''Name''' – description`: the bold name at the very start of the item."""
    first = next((c for c in li.children if not (isinstance(c, NavigableString) and not c.strip())), None)
    if not isinstance(first, Tag) or first.name not in ("b", "strong"):
        return None
    name = _clean_term(_text(first))
    link = first.find("a")
    if link is not None and _article_link(link, base):
        ch = _character_from_link(link, base, None)
        if ch:
            ch.name = name or ch.name
            return ch
    return Character(name, None, page_url or base) if name else None


def _table_characters(table: Tag, base: str, page_url: str) -> list[Character]:
    """A wikitable's names, when a header names their column (Character, Role, Name ...): read as
    every table (pipeline.sources.encyclopedia.tables), sub-header rows and spans included."""
    found = table_candidate(table, base, page_url, "", 0, min_items=1)
    header = header_words(found.header) if found is not None else ""
    named = found is not None and (CHARACTER_HEADER.match(header) or NAME_HEADER.match(header))
    return found.characters if named else []


def _list_characters(doc: _Doc, base: str, page_url: str) -> list[Character]:
    found = _Collected()
    first = doc.pos[id(doc.headings[0])] if doc.headings else len(doc.tags)
    _entries_in(doc.between(0, first), base, page_url, found)  # the lead, before any heading
    _read_headings(doc, doc.headings, base, page_url, found, headings_are_characters=True)
    return found.result()


def _read_headings(
    doc: _Doc,
    headings: list[Tag],
    base: str,
    page_url: str,
    found: _Collected,
    headings_are_characters: bool,
    **reading,
):
    for h, kind in _heading_kinds(doc, headings):
        if kind == "character" and headings_are_characters:
            found.add(_heading_character(doc, h, base, page_url))
        else:  # a group: its own entries, up to its first sub-heading
            start = doc.pos[id(h)] + 1
            _entries_in(doc.between(start, doc.end_of(h, any_level=True)), base, page_url, found, **reading)


_CAST_HEADING = re.compile(r"\b(cast|voice cast|voices|starring)\b|キャスト|声優|配音|声优", re.I)
_CAST_SEPARATOR = re.compile(r"\s+(?:as|–|—|-)\s+|:\s+")


def _cast_item(li: Tag, base: str, page_url: str) -> list[Character]:
    """`* Actor as Character` / `* Actor – Character, Other character`: the characters after the
    separator (a cast list names the actor first); "Additional voices" and the like are no names."""
    parts = _CAST_SEPARATOR.split(_text(li), maxsplit=1)
    if len(parts) < 2:
        return []
    links = {_text(a): a for a in li.find_all("a")}
    out = []
    for part in re.split(r",\s*|\s+and\s+", parts[1]):
        name = re.sub(r"\s*\([^)]*\)", "", part).split("/")[0].strip()
        if not name or NOT_A_NAME.search(name) or len(name.split()) > 6:
            continue
        link = links.get(name)
        ch = _character_from_link(link, base, None) if link is not None else None
        out.append(ch or Character(name, None, page_url or base))
        out[-1].found_by = f"cast-item @ {li.parent.name}"
    return out


def section_reading(heading_text: str) -> dict:
    """How a section's entries are read, by what its heading says: a cast list names actors first; a
    section that says characters, or says nothing either way, also reads lists whose items start with
    a link (the user chose it); one that names other things reads only its strict entries."""
    words = cue(heading_text)
    if _CAST_HEADING.search(heading_text) and not re.search(r"characters?", heading_text, re.I):
        return {"cast": True}
    return {"link_lists": words >= 0}


def _section_characters(doc: _Doc, heading: Tag, base: str, page_url: str, headings_are_characters) -> list[Character]:
    found = _Collected()
    if headings_are_characters and _heading_kinds(doc, [heading]) == [(heading, "character")]:
        found.add(_heading_character(doc, heading, base, page_url))  # the fragment names one character
        return found.result()
    reading = section_reading(doc.heading_text(heading))
    section = doc.between(doc.pos[id(heading)] + 1, doc.end_of(heading, any_level=True))
    _entries_in(section, base, page_url, found, **reading)
    # Sub-headings of a topic page ("The trio", "Other members") are topics, not characters;
    # they are characters only on a list-of-characters page (never in a cast list).
    listing = bool(headings_are_characters) and not reading.get("cast")
    _read_headings(doc, doc.subheadings(heading), base, page_url, found, listing, **reading)
    return found.result()
