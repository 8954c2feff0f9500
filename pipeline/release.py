"""Labelled releases: `toonface release NAME --data-root DIR [--version N] [--out DIR]
[--test-fraction 0.2 --seed 0]`.

A release tags a manifest version (recorded in `<data_root>/manifest/releases.json`, one JSON
object per line, only ever appended to: a tag is never changed or removed and a name is used
once) and exports its verified faces:

    <out>/<NAME>/
        train/<identity-slug>/<face_id>.jpg     crops copied from the content store
        test/<identity-slug>/<face_id>.jpg      split by identity: an identity is wholly in one
        labels.csv                              one row per exported face
        distractors/<face_id>.jpg               unlabelled kept faces: the identification gallery's distractors
        protocol/identification.csv             gallery, probes and distractors (pipeline/release_protocol.py)
        protocol/verification.csv               positive and negative pairs, hard-mined, in 10 folds
        PROTOCOL.md                             the protocols' exact definitions and the mining embedder
        DATASET_CARD.md                         counts, sources, models, thresholds, version
        release.json                            the tag record

A face is exported when its label in force at that version (the latest `labels` row of the
face and identity) is `verified`. The export is written to a temporary folder, renamed into
place, then tagged: a killed release leaves no half-written folder (at worst a complete one
without its tag, to delete before running the release again)."""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import hashlib
import json
import os
import random
import re
import secrets
import shutil
import sys
from pathlib import Path

import pandas as pd

from data_manifest import Manifest, ManifestError
from data_manifest.store import file_lock
from pipeline.annotate.catalogue import read_releases, releases_file
from pipeline.identity.labels import latest_labels, verified_faces
from pipeline.provenance import git_commit
from pipeline.release_card import dataset_card
from pipeline.release_protocol import ProtocolSettings, face_file_name, write_protocols
from pipeline.store import ContentStore

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
# Settings of the ingest run that shaped the released faces and the pre-labels people judged.
THRESHOLDS = (
    "enlarge_rate",
    "detector_size",
    "min_detector_score",
    "min_sharpness",
    "min_crop_side",
    "dedup_threshold",
    "dedup_same_picture",
    "prelabel_threshold",
    "prelabel_min_margin",
    "verified_references",
    "reference_views",
    "candidate_views",
    "subtract_album_mean",
    "within_album",
    "frames_per_second",
    "episodes_per_album",
    "sample_seed",
)
CSV_COLUMNS = (
    "face_id",
    "identity",
    "slug",
    "split",
    "file",
    "crop_sha",
    "album_id",
    "asset_id",
    "source",
    "kind",
    "crop_w",
    "crop_h",
    "annotators",
    "decided_at",
    "decision_id",
    "embedder",
    "detector",
    "detector_model",
)


class ReleaseError(Exception):
    pass


def slugify(identity: str) -> str:
    """ "album/Character Name" -> "album__character-name" (folder-safe, readable)."""
    parts = [re.sub(r"[^a-z0-9]+", "-", p.lower()).strip("-") or "x" for p in identity.split("/", 1)]
    return "__".join(parts)


def _slugs(identities: list[str]) -> dict[str, str]:
    out, used = {}, set()
    for identity in sorted(identities):
        slug = slugify(identity)
        if slug in used:  # two names that slug alike stay apart
            slug = f"{slug}-{hashlib.sha256(identity.encode()).hexdigest()[:8]}"
        used.add(slug)
        out[identity] = slug
    return out


def split_identities(identities: list[str], test_fraction: float, seed: int) -> set[str]:
    """The test identities: a seeded shuffle of the sorted names, the first round(n * fraction)
    of them (at least one and at most n - 1 when there are two or more and the fraction is > 0)."""
    order = sorted(identities)
    random.Random(seed).shuffle(order)
    n_test = round(len(order) * test_fraction)
    if test_fraction > 0 and len(order) >= 2:
        n_test = min(max(n_test, 1), len(order) - 1)
    return set(order[:n_test])


def _settings(manifest: Manifest, version: int) -> tuple[dict, dict]:
    """Thresholds of the latest ingest run up to the version, and every model id used so far."""
    hist = manifest.history()
    hist = hist[hist["manifest_version"] <= version]
    settings, models = {}, {}
    for _, run in hist.iterrows():
        config = json.loads(run["config"] or "{}")
        calibration = json.loads(run["calibration"] or "{}")
        if any(k in config for k in THRESHOLDS):
            settings = {k: config[k] for k in THRESHOLDS if k in config}
            settings.update({k: calibration[k] for k in ("dedup_threshold", "prelabel_threshold") if k in calibration})
        for key, value in json.loads(run["model_ids"] or "{}").items():
            if value:
                models.setdefault(key, [])
                for v in str(value).split(","):
                    if v not in models[key]:
                        models[key].append(v)
    return settings, models


def _check_arguments(name: str, test_fraction: float) -> None:
    if not NAME_RE.match(name or ""):
        raise ReleaseError("a release name is 1-64 letters, digits, '_', '.' or '-', starting with a letter or digit")
    if not 0.0 <= test_fraction < 1.0:
        raise ReleaseError("--test-fraction must be in [0, 1)")


def _check_unused(data_root: Path, name: str, target: Path) -> None:
    """Refuse a name tagged before or a target folder already there (run under the releases lock)."""
    if any(r["name"] == name for r in read_releases(data_root)):
        raise ReleaseError(f"release {name!r} exists already; a release name is used once")
    if target.exists():
        raise ReleaseError(f"{target} exists already")


def _read_tables(manifest: Manifest, version: int) -> tuple[pd.DataFrame, ...]:
    """The labels of a version, and its faces, assets and albums indexed by their ids."""
    labels = manifest.read("labels", version=version)
    faces = manifest.read("faces", version=version).drop_duplicates("face_id").set_index("face_id")
    assets = manifest.read("assets", version=version).drop_duplicates("asset_id").set_index("asset_id")
    albums = manifest.read("albums", version=version).drop_duplicates("album_id").set_index("album_id")
    return labels, faces, assets, albums


def _unlabelled(faces: pd.DataFrame, labels: pd.DataFrame, assets: pd.DataFrame, test: set) -> list[tuple[str, str]]:
    """(face_id, crop_sha) of kept faces with no label, the identification gallery's distractors; not the
    typical images (references) and not faces pre-labelled as a test identity, which may be its own."""
    reference = faces["asset_id"].map(assets["kind"]).eq("reference")
    kept = faces[
        (faces["status"] == "kept")
        & faces["crop_sha"].notna()
        & ~faces.index.isin(labels["face_id"])
        & ~reference
        & ~faces["prelabel"].isin(test)
    ]
    return list(zip(kept.index, kept["crop_sha"]))


def _exportable(verified: dict[str, str], faces: pd.DataFrame, store: ContentStore, version: int) -> dict[str, str]:
    """face_id -> identity of the verified faces whose crop is in the content store; an error if none."""
    chosen = {
        f: i
        for f, i in verified.items()
        if f in faces.index and isinstance(faces.at[f, "crop_sha"], str) and store.has(faces.at[f, "crop_sha"])
    }
    if not chosen:
        raise ReleaseError(
            f"manifest version {version} has no verified faces with crops to export "
            "(verify some with `toonface annotate serve`, then `toonface annotate merge`)"
        )
    return chosen


def _tag_record(
    *,
    name: str,
    run: pd.Series,
    target: Path,
    test_fraction: float,
    seed: int,
    rows: list[dict],
    identities: list,
    test: set,
) -> dict:
    """The release's tag: what was exported from which manifest version, by which code, and how split."""
    return {
        "name": name,
        "manifest_version": int(run["manifest_version"]),
        "run_id": str(run["run_id"]),
        "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "git_commit": git_commit(),
        "path": str(target.resolve()),
        "test_fraction": test_fraction,
        "seed": seed,
        "faces": len(rows),
        "identities": len(identities),
        "train": {"faces": sum(r["split"] == "train" for r in rows), "identities": len(identities) - len(test)},
        "test": {"faces": sum(r["split"] == "test" for r in rows), "identities": len(test)},
    }


def make_release(
    data_root: str | Path,
    name: str,
    version: int | None = None,
    out: str | Path | None = None,
    test_fraction: float = 0.2,
    seed: int = 0,
    protocol: ProtocolSettings | None = None,
) -> dict:
    _check_arguments(name, test_fraction)
    protocol = protocol or ProtocolSettings(seed=seed)
    data_root = Path(data_root)
    manifest = Manifest(data_root)
    run = manifest.resolve_version(version)
    version = int(run["manifest_version"])
    out_root = Path(out) if out else data_root / "releases"
    target = out_root / name
    store = ContentStore(data_root / "store")

    with file_lock(manifest.root / ".releases.lock"):
        _check_unused(data_root, name, target)
        labels, faces, assets, albums = _read_tables(manifest, version)
        current = latest_labels(labels).set_index(["face_id", "identity"]) if len(labels) else None
        chosen = _exportable(verified_faces(labels), faces, store, version)
        identities = sorted(set(chosen.values()))
        test = split_identities(identities, test_fraction, seed)
        slugs = _slugs(identities)

        out_root.mkdir(parents=True, exist_ok=True)
        tmp = out_root / f".{name}.tmp-{secrets.token_hex(4)}"
        try:
            rows = _copy_crops(tmp, chosen, test, slugs, faces, assets, current, store)
            _write_labels_csv(tmp / "labels.csv", rows)
            protocols = write_protocols(tmp, rows, _unlabelled(faces, labels, assets, test), store, data_root, protocol)
            settings, models = _settings(manifest, version)
            record = _tag_record(
                name=name,
                run=run,
                target=target,
                test_fraction=test_fraction,
                seed=seed,
                rows=rows,
                identities=identities,
                test=test,
            )
            (tmp / "DATASET_CARD.md").write_text(
                dataset_card(record, rows, labels, albums, settings, models, CSV_COLUMNS), encoding="utf-8"
            )
            record["protocols"] = protocols
            (tmp / "release.json").write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
            os.replace(tmp, target)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        _append_release(data_root, record)
    return record


def _copy_crops(
    tmp: Path,
    chosen: dict,
    test: set,
    slugs: dict,
    faces: pd.DataFrame,
    assets: pd.DataFrame,
    current: pd.DataFrame,
    store: ContentStore,
) -> list[dict]:
    """Copy each chosen face's crop to <split>/<identity slug>/<face id>.jpg under `tmp`; its labels.csv row."""
    rows = []
    for face_id, identity in sorted(chosen.items(), key=lambda kv: (kv[1], kv[0])):
        face = faces.loc[face_id]
        split = "test" if identity in test else "train"
        rel = Path(split) / slugs[identity] / f"{face_file_name(face_id)}.jpg"
        (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(store.path_for(face["crop_sha"], ".jpg"), tmp / rel)
        asset = assets.loc[face["asset_id"]] if face["asset_id"] in assets.index else None
        label = current.loc[(face_id, identity)]
        rows.append(
            {
                "face_id": face_id,
                "identity": identity,
                "slug": slugs[identity],
                "split": split,
                "file": rel.as_posix(),
                "crop_sha": face["crop_sha"],
                "album_id": face["album_id"],
                "asset_id": face["asset_id"],
                "source": asset["source"] if asset is not None else None,
                "kind": asset["kind"] if asset is not None else None,
                "crop_w": face["crop_w"],
                "crop_h": face["crop_h"],
                "annotators": label["annotators"],
                "decided_at": pd.Timestamp(label["decided_at"]).isoformat(),
                "decision_id": label["decision_id"],
                "embedder": label["embedder"] or face["embedder"],
                "detector": face["detector"],
                "detector_model": face["model_id"],
            }
        )
    return rows


def _write_labels_csv(path: Path, rows: list[dict]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        writer.writerows(
            [{k: ("" if v is None or (isinstance(v, float) and v != v) else v) for k, v in r.items()} for r in rows]
        )


def _append_release(data_root: Path, record: dict) -> None:
    """Append one tag line (O_APPEND, fsynced); earlier lines are never touched."""
    path = releases_file(data_root)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        if os.fstat(fd).st_size and not path.read_bytes().endswith(b"\n"):
            os.write(fd, b"\n")  # a line cut short by a crash stays alone on its line
        os.write(fd, (json.dumps(record, sort_keys=True) + "\n").encode("utf-8"))
        os.fsync(fd)
    finally:
        os.close(fd)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", help="release name (used once), e.g. v1 or 2026-12-verified")
    p.add_argument("--data-root", default="data")
    p.add_argument("--version", type=int, help="manifest version to release (default: the latest)")
    p.add_argument("--out", help="export folder (default: <data-root>/releases)")
    p.add_argument("--test-fraction", type=float, default=0.2, help="share of identities in the test split")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--mining-embedder", default="default", help="embedder that hard-mines the verification pairs (none: random)"
    )
    p.add_argument("--pairs", type=int, default=3000, help="positive pairs at most, and as many negative ones")
    p.add_argument("--distractors", type=int, default=2500, help="unlabelled faces in the gallery at most")


def run(args) -> int:
    try:
        protocol = ProtocolSettings(
            mining_embedder=args.mining_embedder, pairs=args.pairs, distractors=args.distractors, seed=args.seed
        )
        record = make_release(
            args.data_root, args.name, args.version, args.out, args.test_fraction, args.seed, protocol
        )
    except (ReleaseError, ManifestError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(
        f"release {record['name']}: manifest version {record['manifest_version']}, {record['faces']} faces of "
        f"{record['identities']} identities ({record['train']['faces']} train / {record['test']['faces']} test) "
        f"-> {record['path']}"
    )
    return 0
