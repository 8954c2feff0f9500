"""Compare what two data roots publish, table by table: the check that an interrupted and resumed
run (or a refactored pipeline) gives the same dataset as an uninterrupted one.

Columns that name the run or the moment (run ids, fetch and decision times) differ between any two
runs by design and are left out; every other value must match, row for row.
"""
from __future__ import annotations

import collections
from pathlib import Path

import pandas as pd

from data_manifest.schema import TABLES
from data_manifest.store import Manifest

RUN_COLUMNS = ("run_id", "fetched_at", "decided_at")


def comparable(frame: pd.DataFrame) -> collections.Counter:
    """A table's rows without run-specific columns, as a multiset of tuples of text (NaN equals NaN)."""
    columns = sorted(c for c in frame.columns if c not in RUN_COLUMNS)
    rows = frame[columns].astype(object).where(frame[columns].notna(), None).astype(str)
    return collections.Counter(map(tuple, rows.itertuples(index=False, name=None)))


def table_differences(root_a: str | Path, root_b: str | Path) -> dict[str, int]:
    """Per table, how many rows of one root's latest version the other lacks, both ways (0: equal)."""
    a, b = Manifest(root_a), Manifest(root_b)
    out = {}
    for table in TABLES:
        left, right = comparable(a.read(table)), comparable(b.read(table))
        out[table] = sum(((left - right) + (right - left)).values())
    return out
