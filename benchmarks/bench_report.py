"""Time and peak memory of `toonface report` on a large synthetic version: N face rows (and N/2 images,
50 albums in 5 regions, 2,000 identities, a label on every tenth face), published once into a scratch
data root, then reported in a fresh process (peak RSS only grows within one). No crop exists, so the
contact sheets stay empty: the report reads the tables in columnar form only.

    python benchmarks/bench_report.py [--rows 100000,1000000]

Prints one JSON line per size: seconds to publish the rows (setup, not timed for the report), seconds
for the report, its peak RSS. Figures to read, not to assert on.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

PROJECT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT))

from data_manifest.schema import TABLES  # noqa: E402
from data_manifest.store import Manifest  # noqa: E402


def _table(name: str, columns: dict) -> pa.Table:
    schema = TABLES[name].schema
    n = len(next(iter(columns.values())))
    arrays = [pa.array(columns[f.name], f.type) if f.name in columns else pa.nulls(n, f.type) for f in schema]
    return pa.Table.from_arrays(arrays, schema=schema)


def publish_synthetic(data_root: Path, rows: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    albums = [f"album{i:02d}" for i in range(50)]
    names = [f"{albums[i % 50]}/char{i}" for i in range(2000)]
    images = rows // 2
    staging = Manifest(data_root).staging("synthetic")
    tables = {
        "albums": {"album_id": albums, "name": albums, "region": [["JP", "US", "CN", "KR", "FR"][i % 5] for i in range(50)]},
        "assets": {
            "asset_id": [f"a{i}" for i in range(images)], "source": [f"s{i}" for i in range(images)],
            "kind": rng.choice(["frame", "still", "web", "reference"], images).tolist(),
            "album_id": [albums[i % 50] for i in range(images)], "status": ["ok"] * images,
        },
        "faces": {
            "face_id": [f"f{i}" for i in range(rows)], "asset_id": [f"a{i // 2}" for i in range(rows)],
            "album_id": [albums[(i // 2) % 50] for i in range(rows)],
            "crop_w": rng.integers(40, 600, rows), "crop_h": rng.integers(40, 600, rows),
            "sharpness": rng.lognormal(5, 1, rows), "status": rng.choice(["kept", "dropped"], rows, p=[0.7, 0.3]).tolist(),
            "prelabel": rng.choice(names, rows).tolist(), "crop_sha": [f"{i:064x}" for i in range(rows)],
        },
        "identities": {"identity": names, "album_id": [n.split("/")[0] for n in names], "conflicts": ["[]"] * 2000},
        "labels": {
            "face_id": [f"f{i}" for i in range(0, rows, 10)], "identity": rng.choice(names, rows // 10).tolist(),
            "verdict": ["verified"] * (rows // 10), "decision_id": [f"d{i}" for i in range(rows // 10)],
            "decided_at": [dt.datetime(2026, 12, 1, tzinfo=dt.UTC)] * (rows // 10),
        },
    }  # fmt: skip
    for name, columns in tables.items():
        (staging.dir / name).mkdir(parents=True, exist_ok=True)
        pq.write_table(_table(name, columns), staging.dir / name / "part.parquet")
    Manifest(data_root).publish(staging, {"config_hash": "synthetic", "model_ids": {}, "counts": {}})


def report_once(data_root: str) -> dict:
    """Runs in the child process."""
    from pipeline.dataset_report.build import write_report

    t0 = time.perf_counter()
    write_report(data_root, out=Path(data_root) / "report")
    return {"report_s": round(time.perf_counter() - t0, 2),
            "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", default="100000,1000000")
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(report_once(args.child)))
        return
    for rows in [int(r) for r in args.rows.split(",")]:
        with tempfile.TemporaryDirectory() as scratch:
            t0 = time.perf_counter()
            publish_synthetic(Path(scratch), rows)
            setup = time.perf_counter() - t0
            out = subprocess.run(
                [sys.executable, __file__, "--child", scratch], capture_output=True, text=True, check=True
            )
            print(json.dumps({"face_rows": rows, "publish_s": round(setup, 1), **json.loads(out.stdout)}), flush=True)


if __name__ == "__main__":
    main()
