"""URL lists a user brings (CSV, JSON Lines or plain text) -> SearchResult records, read like a
search page's results."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from pipeline.sources.image_search import SearchResult, _http, _int, _unique


def read_url_list(path) -> list[SearchResult]:
    """URLs a user brings: CSV with a header holding `url` (or `image_url`; optional title,
    source_url, thumb_url, width, height), JSON Lines with `url`/`image_url` keys, or plain text
    with one URL per line (blank lines and '#' comments skipped). A bad row raises ValueError
    naming the file and line."""
    path = Path(path)
    text = path.read_text(encoding="utf-8-sig")
    first = next((line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")), "")
    if not first:
        return []
    if first.startswith("{"):
        rows = _jsonl_rows(path, text)
    elif _http(first.split()[0]) and "," not in first:
        rows = [
            (n, {"url": line.strip()})
            for n, line in enumerate(text.splitlines(), 1)
            if line.strip() and not line.lstrip().startswith("#")
        ]
    else:
        rows = _csv_rows(path, text)
    return _unique([_row_result(path, n, row) for n, row in rows])


def _jsonl_rows(path: Path, text: str):
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}:{n}: not a JSON object: {exc}") from None
        if not isinstance(row, dict):
            raise ValueError(f"{path}:{n}: expected a JSON object, got {type(row).__name__}")
        yield n, row


def _csv_rows(path: Path, text: str):
    reader = csv.DictReader(text.splitlines())
    fields = [(f or "").strip().lower() for f in reader.fieldnames or []]
    if "url" not in fields and "image_url" not in fields:
        raise ValueError(f"{path}:1: CSV header needs a `url` column, got {reader.fieldnames}")
    for row in reader:
        yield reader.line_num, {(k or "").strip().lower(): v for k, v in row.items()}


def _row_result(path: Path, n: int, row: dict) -> SearchResult:
    url = row.get("url") or row.get("image_url")
    if not isinstance(url, str) or not _http(url):
        raise ValueError(f"{path}:{n}: `url` must be an http(s) URL, got {url!r}")

    def opt_int(key):
        value = row.get(key)
        if value in (None, ""):
            return None
        if _int(value) is None:
            raise ValueError(f"{path}:{n}: `{key}` must be a positive integer, got {value!r}")
        return _int(value)

    def opt_str(key):
        value = row.get(key)
        return value.strip() or None if isinstance(value, str) else None

    return SearchResult(
        url.strip(), opt_str("thumb_url"), opt_str("source_url"), opt_str("title"), opt_int("width"), opt_int("height")
    )


__all__ = ["read_url_list"]
