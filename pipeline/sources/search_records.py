"""Image-search result records found by their fields, wherever a page embeds them.

Every engine hands its results to the browser as small JSON objects: Baidu in a script variable
(`flip.setData('imgData', ...)` in 2020, others before) or the acjson document, Bing in each tile's `m`
attribute, Google (to ~2019) in `div.rg_meta`, the async endpoints as whole documents. The variable
names and the markup around them change from year to year; the fields of a record change far less.
`embedded_records(text, image_fields)` therefore finds every JSON object that holds one of an engine's
image-URL fields (Baidu objURL, Bing murl, Google ou), wherever it sits; `pipeline.sources.image_search`
reads each one by its fields (full-size image, source page, thumbnail, title, size).
"""

from __future__ import annotations

import html as html_lib
import re

from pipeline.sources.js_literal import js_object_at, loads_lenient

_LOOK_BACK = 4000  # a record's opening brace is this close to its image field
_MAX_RECORD = 20_000  # characters; a record is far smaller


def _lowered(obj: dict) -> dict:
    return {str(k).lower(): v for k, v in obj.items()}


def _record_around(text: str, at: int) -> tuple[int, int, dict] | None:
    """(start, end, object) of the innermost JSON object enclosing offset `at`, read leniently."""
    start = at
    for _ in range(8):  # a few nested openers at most: the record, then whatever holds it
        start = text.rfind("{", max(0, at - _LOOK_BACK), start)
        if start < 0:
            return None
        try:  # records are small: a brace that opens something far longer is not one
            literal = js_object_at(text[start : start + _MAX_RECORD], 0)
        except ValueError:
            continue
        if start + len(literal) <= at:
            continue  # an object that closed before the field: a sibling, not the record
        try:
            value = loads_lenient(literal)
        except ValueError:
            return None
        return (start, start + len(literal), value) if isinstance(value, dict) else None
    return None


def _outermost(spans: list[tuple[int, int, dict]]) -> list[dict]:
    """Records not inside another record (Baidu's replaceUrl holds an ObjURL of its own)."""
    spans.sort(key=lambda s: (s[0], -s[1]))
    out, reach = [], -1
    for _start, end, record in spans:
        if end <= reach:
            continue
        out.append(record)
        reach = end
    return out


def embedded_records(text: str, image_fields: tuple[str, ...]) -> list[dict]:
    """Every JSON object in `text` with one of `image_fields` (any case) and not inside another such
    object, in page order, each once (field names lower-cased). HTML-escaped JSON (attributes) is read
    unescaped."""
    names = "|".join(re.escape(f) for f in image_fields)
    field = re.compile(rf"""(?<![\w$])["']?(?:{names})["']?\s*:""", re.I)  # the whole key: not fromURL for murl
    found: list[dict] = []
    seen: set[str] = set()
    for source in (text, html_lib.unescape(text) if "&quot;" in text else ""):
        spans = [r for r in (_record_around(source, m.start()) for m in field.finditer(source)) if r]
        for record in _outermost(spans):
            lowered = _lowered(record)
            ident = repr(sorted((k, str(v)[:300]) for k, v in lowered.items()))
            if ident not in seen:
                seen.add(ident)
                found.append(lowered)
    return found
