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
from dataclasses import dataclass

from bs4 import NavigableString, Tag

from pipeline.sources.encyclopedia.images import _display_width, image_url
from pipeline.sources.encyclopedia.mediawiki_markup import _BOILERPLATE, _article_link
from pipeline.sources.encyclopedia.page import Character, _text

# Header words that name the column of names; words that say a page or section lists characters;
# words that say it lists something else (episodes, items, places ...).
NAME_HEADER = re.compile(r"^(names?|名字|名前|名称|名稱)$", re.I)  # names of anything: needs other evidence
CHARACTER_HEADER = re.compile(
    r"^((character|member|villager|hero|villain)s?( names?)?|角色(名)?|人物|キャラクター|登場人物|登场人物)$", re.I
)
CHARACTER_WORDS = re.compile(
    r"\b(characters?|cast|members?|villagers?|npcs?|heroes|villains|protagonists|antagonists|roster|"
    r"residents|inhabitants|crew|students|personnel)\b|角色|人物|登場人物|登场人物|キャラクター|成员|成員",
    re.I,
)
OTHER_WORDS = re.compile(
    r"\b(episodes?|chapters?|volumes?|issues?|comics?|seasons?|films?|movies?|songs?|discography|"
    r"weapons?|items?|equipment|locations?|places?|maps?|levels?|stages?|achievements?|quests?|missions?|"
    r"cards?|books?|novels?|releases?|products?|merchandise|modes?|skins?|gadgets?|moves?|spells?|"
    r"vehicles?|ships?|planets?|cities|towns?|countries|awards?|games?)\b|(\(episode\)|\(chapter\))|"
    r"[集话話章卷]$|道具|武器|地点|地點|剧集|劇集",
    re.I,
)
LIST_PAGE = re.compile(r"^(lists? of|liste (der|des|de)|lista de|elenco|список)\b|(一覧|一览|列表|列表)$", re.I)
MIN_ITEMS = 3
_MAX_SPAN = 200  # rowspan/colspan beyond this is a broken page, not a table layout


@dataclass
class Candidate:
    rule: str  # table-column | gallery | link-list
    where: str  # the container, readable: 'table.roundy #3, column "Pokémon"'
    signature: tuple  # same structure elsewhere on the page = a sibling
    characters: list[Character]
    linked: float  # share of items whose name links to an article
    distinct: float  # share of distinct link targets among the linked ones
    pictured: float  # share of items with a picture of their own
    header_cue: bool  # a header cell says "Name"/"Character"
    heading: str  # the nearest heading above the container
    position: int  # document order

    @property
    def quality(self) -> float:
        """How list-of-characters-like the structure is, 0..1."""
        return self.linked * self.distinct * (0.7 + 0.3 * self.pictured)


# --------------------------------------------------------------------------- tables


def _span(cell: Tag, attr: str) -> int:
    try:
        return max(1, min(_MAX_SPAN, int(str(cell.get(attr, "1")).strip() or 1)))
    except ValueError:
        return 1


def table_grid(table: Tag) -> list[list[Tag]]:
    """The table's rows with rowspan/colspan expanded, so that column k is the same column in
    every row (a rowspanned number cell shifts the cells after it in the HTML, not in the grid)."""
    grid, carried = [], {}  # column -> [cell, rows still to fill]
    for tr in table.find_all("tr"):
        if tr.find_parent("table") is not table:
            continue  # a row of a nested table
        cells = tr.find_all(["td", "th"], recursive=False)
        row, col, i = [], 0, 0
        while i < len(cells) or any(c >= col for c in carried):
            if col in carried:
                cell, left = carried[col]
                row.append(cell)
                if left <= 1:
                    del carried[col]
                else:
                    carried[col][1] -= 1
                col += 1
                continue
            if i >= len(cells):
                row.append(None)
                col += 1
                continue
            cell = cells[i]
            i += 1
            rows = _span(cell, "rowspan")
            for _ in range(_span(cell, "colspan")):
                row.append(cell)
                if rows > 1:
                    carried[col] = [cell, rows - 1]
                col += 1
        grid.append(row)
    return grid


def _is_header(row: list) -> bool:
    cells = [c for c in row if c is not None]
    return bool(cells) and all(c.name == "th" for c in cells)


def _cell_link(cell: Tag, base: str) -> tuple[str, str, str] | None:
    """(link text, article title, URL) of the first article link in a cell."""
    for a in cell.find_all("a"):
        link = _article_link(a, base)
        text = _text(a)
        if link and text and not text.isdigit():
            return text, link[0], link[1]
    return None


_SEPARATORS = re.compile(r"\s*\((?:later|formerly|a\.k\.a\.|aka|also)[^)]*\)\s*$", re.I)


def _first_line(cell: Tag) -> str:
    """The cell's first line of text (a <br> ends a line), without a trailing "(later X)" note."""
    lines, line = [], []
    for node in cell.descendants:
        if isinstance(node, Tag) and node.name == "br":
            lines.append("".join(line))
            line = []
        elif isinstance(node, NavigableString) and node.parent.name not in ("style", "script", "sup"):
            line.append(str(node))
    lines.append("".join(line))
    first = next((" ".join(part.split()) for part in lines if part.strip()), "")
    return _SEPARATORS.sub("", first).strip()


def _row_picture(row: list, col: int, name_cols: set[int], base: str) -> str | None:
    """The picture beside a name: in its own cell, else the nearest cell to its left (a portrait or
    sprite column), not crossing another name; icons under 16 px are not pictures."""
    for k in (col, col - 1, col - 2, col + 1):
        if k < 0 or k >= len(row) or row[k] is None or (k != col and k in name_cols):
            if k != col and k in name_cols and k < col:
                break
            continue
        if k != col and row[k] is row[col]:
            continue
        for img in row[k].find_all("img"):
            if (_display_width(img) or 100) >= 16:
                url = image_url(img, base)
                if url:
                    return url
    return None


def _column_stats(grid: list[list], data: list[int], col: int, base: str) -> tuple[float, float]:
    """(share of the column's non-empty cells that link to an article, share of distinct targets)."""
    cells = [grid[r][col] for r in data if col < len(grid[r]) and grid[r][col] is not None and _text(grid[r][col])]
    cells = list(dict.fromkeys(cells))  # a rowspanned cell counts once
    links = [x for x in (_cell_link(c, base) for c in cells) if x]
    return (len(links) / len(cells) if cells else 0.0, len({x[2] for x in links}) / len(links) if links else 0.0)


def _name_columns(header_text: list[str], stats: list[tuple[float, float]]) -> tuple[list[int], bool]:
    """The columns that hold names: those whose header says so, else the most linked and distinct
    column and the columns under the same spanning header that look like it (an evolution chain
    repeats sprite | name | method across one row)."""
    for words, says_characters in ((CHARACTER_HEADER, True), (NAME_HEADER, False)):
        cued = [c for c, h in enumerate(header_text) if words.match(h)]
        if cued:
            return cued[:1], says_characters
    best = max(range(len(stats)), key=lambda c: (stats[c][0] * stats[c][1], -c))
    same = [
        c
        for c in range(len(stats))
        if c == best or (header_text[c] == header_text[best] and stats[c][0] >= 0.5 and stats[c][1] >= 0.8)
    ]
    return same, False


def _table_candidate(table: Tag, base: str, page_url: str, heading: str, position: int) -> Candidate | None:
    grid = table_grid(table)
    header = next((row for row in grid if _is_header(row)), None)
    data = [r for r, row in enumerate(grid) if not _is_header(row) and any(c is not None for c in row)]
    if len(data) < MIN_ITEMS:
        return None
    width = max(len(grid[r]) for r in data)
    header_text = [
        _text(header[c]) if header and c < len(header) and header[c] is not None else "" for c in range(width)
    ]
    stats = [_column_stats(grid, data, col, base) for col in range(width)]
    columns, header_cue = _name_columns(header_text, stats)
    linked, distinct = stats[columns[0]]
    if not header_cue and linked < 0.6:
        return None
    where = f"{_describe(table, position)}, column {header_text[columns[0]] or columns[0] + 1!r}"
    characters, seen_cells, pictured = [], set(), 0
    for r in data:
        for col in columns:
            cell = grid[r][col] if col < len(grid[r]) else None
            if cell is None or id(cell) in seen_cells:
                continue
            seen_cells.add(id(cell))
            link = _cell_link(cell, base)
            line = _first_line(cell)
            name = link[0] if link and line.startswith(link[0]) else line
            if not name or len(name) > 80 or name.isdigit():
                continue
            picture = _row_picture(grid[r], col, set(columns), base)
            pictured += picture is not None
            source, aliases = (
                (link[2], [link[1]] if link[1] != name else []) if link and link[0] == name else (page_url, [])
            )
            characters.append(Character(name, picture, source, aliases, found_by=f"table-column @ {where}"))
    if len(characters) < MIN_ITEMS:
        return None
    if header_cue:  # the header says these are names: plain-text names count, repeats do not
        linked = max(linked, 0.8)
        distinct = len({c.name for c in characters}) / len(characters)
    signature = ("table", tuple(table.get("class") or ()), header_text[columns[0]].casefold() if header_cue else "")
    return Candidate(
        "table-column",
        where,
        signature,
        characters,
        linked,
        distinct,
        pictured / len(characters),
        header_cue,
        heading,
        position,
    )


def _describe(tag: Tag, position: int) -> str:
    classes = ".".join((tag.get("class") or [])[:2])
    return f"{tag.name}{'.' + classes if classes else ''} #{position}"


# --------------------------------------------------------------------------- galleries and lists

_GALLERY_BOX = "li.gallerybox, div.gallerybox, div.wikia-gallery-item, div.lightbox-caption"
_CAPTION = ".gallerytext, .lightbox-caption, .wikia-gallery-caption, figcaption"


def _gallery_candidate(gallery: Tag, base: str, page_url: str, heading: str, position: int) -> Candidate | None:
    """A gallery whose captions are short names (the caption of a box may be a link or plain text)."""
    boxes = [b for b in gallery.select("li.gallerybox, div.gallerybox, div.wikia-gallery-item")]
    if len(boxes) < MIN_ITEMS:
        return None
    where = f"{_describe(gallery, position)}"
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


def _leading_link(li: Tag, base: str) -> tuple[str, str, str] | None:
    """(text, title, URL) when the item starts with a link to an article (possibly in bold/italics)."""
    first = next((c for c in li.children if not (isinstance(c, NavigableString) and not c.strip())), None)
    while isinstance(first, Tag) and first.name in ("b", "strong", "i", "span") and first.find("a") is not None:
        first = next((c for c in first.children if not (isinstance(c, NavigableString) and not c.strip())), None)
    if not isinstance(first, Tag) or first.name != "a":
        return None
    link = _article_link(first, base)
    text = _text(first)
    return (text, link[0], link[1]) if link and text else None


def _list_candidate(ul: Tag, base: str, page_url: str, heading: str, position: int) -> Candidate | None:
    """A list whose items start with a link to an article: "* [[Name]], description"."""
    items = ul.find_all("li", recursive=False)
    if len(items) < MIN_ITEMS:
        return None
    where = f"{_describe(ul, position)}"
    characters, targets, pictured = [], set(), 0
    for li in items:
        link = _leading_link(li, base)
        if link is None:
            continue
        img = li.find("img")
        picture = image_url(img, base) if img is not None and (_display_width(img) or 100) >= 30 else None
        pictured += picture is not None
        targets.add(link[2])
        aliases = [link[1]] if link[1] != link[0] else []
        characters.append(Character(link[0], picture, link[2], aliases, found_by=f"link-list @ {where}"))
    if len(characters) < MIN_ITEMS or len(characters) / len(items) < 0.6:
        return None
    return Candidate(
        "link-list",
        where,
        ("link-list", ul.name),
        characters,
        len(characters) / len(items),
        len(targets) / len(characters),
        pictured / len(characters),
        False,
        heading,
        position,
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


def _card_candidates(parent: Tag, base: str, page_url: str, heading: str, position: int) -> list[Candidate]:
    """Runs of sibling blocks of one shape (same tag and class), each a card with a picture and a
    link to an article: one small table or div per character."""
    groups: dict[tuple, list[Tag]] = {}
    for child in parent.find_all(True, recursive=False):
        if child.name in ("table", "div", "li", "article", "section") and child.find("img") is not None:
            groups.setdefault((child.name, tuple(child.get("class") or ())), []).append(child)
    out = []
    for (tag_name, classes), cards in groups.items():
        if len(cards) < MIN_ITEMS or (tag_name == "li" and parent.name in ("ul", "ol")):
            continue  # list items are read as lists
        where = f"{len(cards)} {tag_name}{'.' + '.'.join(classes[:2]) if classes else ''} blocks in {_describe(parent, position)}"
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
            out.append(
                Candidate(
                    "cards",
                    where,
                    ("cards", tag_name, classes),
                    characters,
                    len(characters) / len(cards),
                    len(targets) / len(characters),
                    pictured / len(characters),
                    False,
                    heading,
                    position,
                )
            )
    return out


# --------------------------------------------------------------------------- finding and choosing


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
            found = _table_candidate(tag, base, page_url, heading, position)
        elif {"gallery", "wikia-gallery", "mw-gallery-traditional", "mw-gallery-packed"} & classes or (
            tag.name == "ul" and "gallery" in " ".join(classes)
        ):
            found = _gallery_candidate(tag, base, page_url, heading, position)
        elif tag.name in ("ul", "ol") and not ({"gallery"} & classes):
            found = _list_candidate(tag, base, page_url, heading, position)
        if found is not None:
            out.append(found)
        if len(tag.contents) >= MIN_ITEMS:
            out.extend(_card_candidates(tag, base, page_url, heading, position))
    return out


def cue(text: str) -> int:
    """+1 when the words say characters, -1 when they say something else (or name a section of
    references, names in other languages, trivia ...), 0 when they say neither."""
    if _BOILERPLATE.match(text.strip()):
        return -1
    if CHARACTER_WORDS.search(text):
        return 1
    return -1 if OTHER_WORDS.search(text) else 0


def choose(candidates: list[Candidate], title: str, min_quality: float = 0.5) -> list[Candidate]:
    """The best group of containers of one structure (one table per generation, one list per letter),
    or [] when the evidence is weak. A container needs good structure (quality), no word saying it
    lists something else (page title, its heading, its header) and a word saying it lists characters
    (same places). A page titled "List of ..." may stand in for that word when the structure is
    strong: items linked to distinct articles and pictured."""
    page_cue = cue(title)
    if page_cue < 0:
        return []  # an episode, a chapter, a list of items: not an album's characters
    groups: dict[tuple, list[tuple[int, Candidate]]] = {}
    for c in candidates:
        local = 1 if c.header_cue else cue(c.heading)
        if local < 0 or c.quality < min_quality:
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
