"""Encyclopedia and image-search parsers scored on the real-page corpus (benchmarks/parser_corpus/).

    python benchmarks/bench_parsers.py [--split dev|holdout|all] [--pages ID ...] [--verbose]

Each page is parsed as a crawl would (`parse_page(text, page_url)`, site found from the URL or the
markup; API responses through `parse_api_response`) and scored against its answer key: names (micro
recall and precision), typical images right among the names found, result image URLs of search pages,
pages with more than 10% wrong names, negative pages not refused; and pages/s. Rebuild the page cache
first with `python benchmarks/parser_corpus/corpus.py rebuild`.
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent / "parser_corpus"))

import corpus  # noqa: E402

from pipeline.evaluate.page_keys import score_page, summarise  # noqa: E402
from pipeline.sources.encyclopedia import PageShapeError  # noqa: E402
from pipeline.sources.parse import parse_page  # noqa: E402


def parse_entry(entry: dict, key: dict, text: str) -> tuple[list[dict] | None, str]:
    """(records, why refused); records None when the parser refused the page."""
    url = entry.get("page_url") or ""
    if key.get("section"):
        url = f"{url.split('#')[0]}#{key['section'].replace(' ', '_')}"
    try:
        if entry["kind"] == "api":
            from pipeline.sources.encyclopedia.mediawiki_api import parse_api_response

            return [c.as_record() for c in parse_api_response(json.loads(text), url)], ""
        return parse_page(text, url), ""
    except PageShapeError as exc:
        return None, str(exc)


def group_of(entry: dict) -> str:
    return f"search/{entry['engine']}" if entry["kind"] == "search" else entry["kind"]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--split", choices=("dev", "holdout", "all"), default="dev")
    parser.add_argument("--pages", nargs="*", help="only these page ids")
    parser.add_argument("--cache", type=Path, default=corpus.DEFAULT_CACHE)
    parser.add_argument("--verbose", action="store_true", help="print the wrong and missed names of each page")
    args = parser.parse_args(argv)

    split = corpus.split()
    entries = [
        e
        for e in corpus.manifest()
        if (args.split == "all" or split.get(e["id"]) == args.split) and (not args.pages or e["id"] in args.pages)
    ]
    scores, by_group, seconds, missing = [], collections.defaultdict(list), 0.0, []
    for entry in entries:
        path = corpus.page_file(entry, args.cache)
        if not path.exists():
            missing.append(entry["id"])
            continue
        key = corpus.key(entry["id"])
        text = path.read_bytes().decode("utf-8", errors="replace")
        start = time.perf_counter()
        records, why = parse_entry(entry, key, text)
        seconds += time.perf_counter() - start
        score = score_page(entry["id"], key, records)
        scores.append(score)
        by_group["search" if key["expect"] == "results" else "characters"].append(score)
        by_group[group_of(entry)].append(score)
        status = (
            f"refused ({why[:70]})"
            if records is None
            else f"{score.right}/{score.key_count} right, {score.found} found"
        )
        print(f"{entry['id']:<58} {key['expect']:<15} {status}")
        if args.verbose and (score.wrong_names or score.missed):
            print(f"    wrong: {score.wrong_names[:12]}\n    missed: {score.missed[:12]}")
    if missing:
        print(f"not in the cache (run corpus.py rebuild): {missing}")
    print(f"\nsplit {args.split}: {len(scores)} pages parsed in {seconds:.2f} s = {len(scores) / seconds:.1f} pages/s")
    figures = {}
    for group in sorted(by_group):
        figures[group] = summarise(by_group[group])
        f = figures[group]
        fmt = lambda v: "-" if v is None else f"{v:.3f}"  # noqa: E731
        print(
            f"{group:<22} pages {f['pages']:>3}  refused {f['refused']:>3}  recall {fmt(f['recall'])}  "
            f"precision {fmt(f['precision'])}  images right {fmt(f['image_right'])}  "
            f">10% wrong: {f['pages_over_wrong_limit']}  negatives kept: {f['negatives_not_refused']}"
        )
    print(json.dumps({"split": args.split, "pages_per_s": len(scores) / seconds if seconds else None, **figures}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
