"""Write a version's report into a folder: report.html (self-contained), figures.json and the plots and
contact sheets as files."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from data_manifest.store import Manifest
from pipeline.annotate.db import AnnotationDB, db_path
from pipeline.annotate.log import DecisionLog
from pipeline.annotate.stats import compute_stats
from pipeline.dataset_report.figures import version_figures
from pipeline.dataset_report.page import report_page
from pipeline.dataset_report.plots import report_plots
from pipeline.report import contact_sheet
from pipeline.store import ContentStore

CROPS_PER_SHEET = 24


def write_report(data_root: str | Path, version: int | None = None, out: str | Path | None = None) -> Path:
    """The report of `version` (default: the latest) under `out` (default: data/reports/version-N).
    Returns the path of report.html. Files are written aside and renamed, so a reader never sees half."""
    manifest = Manifest(data_root)
    figures = version_figures(manifest, version)
    out = Path(out) if out else Path(data_root) / "reports" / f"version-{figures['version']}"
    out.mkdir(parents=True, exist_ok=True)
    plots = report_plots(figures)
    sheets = album_sheets(manifest, figures["version"], Path(data_root), out / "sheets")
    agreement = annotator_agreement(data_root)
    files = dict(plots)
    files["figures.json"] = json.dumps({**figures, "agreement": agreement}, indent=1, default=str).encode()
    files["report.html"] = report_page(figures, plots, sheets, agreement).encode("utf-8")
    for name, data in files.items():
        _write_whole(out / name, data)
    return out / "report.html"


def album_sheets(manifest: Manifest, version: int, data_root: Path, folder: Path) -> dict[str, bytes]:
    """A contact sheet of up to `CROPS_PER_SHEET` random kept crops per album (seeded by the version, so
    a report made again shows the same crops)."""
    faces = manifest.read("faces", version=version, columns=["album_id", "status", "crop_sha"])
    kept = faces[(faces["status"] == "kept") & faces["crop_sha"].notna()]
    store, rng, sheets = ContentStore(data_root / "store"), np.random.default_rng(version), {}
    for album, shas in kept.groupby("album_id")["crop_sha"]:
        chosen = rng.permutation(shas.to_numpy())[:CROPS_PER_SHEET].tolist()
        path = contact_sheet(chosen, store, folder / f"{album}.jpg")
        if path is not None:
            sheets[str(album)] = path.read_bytes()
    return sheets


def annotator_agreement(data_root: str | Path) -> dict | None:
    """Agreement and kappa per pair of annotators from the decision log, None when there is no log."""
    if not db_path(data_root).is_file():
        return None
    db = AnnotationDB(data_root)
    try:
        return compute_stats(DecisionLog(db.decisions()), db.users())
    finally:
        db.close()


def _write_whole(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
