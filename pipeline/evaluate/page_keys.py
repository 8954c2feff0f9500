"""Parsed pages scored against answer keys written by reading the page (benchmarks/parser_corpus/).

A key says what a page holds: the characters it lists (names, each with its own picture or none),
the full-size image URLs of a search page's results, or that it lists no characters at all
("not_recognised": the parser must refuse it). `score_page` compares one parse with one key;
`summarise` adds pages up into micro figures. Names compare by `name_key` (NFKC, case, spacing,
straight quotes) and may match any spelling the key allows; pictures compare by `image_identity`
(the file behind a thumbnail or a resized variant), so a thumbnail of the right file is right.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit

from pipeline.sources.encyclopedia.page import name_key as crawl_name_key
from pipeline.sources.image_search import decode_baidu_url

_QUOTES = str.maketrans({"\u2018": "'", "\u2019": "'", "\u201c": '"', "\u201d": '"', "\u00a0": " "})
# MediaWiki stores a file under hash folders `a/ab/`; a thumbnail adds `thumb/` and a sized name after it.
_MW_THUMB = re.compile(r"/thumb/(?:([0-9a-f])/\1[0-9a-f]/)?([^/]+)/[^/]*$")
_MW_FILE = re.compile(r"/([0-9a-f])/\1[0-9a-f]/([^/]+)")


def name_key(name: str) -> str:
    """How names compare: as the crawl compares them (NFKC, case, spacing), and curly or surrounding
    quotes do not count either (keys were typed by hand)."""
    return crawl_name_key(name.translate(_QUOTES)).strip(" \"'")


def image_identity(url: str | None) -> str | None:
    """The image file a URL shows, whatever its size variant: MediaWiki `.../thumb/a/ab/F.png/120px-F.png`
    and Fandom `.../a/ab/F.png/revision/latest/scale-to-width-down/120` are both `f.png`;
    `Special:FilePath/F.png` too. Other URLs: host-less path (query kept only when the path is bare)."""
    if not url:
        return None
    try:
        parts = urlsplit(url.strip())
    except ValueError:
        return url
    path = unquote(parts.path)
    for pattern in (_MW_THUMB, _MW_FILE):
        m = pattern.search(path)
        if m:
            return m.group(2).replace(" ", "_").casefold()
    if "Special:FilePath/" in path:
        return path.rsplit("Special:FilePath/", 1)[1].replace(" ", "_").casefold()
    query = f"?{parts.query}" if parts.query and path.count("/") <= 1 else ""
    return (path + query).casefold()


@dataclass
class PageScore:
    page_id: str
    expect: str  # characters | not_recognised | results
    refused: bool  # the parser said "page shape not recognised"
    key_count: int = 0  # names (or result URLs) in the key
    found: int = 0  # distinct names / URLs returned (right + wrong)
    right: int = 0  # returned and in the key
    image_right: int = 0  # of the right names: picture matches the key (both none counts)
    wrong_names: list[str] = field(default_factory=list)
    missed: list[str] = field(default_factory=list)

    @property
    def wrong_fraction(self) -> float:
        return (self.found - self.right) / self.found if self.found else 0.0


def score_page(page_id: str, key: dict, parsed: list[dict] | None) -> PageScore:
    """One page: `parsed` is what parse_page returned, None when it refused the page."""
    expect = key["expect"]
    score = PageScore(page_id, expect, refused=parsed is None)
    parsed = parsed or []
    if expect == "results":
        # Keys copy Baidu's obfuscated URLs as the page has them; the parser returns them decoded.
        wanted = list(dict.fromkeys(image_identity(decode_baidu_url(u)) for u in key.get("results", [])))
        got = list(dict.fromkeys(image_identity(r.get("image_url")) for r in parsed))
        score.key_count, score.found = len(wanted), len(got)
        score.right = len(set(wanted) & set(got))
        score.missed = [u for u in wanted if u not in set(got)][:10]
        return score
    entries = key.get("characters", []) if expect == "characters" else []
    spellings = {}
    for k, entry in enumerate(entries):
        for spelling in [*entry.get("also", []), entry["name"]]:  # a distinguishing spelling first
            spellings.setdefault(name_key(spelling), k)
    matched: dict[int, dict] = {}
    for record in parsed:
        names = [record.get("name", ""), *record.get("aliases", [])]
        ks = [spellings[name_key(n)] for n in names if name_key(n) in spellings]
        if not ks:
            score.wrong_names.append(record.get("name", ""))
            continue
        # namesakes: the first entry of these spellings not matched yet
        matched.setdefault(next((k for k in ks if k not in matched), ks[0]), record)
    # A second record of a name already matched (namesakes apart in the parse, one entry in the key)
    # is neither right nor wrong: found counts distinct matches and wrong names.
    score.key_count, score.right = len(entries), len(matched)
    score.found = score.right + len(score.wrong_names)
    score.image_right = sum(
        image_identity(rec.get("image_url")) == image_identity(entries[k].get("image_url"))
        for k, rec in matched.items()
    )
    score.missed = [e["name"] for k, e in enumerate(entries) if k not in matched]
    return score


def summarise(scores: list[PageScore], max_wrong_fraction: float = 0.10) -> dict:
    """Micro recall and precision over pages of one kind, and the pages that break the rules: a
    page returning more than `max_wrong_fraction` wrong names, a negative page not refused."""
    key_count = sum(s.key_count for s in scores)
    found = sum(s.found for s in scores)
    right = sum(s.right for s in scores)
    return {
        "pages": len(scores),
        "refused": sum(s.refused for s in scores),
        "recall": right / key_count if key_count else None,
        "precision": right / found if found else None,
        "image_right": sum(s.image_right for s in scores) / right
        if right and any(s.expect != "results" for s in scores)
        else None,
        "pages_over_wrong_limit": [s.page_id for s in scores if s.wrong_fraction > max_wrong_fraction],
        "negatives_not_refused": [s.page_id for s in scores if s.expect == "not_recognised" and not s.refused],
    }
