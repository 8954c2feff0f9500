"""Versioned manifests: Delta Lake tables on disk, one manifest version per ingest run.

Layout under `<data_root>/manifest/`:
    albums/ episodes/ assets/ faces/   Delta tables, rows appended by runs (never rewritten)
    runs/                              Delta table, one row per published run: the commit point
    staging/<run_id>/<table>/*.parquet rows a run produced, before publishing
    .publish.lock                      one publisher at a time

Why a runs table: Delta commits are atomic per table, not across tables. A manifest version is a
row of `runs` that pins one Delta version of every table. Readers only follow those pins, so a
run killed while publishing is invisible; the next publisher rolls it forward from its staged
files (the `publishing.json` marker says which tables it had reached), so nothing is lost and
nothing is written twice. Every Delta commit of a run carries the run's metadata and an
idempotent-writer transaction id (app `toonface`, version = manifest version).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
from deltalake import CommitProperties, DeltaTable, Transaction, write_deltalake

from data_manifest.schema import RUNS, TABLES

APP_ID = "toonface"
ALL_TABLES = (*TABLES, "runs")


class ManifestError(Exception):
    pass


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@contextlib.contextmanager
def file_lock(path: Path, blocking: bool = True) -> Iterator[bool]:
    """An flock on `path`; yields False (and holds nothing) when non-blocking and taken."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


class RunStaging:
    """Where one run writes its rows before publishing. Holds a lock while the run is alive, so
    that another process can tell an abandoned staging folder from a live one."""

    def __init__(self, manifest_root: Path, run_id: str):
        self.dir = manifest_root / "staging" / run_id
        self.run_id = run_id

    def write(self, table: str, part: str, rows: list[dict]) -> None:
        """Write one part (e.g. one shard) of a table's rows, atomically."""
        schema = TABLES[table].schema
        folder = self.dir / table
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".{part}.parquet.tmp"
        pq.write_table(pa.Table.from_pylist(rows, schema=schema), tmp)
        os.replace(tmp, folder / f"{part}.parquet")

    def replace(self, table: str, rows: list[dict]) -> None:
        """Replace all parts of a table by one (a run-wide stage rewrote its rows)."""
        old = list((self.dir / table).glob("*.parquet")) if (self.dir / table).exists() else []
        self.write(table, "0-rewritten", rows)
        for f in old:
            if f.name != "0-rewritten.parquet":
                f.unlink()

    def read(self, table: str) -> pa.Table:
        schema = TABLES[table].schema
        files = sorted((self.dir / table).glob("*.parquet")) if (self.dir / table).exists() else []
        if not files:
            return schema.empty_table()
        return pa.concat_tables([pq.read_table(f, schema=schema) for f in files])


class Manifest:
    def __init__(self, data_root: str | Path):
        self.root = Path(data_root) / "manifest"

    # ---- paths and low-level -------------------------------------------------------------
    def table_path(self, table: str) -> Path:
        if table not in ALL_TABLES:
            raise ManifestError(f"unknown table {table!r}; tables: {', '.join(ALL_TABLES)}")
        return self.root / table

    def _delta(self, table: str, version: int | None = None) -> DeltaTable | None:
        path = self.table_path(table)
        if not DeltaTable.is_deltatable(str(path)):
            return None
        return DeltaTable(str(path), version=version)

    def staging(self, run_id: str) -> RunStaging:
        return RunStaging(self.root, run_id)

    # ---- reading -------------------------------------------------------------------------
    def history(self) -> pd.DataFrame:
        """One row per manifest version, oldest first."""
        runs = self._delta("runs")
        if runs is None:
            return pd.DataFrame({f.name: pd.Series(dtype=object) for f in RUNS})
        return _rows(runs, RUNS).to_pandas().sort_values("manifest_version").reset_index(drop=True)

    def run_versions(self) -> dict[str, int]:
        """run_id -> the manifest version that run published."""
        hist = self.history()
        return dict(zip(hist["run_id"], hist["manifest_version"].astype(int)))

    def latest_version(self) -> int | None:
        hist = self.history()
        return None if hist.empty else int(hist["manifest_version"].iloc[-1])

    def resolve_version(self, version: int | None = None, as_of: dt.datetime | str | None = None) -> pd.Series:
        """The runs row of a manifest version: the latest, a given number, or the last one
        published at or before `as_of`."""
        hist = self.history()
        if hist.empty:
            raise ManifestError(f"no manifest published yet under {self.root}")
        if version is not None and as_of is not None:
            raise ManifestError("give a version or a date, not both")
        if version is not None:
            rows = hist[hist["manifest_version"] == version]
            if rows.empty:
                raise ManifestError(f"no manifest version {version}; versions are 0..{len(hist) - 1}")
            return rows.iloc[0]
        if as_of is not None:
            when = pd.Timestamp(as_of)
            when = when.tz_localize("UTC") if when.tzinfo is None else when.tz_convert("UTC")
            rows = hist[hist["published_at"] <= when]
            if rows.empty:
                raise ManifestError(f"no manifest version was published at or before {when}")
            return rows.iloc[-1]
        return hist.iloc[-1]

    def read(
        self,
        table: str,
        version: int | None = None,
        as_of: dt.datetime | str | None = None,
        columns: list[str] | None = None,
    ) -> pd.DataFrame:
        """A table as pandas at a manifest version (default: the latest)."""
        if table == "runs":
            return self.history()
        self.table_path(table)
        run = self.resolve_version(version, as_of)
        delta_version = json.loads(run["table_versions"]).get(table, -1)
        schema = TABLES[table].schema
        if delta_version < 0:
            return schema.empty_table().to_pandas()
        return _rows(DeltaTable(str(self.table_path(table)), version=delta_version), schema, columns).to_pandas()

    def diff(self, table: str, a: int, b: int) -> pd.DataFrame:
        """Rows added, removed or changed between manifest versions a and b (`change` column)."""
        keys = list(TABLES[table].key) if table in TABLES else ["manifest_version"]
        old, new = self.read(table, version=a), self.read(table, version=b)
        merged = old.merge(new, on=keys, how="outer", suffixes=("_a", "_b"), indicator=True)
        values = [c for c in new.columns if c not in keys and c != "run_id"]
        changed = pd.Series(False, index=merged.index)
        both = merged["_merge"] == "both"
        for col in values:
            x, y = merged[f"{col}_a"], merged[f"{col}_b"]
            changed |= both & ~((x == y) | (x.isna() & y.isna())).astype(bool)
        change = pd.Series("unchanged", index=merged.index)
        change[merged["_merge"] == "right_only"] = "added"
        change[merged["_merge"] == "left_only"] = "removed"
        change[changed] = "changed"
        out = pd.DataFrame({k: merged[k] for k in keys})
        out["change"] = change
        for col in values:  # show the newer value, or the removed one
            out[col] = merged[f"{col}_b"].where(merged["_merge"] != "left_only", merged[f"{col}_a"])
        return out[out["change"] != "unchanged"].reset_index(drop=True)

    def existing_keys(self, table: str, columns: tuple[str, ...] | None = None) -> set[tuple]:
        """Keys of all rows ever committed to a table (the latest Delta version, pinned or not)."""
        delta = self._delta(table)
        if delta is None:
            return set()
        cols = list(columns or TABLES[table].key)
        frame = _rows(delta, TABLES[table].schema, cols).to_pylist()
        return {tuple(r[c] for c in cols) for r in frame}

    # ---- publishing ----------------------------------------------------------------------
    def publish(self, staging: RunStaging, run_info: dict[str, Any]) -> int:
        """Append a run's staged rows to every table and record the manifest version. Returns it.

        Safe to call again after a crash, and from several processes at once."""
        with file_lock(self.root / ".publish.lock"):
            self._recover_locked()
            hist = self.history()
            if (hist["run_id"] == staging.run_id).any():
                return int(hist.loc[hist["run_id"] == staging.run_id, "manifest_version"].iloc[0])
            version = len(hist)
            # The marker is what a later publisher rolls forward from, so it must read back as the
            # same run_info: times are written as ISO text and parsed back in _publish_locked.
            marker = {"manifest_version": version, "run_info": _jsonable(run_info)}
            staging.dir.mkdir(parents=True, exist_ok=True)
            tmp = staging.dir / ".publishing.json.tmp"
            with open(tmp, "w") as f:
                f.write(json.dumps(marker))
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, staging.dir / "publishing.json")
            _fault_point("marker")
            self._publish_locked(staging, version, run_info)
        return version

    def recover(self) -> None:
        """Roll forward any publish that a crash interrupted (publish does this too; call it first when
        what to publish depends on what is published)."""
        with file_lock(self.root / ".publish.lock"):
            self._recover_locked()

    def _recover_locked(self) -> None:
        """Roll forward every run whose publishing began but whose runs row is missing."""
        staging_root = self.root / "staging"
        if not staging_root.exists():
            return
        done = set(self.history()["run_id"])
        for folder in sorted(staging_root.iterdir()):
            marker = folder / "publishing.json"
            if not marker.exists():
                continue
            if folder.name in done:
                shutil.rmtree(folder, ignore_errors=True)
                continue
            info = json.loads(marker.read_text())
            self._publish_locked(RunStaging(self.root, folder.name), info["manifest_version"], info["run_info"])
            done.add(folder.name)

    def _publish_locked(self, staging: RunStaging, version: int, run_info: dict[str, Any]) -> None:
        metadata = {
            "toonface.run_id": staging.run_id,
            "toonface.manifest_version": str(version),
            "toonface.flow_run_id": str(run_info.get("flow_run_id") or ""),
            "toonface.git_commit": str(run_info.get("git_commit") or ""),
            "toonface.config_hash": str(run_info.get("config_hash") or ""),
            "toonface.model_ids": json.dumps(run_info.get("model_ids") or {}, sort_keys=True),
            "toonface.counts": json.dumps(run_info.get("counts") or {}, sort_keys=True),
        }
        table_versions: dict[str, int] = {}
        rows_added: dict[str, int] = {}
        for table, spec in TABLES.items():
            path = self.table_path(table)
            delta = self._delta(table)
            done = self._commit_of_run(delta, version, staging.run_id) if delta is not None else None
            if done is not None:
                # This table got this run's commit before a crash; its rows are in already.
                table_versions[table] = done
                rows_added[table] = -1
                continue
            staged = staging.read(table)
            new_rows = _new_rows(staged, spec.key, self.existing_keys(table) if delta is not None else set())
            rows_added[table] = new_rows.num_rows
            if new_rows.num_rows == 0 and delta is not None:
                table_versions[table] = delta.version()
                continue
            write_deltalake(
                str(path),
                new_rows,
                mode="append",
                commit_properties=CommitProperties(
                    custom_metadata=metadata, app_transactions=[Transaction(app_id=APP_ID, version=version)]
                ),
            )
            table_versions[table] = DeltaTable(str(path)).version()
            _fault_point(table)
        row = _runs_row(staging.run_id, version, run_info, metadata, rows_added, table_versions)
        write_deltalake(
            str(self.table_path("runs")),
            pa.Table.from_pylist([row], schema=RUNS),
            mode="append",
            commit_properties=CommitProperties(
                custom_metadata=metadata, app_transactions=[Transaction(app_id=APP_ID, version=version)]
            ),
        )
        _fault_point("runs")
        shutil.rmtree(staging.dir, ignore_errors=True)

    @staticmethod
    def _commit_of_run(delta: DeltaTable, manifest_version: int, run_id: str) -> int | None:
        """The Delta version holding this run's commit of `manifest_version`, if it was made. A commit
        of the same manifest version by another run (one that died and whose staging was deleted by
        hand) does not count: this run's rows must still go in."""
        committed = delta.transaction_version(APP_ID)
        if committed is None or committed < manifest_version:
            return None
        for commit in delta.history():
            if (
                commit.get("toonface.manifest_version") == str(manifest_version)
                and commit.get("toonface.run_id") == run_id
            ):
                return int(commit["version"])
        return None

    def remove_abandoned_staging(self) -> list[str]:
        """Delete staging folders of runs that died before publishing (their shard caches remain,
        so a rerun redoes little). Live runs hold their folder's lock and are left alone."""
        removed = []
        staging_root = self.root / "staging"
        if not staging_root.exists():
            return removed
        for folder in staging_root.iterdir():
            if (folder / "publishing.json").exists():
                continue  # rolled forward by the next publish
            with file_lock(folder / ".active", blocking=False) as free:
                if free:
                    shutil.rmtree(folder, ignore_errors=True)
                    removed.append(folder.name)
        return removed


def _rows(delta: DeltaTable, schema: pa.Schema, columns: list[str] | None = None) -> pa.Table:
    """A Delta version's rows, read from its Parquet files by pyarrow. deltalake's own scanner
    (to_pandas, to_pyarrow_table) leaves a thread that makes a short-lived process abort at exit
    ("terminate called without an active exception", exit 134) about half the time. Our tables are
    append-only and unpartitioned with no deletion vectors, so the version's files are its rows."""
    files = delta.file_uris()
    if not files:
        table = schema.empty_table()
        return table.select(columns) if columns else table
    return ds.dataset(files, schema=schema, format="parquet").to_table(columns=columns)


def _jsonable(value: Any) -> Any:
    """run_info as plain JSON values: datetimes become ISO text (read back by _as_datetime)."""
    return json.loads(json.dumps(value, default=lambda v: v.isoformat() if isinstance(v, dt.datetime) else str(v)))


def _as_datetime(value: Any) -> dt.datetime | None:
    if value is None or isinstance(value, dt.datetime):
        return value
    parsed = dt.datetime.fromisoformat(str(value))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


FAULT_POINTS = ("marker", *TABLES, "runs")


def _fault_point(name: str) -> None:
    """Fault injection for the crash tests: TOONFACE_FAULT_KILL_AFTER_COMMIT=<point> kills this process
    with SIGKILL right after that step of a publish (see FAULT_POINTS)."""
    if os.environ.get("TOONFACE_FAULT_KILL_AFTER_COMMIT") == name:
        os.kill(os.getpid(), 9)


def _runs_row(
    run_id: str, version: int, run_info: dict[str, Any], metadata: dict, rows_added: dict, table_versions: dict
) -> dict:
    """The run's row of the `runs` table: what it was, and what it added to each table."""
    return {
        "manifest_version": version,
        "run_id": run_id,
        "flow_run_id": str(run_info.get("flow_run_id") or ""),
        "started_at": _as_datetime(run_info.get("started_at")) or _now(),
        "published_at": _now(),
        "git_commit": str(run_info.get("git_commit") or ""),
        "config_hash": str(run_info.get("config_hash") or ""),
        "config": json.dumps(run_info.get("config") or {}, sort_keys=True),
        "model_ids": metadata["toonface.model_ids"],
        "counts": metadata["toonface.counts"],
        "rows_added": json.dumps(rows_added, sort_keys=True),
        "table_versions": json.dumps(table_versions, sort_keys=True),
        "calibration": json.dumps(run_info.get("calibration") or {}, sort_keys=True),
        "library": str(run_info.get("library") or ""),
    }


def _new_rows(staged: pa.Table, keys: tuple[str, ...], existing: set[tuple]) -> pa.Table:
    """Staged rows whose key is neither published nor repeated earlier in the staged rows."""
    seen = set(existing)
    keep = []
    for i, row in enumerate(staged.select(list(keys)).to_pylist()):
        key = tuple(row[k] for k in keys)
        if key not in seen:
            seen.add(key)
            keep.append(i)
    return staged.take(pa.array(keep, type=pa.int64())) if len(keep) != staged.num_rows else staged
