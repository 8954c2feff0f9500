"""Galleries, lists and runs of cards that list characters: each item a name (a caption, a leading
link, a bold link), most linking to an article, many with a picture."""

from __future__ import annotations

from bs4 import NavigableString, Tag

from pipeline.sources.encyclopedia.candidate import MIN_ITEMS, Candidate, describe, sibling_groups
from pipeline.sources.encyclopedia.images import _display_width, image_url
from pipeline.sources.encyclopedia.mediawiki_markup import _article_link
from pipeline.sources.encyclopedia.page import Character, _text

_GALLERY_BOX = "li.gallerybox, div.gallerybox, div.wikia-gallery-item"
_CAPTION = ".gallerytext, .lightbox-caption, .wikia-gallery-caption, figcaption"


def gallery_candidate(gallery: Tag, base: str, page_url: str, heading: str, position: int) -> Candidate | None:
    """A gallery whose captions are short names (the caption of a box may be a link or plain text)."""
    boxes = gallery.select(_GALLERY_BOX)
    if len(boxes) < MIN_ITEMS:
        return None
    where = describe(gallery, position)
    characters, linked, targets, pictured = [], 0, set(), 0
    for box in boxes:
        cap = box.select_one(_CAPTION)
        if cap is None:
            continue
        name = " ".join(_text(cap).split())
        if not name or len(name) > 60 or len(name.split()) > 6:
            continue  # a sentence, not a name
        link = next((lk for lk in (_article_link(a, base) for a in cap.find_all("a")) if lk), None)
        img = box.find("img")
        picture = image_url(img, base) if img is not None else None
        pictured += picture is not None
        if link:
            linked += 1
            targets.add(link[1])
        source, aliases = (link[1], [link[0]] if link[0] != name else []) if link else (page_url, [])
        characters.append(Character(name, picture, source, aliases, found_by=f"gallery @ {where}"))
    if len(characters) < MIN_ITEMS:
        return None
    n = len(characters)
    # A caption without a link is still a name here: galleries caption people by name.
    return Candidate(
        "gallery",
        where,
        ("gallery",),
        characters,
        max(linked / n, 0.8),
        len(targets) / linked if linked else 1.0,
        pictured / n,
        False,
        heading,
        position,
    )


_QUOTES = " \t\n\"'\u201c\u201d\u2018\u2019\u00ab\u00bb\u300c\u300d"


def _first_child(tag: Tag):
    """The first child that is not blank or only quote marks ("<a>Shadow Man</a>" is quoted, not prose)."""
    return next((c for c in tag.children if not (isinstance(c, NavigableString) and not c.strip(_QUOTES))), None)


def _leading_link(li: Tag, base: str) -> tuple[str, str, str | None] | None:
    """(text, title, URL) when the item starts with a link to an article (possibly in bold/italics or
    a span); a red link (class "new": the article is not written yet) names someone with no URL."""
    first = _first_child(li)
    while isinstance(first, Tag) and first.name in ("b", "strong", "i", "span") and first.find("a") is not None:
        first = _first_child(first)
    if isinstance(first, Tag) and "new" in (first.get("class") or []) and _text(first):
        return _text(first), _text(first), None
    if not isinstance(first, Tag) or first.name != "a":
        return None
    link = _article_link(first, base)
    text = _text(first)
    return (text, link[0], link[1]) if link and text else None


def list_candidate(
    ul: Tag, base: str, page_url: str, heading: str, position: int, min_items: int = MIN_ITEMS
) -> Candidate | None:
    """A list whose items start with a link to an article: "* [[Name]], description"."""
    items = ul.find_all("li", recursive=False)
    if len(items) < min_items:
        return None
    where = describe(ul, position)
    characters, targets, pictured = [], set(), 0
    for li in items:
        link = _leading_link(li, base)
        if link is None:
            continue
        img = li.find("img")
        picture = image_url(img, base) if img is not None and (_display_width(img) or 100) >= 30 else None
        pictured += picture is not None
        targets.add(link[2] or link[0])
        aliases = [link[1]] if link[1] != link[0] else []
        source = link[2] or page_url
        characters.append(Character(link[0], picture, source, aliases, found_by=f"link-list @ {where}"))
    if len(characters) < min_items or len(characters) / len(items) < 0.6:
        return None
    return Candidate.of_items(
        "link-list", where, ("link-list", ul.name), characters, len(items), len(targets), pictured, heading, position
    )


def _card_name(card: Tag, base: str) -> tuple[str, str, str] | None:
    """The name of a card: a link to an article in bold or in a heading, else its first text link."""
    first = None
    for a in card.find_all("a"):
        link = _article_link(a, base)
        text = _text(a)
        if not link or not text:
            continue
        if a.find_parent(["b", "strong", "h2", "h3", "h4", "h5", "h6"]) is not None:
            return text, link[0], link[1]
        first = first or (text, link[0], link[1])
    return first


def card_candidates(parent: Tag, base: str, page_url: str, heading: str, position: int) -> list[Candidate]:
    """Runs of sibling blocks of one shape (same tag and class), each a card with a picture and a
    link to an article: one small table or div per character."""
    out = []
    for (tag_name, classes), cards in sibling_groups(parent).items():
        if tag_name not in ("table", "div", "li", "article", "section") or len(cards) < MIN_ITEMS:
            continue
        if tag_name == "li" and parent.name in ("ul", "ol"):
            continue  # list items are read as lists
        cards = [card for card in cards if card.find("img") is not None]
        where = f"{len(cards)} {tag_name}{'.' + '.'.join(classes[:2]) if classes else ''} blocks in {describe(parent, position)}"
        characters, targets, pictured = [], set(), 0
        for card in cards:
            name = _card_name(card, base)
            if name is None or len(name[0]) > 60:
                continue
            img = next((i for i in card.find_all("img") if (_display_width(i) or 100) >= 40), None)
            picture = image_url(img, base) if img is not None else None
            pictured += picture is not None
            targets.add(name[2])
            aliases = [name[1]] if name[1] != name[0] else []
            characters.append(Character(name[0], picture, name[2], aliases, found_by=f"cards @ {where}"))
        if len(characters) >= MIN_ITEMS and len(characters) / len(cards) >= 0.8:
            signature = ("cards", tag_name, classes)
            out.append(
                Candidate.of_items(
                    "cards", where, signature, characters, len(cards), len(targets), pictured, heading, position
                )
            )
    return out
