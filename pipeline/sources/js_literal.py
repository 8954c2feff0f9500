"""Lenient reading of JSON that pages embed in JavaScript: a {...}/[...] literal cut out by bracket
matching, JavaScript-only escapes undone; oversized integers and deep nesting read safely."""

from __future__ import annotations

import json
import re

from pipeline.sources.encyclopedia import PageShapeError


def _json_int(digits: str) -> int | None:
    # int() refuses over 4,300 digits; such a number is no size anyway, so it reads as null.
    return int(digits) if len(digits) <= 4300 else None


def _json_object(text: str) -> dict | None:
    """A JSON object, or None for anything else (not JSON, another type, nested too deep)."""
    try:
        value = json.loads(text, parse_int=_json_int)
    except (ValueError, RecursionError):
        return None
    return value if isinstance(value, dict) else None


def js_object_at(text: str, start: int) -> str:
    """The {...} or [...] literal starting at text[start], found by matching brackets outside
    string literals (quotes of either kind, with backslash escapes)."""
    if not 0 <= start < len(text) or text[start] not in "{[":
        raise PageShapeError(f"no {{ or [ literal at offset {start}")
    opener = text[start]
    closer = {"{": "}", "[": "]"}[opener]
    depth, i, quote = 0, start, None
    while i < len(text):
        ch = text[i]
        if quote:
            if ch == "\\":
                i += 1
            elif ch == quote:
                quote = None
        elif ch in "\"'":
            quote = ch
        elif ch in "{[":
            depth += 1
        elif ch in "}]":
            depth -= 1
            if depth == 0:
                if ch != closer:
                    break
                return text[start : i + 1]
        i += 1
    raise PageShapeError(f"unbalanced {opener!r} literal at offset {start}")


def loads_lenient(literal: str):
    """JSON that JavaScript wrote: also accepts \\' and \\xNN escapes and trailing commas."""
    try:
        return json.loads(literal, strict=False, parse_int=_json_int)
    except json.JSONDecodeError:
        pass
    except RecursionError:  # json's C decoder recurses once per nesting level
        raise PageShapeError("embedded data is nested too deeply") from None
    fixed = re.sub(r"\\x([0-9a-fA-F]{2})", r"\\u00\1", literal.replace("\\'", "'"))
    fixed = re.sub(r",\s*([}\]])", r"\1", fixed)
    try:
        return json.loads(fixed, strict=False, parse_int=_json_int)
    except json.JSONDecodeError as exc:
        raise PageShapeError(f"embedded data is not JSON ({exc})") from None
    except RecursionError:
        raise PageShapeError("embedded data is nested too deeply") from None
