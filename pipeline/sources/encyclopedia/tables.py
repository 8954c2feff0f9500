"""Tables that list characters: the grid of cells with row and column spans expanded, the column(s)
of names (by header words, else by links to distinct articles) and each name's picture."""

from __future__ import annotations

import re

from bs4 import NavigableString, Tag

from pipeline.sources.encyclopedia.candidate import (
    ACTOR_HEADER,
    CHARACTER_HEADER,
    MIN_ITEMS,
    NAME_HEADER,
    NOT_A_NAME,
    Candidate,
    describe,
    header_words,
)
from pipeline.sources.encyclopedia.images import _display_width, image_url
from pipeline.sources.encyclopedia.mediawiki_markup import _article_link
from pipeline.sources.encyclopedia.page import Character, _text

_MAX_SPAN = 200  # rowspan/colspan beyond this is a broken page, not a table layout


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


def _links(cell: Tag, base: str) -> list[tuple[str, str, str]]:
    """(link text, article title, URL) of each article link in a cell, in order."""
    out = []
    for a in cell.find_all("a"):
        link, text = _article_link(a, base), _text(a)
        if link and text:
            out.append((text, link[0], link[1]))
    return out


def _cell_link(cell: Tag, base: str) -> tuple[str, str, str] | None:
    """The first article link of a cell whose text is not a number."""
    return next((link for link in _links(cell, base) if not link[0].isdigit()), None)


_LATER_NOTE = re.compile(r"\s*\((?:later|formerly|a\.k\.a\.|aka|also)[^)]*\)\s*$", re.I)


def _lines(cell: Tag) -> list[str]:
    """The cell's lines of text (a <br> ends a line), each without a trailing "(later X)" note."""
    lines, line = [], []
    for node in cell.descendants:
        if isinstance(node, Tag) and node.name == "br":
            lines.append("".join(line))
            line = []
        elif isinstance(node, NavigableString) and node.parent.name not in ("style", "script", "sup"):
            line.append(str(node))
    lines.append("".join(line))
    cleaned = (_LATER_NOTE.sub("", " ".join(part.split())).strip() for part in lines)
    return [text for text in cleaned if text and not text.startswith("(")]  # "(renamed X ...)" is a note


def _cell_names(cell: Tag, base: str, several: bool) -> list[tuple[str, tuple | None]]:
    """(name, its article link or None) of a name cell. A cell of a column headed "Character" may
    hold one name per line; otherwise the first line names one character: its link's text, or the
    whole line when it only adds a numeral to the link ("Invisible Kid" + " II")."""
    lines, link = _lines(cell), _cell_link(cell, base)
    if not lines:
        return []
    if several and len(lines) == 1 and re.search(r",| and ", lines[0]):  # "Homer Simpson, Grampa and Bart"
        lines = [x.strip() for x in re.split(r",| and ", lines[0]) if x.strip() and not NOT_A_NAME.search(x)]
    if several:  # "Various", "Additional voices": the header column holds no name there
        lines = [x for x in lines if not NOT_A_NAME.fullmatch(x) and not re.fullmatch(r"(?i)various( \w+)*", x)]
        if not lines:
            return []
    if several and len(lines) > 1 and all(len(x.split()) <= 6 and ":" not in x for x in lines):
        links = {link[0]: link for link in _links(cell, base)}
        return [(x, links.get(x)) for x in lines]
    first = lines[0]
    if link is None:
        return [(first, None)]
    if first.startswith(link[0]) and re.fullmatch(r"( [IVX]+| \d+)?", first[len(link[0]) :]):
        return [(first, link if first == link[0] else None)]
    return [(link[0], link)]


def _row_picture(row: list, col: int, name_cols: set[int], base: str) -> str | None:
    """The picture beside a name: in its own cell, else the nearest cell on either side (a portrait
    or sprite column), never across another name; icons under 16 px are not pictures."""
    for step in (0, -1, 1, -2, 2):
        k = col + step
        between = range(min(col, k) + 1, max(col, k))  # the cells strictly between
        if not 0 <= k < len(row) or row[k] is None or any(j in name_cols for j in between):
            continue
        if step and row[k] is row[col]:
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
    repeats sprite | name | method across one row). A column of actors is never one."""
    words = [header_words(h) for h in header_text]
    for pattern, says_characters in ((CHARACTER_HEADER, True), (NAME_HEADER, False)):
        cued = [c for c, h in enumerate(words) if pattern.match(h)]
        if cued:  # a header spanning two columns ("Character(s)" over two) heads both
            return [c for c in cued if header_text[c] == header_text[cued[0]]], says_characters
    allowed = [c for c in range(len(stats)) if not ACTOR_HEADER.search(words[c])]
    if not allowed:
        return [], False
    best = max(allowed, key=lambda c: (stats[c][0] * stats[c][1], -c))
    same = [
        c
        for c in allowed
        if c == best or (header_text[c] == header_text[best] and stats[c][0] >= 0.5 and stats[c][1] >= 0.5)
    ]
    return same, False


def table_candidate(
    table: Tag, base: str, page_url: str, heading: str, position: int, min_items: int = MIN_ITEMS
) -> Candidate | None:
    """The table's names with their evidence, or None (fewer than `min_items` rows of names, or no
    column of names)."""
    grid = table_grid(table)
    header = next((row for row in grid if _is_header(row)), None)
    data = [r for r, row in enumerate(grid) if not _is_header(row) and any(c is not None for c in row)]
    if len(data) < min_items:
        return None
    width = max(len(grid[r]) for r in data)
    header_text = [
        _text(header[c]) if header and c < len(header) and header[c] is not None else "" for c in range(width)
    ]
    stats = [_column_stats(grid, data, col, base) for col in range(width)]
    columns, header_cue = _name_columns(header_text, stats)
    if not columns:
        return None
    linked, distinct = stats[columns[0]]
    if not header_cue and linked < 0.6:
        return None
    where = f"{describe(table, position)}, column {header_text[columns[0]] or columns[0] + 1!r}"
    characters, seen_cells, pictured = [], set(), 0
    for r in data:
        for col in columns:
            cell = grid[r][col] if col < len(grid[r]) else None
            if cell is None or id(cell) in seen_cells:
                continue
            seen_cells.add(id(cell))
            names = _cell_names(cell, base, header_cue)
            # one picture beside several names is a group: none of them gets it
            picture = _row_picture(grid[r], col, set(columns), base) if len(names) == 1 else None
            for name, link in names:
                if len(name) > 80 or name.isdigit():
                    continue
                pictured += picture is not None
                source, aliases = (link[2], [link[1]] if link[1] != name else []) if link else (page_url, [])
                characters.append(Character(name, picture, source, aliases, found_by=f"table-column @ {where}"))
    if len(characters) < min_items:
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
        header_text[columns[0]],
    )
