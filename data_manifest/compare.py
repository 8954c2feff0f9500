"""Compare what two data roots publish, table by table: the check that an interrupted and resumed
run (or a refactored pipeline) gives the same dataset as an uninterrupted one.

Columns that name the run or the moment (run ids, fetch and decision times) differ between any two
runs by design and are left out; every other value must match, row for row.
"""

from __future__ import annotations

import argparse
import collections
import sys
from pathlib import Path

import pandas as pd

from data_manifest.schema import TABLES
from data_manifest.store import Manifest

RUN_COLUMNS = ("run_id", "fetched_at", "decided_at")


def comparable(frame: pd.DataFrame, path_map: tuple[str, str] | None = None) -> collections.Counter:
    """A table's rows without run-specific columns, as a multiset of tuples of text (NaN equals NaN).
    `path_map` (old, new) rewrites a leading folder in every value, for two roots ingested from copies
    of one library in different places."""
    columns = sorted(c for c in frame.columns if c not in RUN_COLUMNS)
    rows = frame[columns].astype(object).where(frame[columns].notna(), None)
    if path_map:
        old, new = path_map
        rows = rows.map(lambda v: new + v[len(old) :] if isinstance(v, str) and v.startswith(old) else v)
    rows = rows.astype(str)
    return collections.Counter(map(tuple, rows.itertuples(index=False, name=None)))


def table_differences(
    root_a: str | Path, root_b: str | Path, path_map: tuple[str, str] | None = None
) -> dict[str, int]:
    """Per table, how many rows of one root's latest version the other lacks, both ways (0: equal).
    `path_map` (folder in A, folder in B): see `comparable`."""
    a, b = Manifest(root_a), Manifest(root_b)
    out = {}
    for table in TABLES:
        left, right = comparable(a.read(table), path_map), comparable(b.read(table))
        out[table] = sum(((left - right) + (right - left)).values())
    return out


def main(argv: list[str] | None = None) -> int:
    """`python -m data_manifest.compare ROOT_A ROOT_B`: rows that differ per table; exit 1 if any do."""
    parser = argparse.ArgumentParser(prog="python -m data_manifest.compare", description=main.__doc__)
    parser.add_argument("root_a")
    parser.add_argument("root_b")
    parser.add_argument(
        "--library-paths",
        nargs=2,
        metavar=("IN_A", "IN_B"),
        help="the library folder as A's rows name it and as B's do (libraries copied elsewhere)",
    )
    args = parser.parse_args(argv)
    differences = table_differences(args.root_a, args.root_b, tuple(args.library_paths or ()) or None)
    for table, rows in differences.items():
        print(f"{table:12s} {rows:8d} rows differ")
    return 1 if any(differences.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
