"""The DATASET_CARD.md of a release (pipeline.release), one builder per section: counts per
identity and split, sources, models, thresholds, verification and the files."""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from urllib.parse import urlsplit

import pandas as pd

from pipeline.identity.labels import latest_labels


def _card_header(record: dict) -> list[str]:
    return [
        f"# Dataset card: {record['name']}",
        "",
        "Cartoon-face identity dataset assembled by toonface (the iCartoonFace pipeline): faces detected in a "
        "media library and web sources, cropped at the enlarged rate, quality-gated, pre-labelled by the "
        "embedder against reference images, and verified by people on the verification page.",
        "",
        "| | |",
        "|---|---|",
        f"| manifest version | {record['manifest_version']} (run `{record['run_id']}`) |",
        f"| created | {record['created_at']} |",
        f"| git commit | `{record['git_commit']}` |",
        f"| faces | {record['faces']} ({record['train']['faces']} train, {record['test']['faces']} test) |",
        f"| identities | {record['identities']} ({record['train']['identities']} train, {record['test']['identities']} test) |",
        f"| split | by identity: seeded shuffle (seed {record['seed']}), test fraction {record['test_fraction']} of identities; "
        "no identity is in both splits |",
    ]


def _card_counts(rows: list[dict]) -> list[str]:
    per = defaultdict(lambda: {"train": 0, "test": 0})
    for r in rows:
        per[r["identity"]][r["split"]] += 1
    slug_of = {r["identity"]: r["slug"] for r in rows}
    lines = ["", "## Counts per identity and split", "", "| identity | folder | train | test |", "|---|---|---:|---:|"]
    for identity in sorted(per):
        lines.append(f"| {identity} | `{slug_of[identity]}` | {per[identity]['train']} | {per[identity]['test']} |")
    return lines


def _card_sources(rows: list[dict], albums: pd.DataFrame) -> list[str]:
    kinds = Counter(r["kind"] or "unknown" for r in rows)
    hosts = Counter(urlsplit(r["source"]).netloc for r in rows if r["source"] and "://" in str(r["source"]))
    per_album = Counter(r["album_id"] for r in rows)
    lines = ["", "## Sources", "", "| album | name | faces |", "|---|---|---:|"]
    for album, n in sorted(per_album.items()):
        name = albums.at[album, "name"] if album in albums.index else ""
        lines.append(f"| {album} | {name} | {n} |")
    lines += ["", "Faces by kind of source image: " + ", ".join(f"{k} {v}" for k, v in sorted(kinds.items())) + "."]
    if hosts:
        lines += ["", "Web hosts: " + ", ".join(f"{h} ({n})" for h, n in sorted(hosts.items())) + "."]
    return lines


def _card_models(rows: list[dict], models: dict) -> list[str]:
    # Missing values come from the manifest as None or NaN: only text names a model.
    detectors = sorted({f"{r['detector']} ({r['detector_model']})" for r in rows if isinstance(r["detector"], str)})
    embedders = sorted({r["embedder"] for r in rows if isinstance(r["embedder"], str) and r["embedder"]})
    lines = [
        "",
        "## Models",
        "",
        f"- detector: {', '.join(detectors) or 'unknown'}",
        f"- embedder (pre-labels shown to annotators): {', '.join(embedders) or 'none'}",
    ]
    for key, values in sorted(models.items()):
        lines.append(f"- models recorded in the manifest history, `{key}`: {', '.join(values)}")
    return lines


def _card_thresholds(settings: dict) -> list[str]:
    lines = ["", "## Thresholds", "", "| setting | value |", "|---|---|"]
    return lines + ([f"| {k} | {v} |" for k, v in settings.items()] or ["| (no ingest run recorded) | |"])


def _card_verification(rows: list[dict], labels: pd.DataFrame) -> list[str]:
    annotators = Counter()
    for r in rows:
        for a in json.loads(r["annotators"] or "[]"):
            annotators[a] += 1
    rejected = int((latest_labels(labels)["verdict"] == "rejected").sum()) if len(labels) else 0
    return [
        "",
        "## Verification",
        "",
        f"Labels in force at this version: {len(rows)} verified faces exported, {rejected} (face, identity) "
        "pairs rejected. A face is exported when the latest label of its face and identity is `verified` "
        "(majority of the annotators' effective decisions).",
        "",
        "Annotators (verified faces exported): "
        + (", ".join(f"{a} ({n})" for a, n in sorted(annotators.items())) or "none")
        + ".",
    ]


def _card_files(csv_columns: tuple[str, ...]) -> list[str]:
    return [
        "",
        "## Files",
        "",
        "`train/<identity>/<face_id>.jpg`, `test/<identity>/<face_id>.jpg`: crops as stored (JPEG). "
        "`labels.csv`: " + ", ".join(csv_columns) + ". `release.json`: this release's tag record.",
        "",
    ]


def dataset_card(
    record: dict,
    rows: list[dict],
    labels: pd.DataFrame,
    albums: pd.DataFrame,
    settings: dict,
    models: dict,
    csv_columns: tuple[str, ...],
) -> str:
    """DATASET_CARD.md: what the release holds, where it came from, and how it was made and checked."""
    sections = (
        _card_header(record),
        _card_counts(rows),
        _card_sources(rows, albums),
        _card_models(rows, models),
        _card_thresholds(settings),
        _card_verification(rows, labels),
        _card_files(csv_columns),
    )
    return "\n".join(line for section in sections for line in section)
