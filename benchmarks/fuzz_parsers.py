"""Fuzzed saved pages through every parser kind: how many give a result list, how many a page-shape
error, and how many anything else (issue 37: that column must be 0).

    .venv/bin/python benchmarks/fuzz_parsers.py [--pages 10000] [--kinds bing baidu google mediawiki baike auto]

Pages come from the Hypothesis strategies in tests/pipeline/sources/parser_pages.py, the fuzz test's
own; generation only (no shrinking), derandomized so that a run is repeatable. `results` counts pages
that gave a list (`rows`: the records in them); `seconds` is the time inside parse_page, `wall` adds
Hypothesis' drawing. The first unexpected exceptions are printed with their pages. Prints a table,
then one JSON line; exits 1 when anything unexpected was raised.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
from pathlib import Path

from hypothesis import HealthCheck, Phase, given, settings

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from pipeline.sources.encyclopedia import PageShapeError  # noqa: E402
from pipeline.sources.parse import parse_page  # noqa: E402
from tests.pipeline.sources.parser_pages import KINDS, pages  # noqa: E402


def fuzz(kind: str, count: int) -> tuple[dict, list[str]]:
    row = {"parser": kind, "pages": 0, "results": 0, "page_shape_errors": 0, "unexpected": 0, "rows": 0, "seconds": 0.0}
    reports: list[str] = []

    @settings(
        max_examples=count,
        deadline=None,
        derandomize=True,
        database=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(pages(kind))
    def one(page):
        text, url = page
        row["pages"] += 1
        start = time.perf_counter()
        try:
            rows = parse_page(text, url, kind)
            json.dumps(rows, ensure_ascii=False).encode("utf-8")  # what `toonface parse --json` prints
        except PageShapeError:
            row["page_shape_errors"] += 1
        except Exception:  # noqa: BLE001 - counted and shown rather than stopping the run
            row["unexpected"] += 1
            if len(reports) < 3:
                reports.append(f"{kind} url={url!r} page={text[:300]!r}\n{traceback.format_exc(limit=-3)}")
        else:
            row["results"] += 1
            row["rows"] += len(rows)
        finally:
            row["seconds"] += time.perf_counter() - start

    wall = time.perf_counter()
    one()
    row["wall"] = round(time.perf_counter() - wall, 1)
    row["seconds"] = round(row["seconds"], 1)
    return row, reports


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pages", type=int, default=10_000, help="fuzzed pages per parser kind (default 10000)")
    ap.add_argument("--kinds", nargs="+", default=list(KINDS), choices=KINDS)
    args = ap.parse_args()

    header = (
        f"{'parser':<10} {'pages':>7} {'results':>8} {'page-shape errors':>18} {'unexpected':>11} "
        f"{'rows':>7} {'seconds':>8} {'wall':>7}"
    )
    print(header)
    print("-" * len(header))
    table = []
    for kind in args.kinds:
        row, reports = fuzz(kind, args.pages)
        table.append(row)
        print(
            f"{kind:<10} {row['pages']:>7} {row['results']:>8} {row['page_shape_errors']:>18} "
            f"{row['unexpected']:>11} {row['rows']:>7} {row['seconds']:>8.1f} {row['wall']:>7.1f}",
            flush=True,
        )
        for report in reports:
            print(report, file=sys.stderr)
    print(json.dumps({"pages_per_kind": args.pages, "table": table}))
    return 1 if any(r["unexpected"] for r in table) else 0


if __name__ == "__main__":
    sys.exit(main())
