"""The numbers of a version's report, computed from the manifest's tables (only the columns needed, no
crops read): the paper's Fig. 4 statistics, the funnel per album and source kind, the identities and
what changed since the previous version."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from data_manifest.store import Manifest
from pipeline.config import FunnelSettings
from pipeline.identity.labels import latest_labels
from pipeline.identity.published import faces_with_current_prelabels

FACE_COLUMNS = ["face_id", "asset_id", "album_id", "status", "drop_reason", "crop_w", "crop_h", "sharpness"]
FACE_COLUMNS += ["prelabel"]
ASSET_COLUMNS = ["asset_id", "album_id", "kind", "status", "drop_reason"]
HISTOGRAM_BINS = 30
POSE_NOTE = (
    "Head pose (yaw, pitch, roll) is not estimated: the project has no pose model for cartoon faces, "
    "and a guess would mislead."
)


def version_figures(manifest: Manifest, version: int | None = None) -> dict:
    """Every figure of the report of `version` (default: the latest), as JSON-ready values."""
    run = manifest.resolve_version(version)
    version = int(run["manifest_version"])
    thresholds = _thresholds(run)
    faces = faces_with_current_prelabels(manifest, version, columns=FACE_COLUMNS)
    assets = manifest.read("assets", version=version, columns=ASSET_COLUMNS)
    albums = manifest.read("albums", version=version).drop_duplicates("album_id", keep="last")
    labels = latest_labels(manifest.read("labels", version=version))
    identities = manifest.read("identities", version=version)
    per_identity = identity_table(faces, labels, identities)
    return {
        "version": version,
        "run_id": str(run["run_id"]),
        "published_at": str(run["published_at"]),
        "thresholds": thresholds,
        "totals": totals(faces, assets, per_identity),
        "regions": identities_per_region(per_identity, albums),
        "resolution": histogram(np.minimum(faces["crop_w"], faces["crop_h"]), thresholds["min_crop_side"]),
        "sharpness": histogram(faces["sharpness"], thresholds["min_sharpness"], log=True),
        "samples_per_identity": samples_per_identity(per_identity),
        "pose": {"estimated": False, "note": POSE_NOTE},
        "funnel": funnel_by_album_and_kind(faces, assets),
        "identities": per_identity.to_dict("records"),
        "conflicts": conflicts(identities),
        "calibration": json.loads(run["calibration"] or "{}"),
        "changes": changes(manifest, version, per_identity),
    }


def _thresholds(run: pd.Series) -> dict:
    """The quality gate the version's run used (its recorded config), else the defaults."""
    config = json.loads(run["config"] or "{}")
    defaults = FunnelSettings()
    return {
        "min_crop_side": float(config.get("min_crop_side", defaults.min_crop_side)),
        "min_sharpness": float(config.get("min_sharpness", defaults.min_sharpness)),
    }


def totals(faces: pd.DataFrame, assets: pd.DataFrame, per_identity: pd.DataFrame) -> dict:
    return {
        "albums": int(assets["album_id"].nunique()),
        "images": int(assets["asset_id"].nunique()),
        "faces": len(faces),
        "kept": int((faces["status"] == "kept").sum()),
        "identities": len(per_identity),
        "verified_faces": int(per_identity["verified"].sum()) if len(per_identity) else 0,
    }


def identity_table(faces: pd.DataFrame, labels: pd.DataFrame, identities: pd.DataFrame) -> pd.DataFrame:
    """One row per identity known at the version (reference set, labels, pre-labels): faces verified,
    rejected, pre-labelled (kept faces whose pre-label in force names it) and pending (pre-labelled,
    no label in force about it yet)."""
    kept = faces[faces["status"] == "kept"]
    prelabelled = kept[kept["prelabel"].notna()][["face_id", "prelabel"]].rename(columns={"prelabel": "identity"})
    decided = (
        labels[["face_id", "identity", "verdict"]]
        if len(labels)
        else pd.DataFrame(columns=["face_id", "identity", "verdict"])
    )
    pending = prelabelled.merge(decided[["face_id", "identity"]], how="left", indicator=True)
    names = set(identities["identity"]) | set(decided["identity"]) | set(prelabelled["identity"])
    table = pd.DataFrame({"identity": sorted(names)})
    table["album_id"] = table["identity"].str.split("/", n=1).str[0]
    for column, counted in (
        ("verified", decided[decided["verdict"] == "verified"]["identity"]),
        ("rejected", decided[decided["verdict"] == "rejected"]["identity"]),
        ("prelabelled", prelabelled["identity"]),
        ("pending", pending[pending["_merge"] == "left_only"]["identity"]),
    ):
        table[column] = table["identity"].map(counted.value_counts()).fillna(0).astype(int)
    return table


def identities_per_region(per_identity: pd.DataFrame, albums: pd.DataFrame) -> dict[str, int]:
    """The paper's region distribution of identities: each identity counted in its album's region."""
    region = albums.set_index("album_id")["region"].replace("", None) if len(albums) else pd.Series(dtype=object)
    regions = per_identity["album_id"].map(region).fillna("unknown")
    return {str(k): int(v) for k, v in regions.value_counts().sort_index().items()}


def histogram(values: pd.Series, threshold: float, log: bool = False) -> dict:
    """Counts over `HISTOGRAM_BINS` bins (log-spaced with `log`), and how many fall below `threshold`."""
    values = pd.to_numeric(values, errors="coerce").dropna().to_numpy(np.float64)
    result = {"count": int(values.size), "threshold": threshold, "below": int((values < threshold).sum())}
    if values.size == 0:
        return {**result, "edges": [], "counts": []}
    low, high = max(values.min(), 1e-3 if log else values.min()), max(values.max(), threshold)
    edges = np.geomspace(low, high * 1.0001, HISTOGRAM_BINS + 1) if log else np.linspace(low, high, HISTOGRAM_BINS + 1)
    counts, edges = np.histogram(np.clip(values, edges[0], edges[-1]), bins=edges)
    return {**result, "edges": [round(float(e), 3) for e in edges], "counts": counts.tolist()}


def samples_per_identity(per_identity: pd.DataFrame) -> dict:
    """How many identities have n samples: verified faces, and faces pre-labelled (verified or not)."""
    return {
        column: {str(n): int(c) for n, c in per_identity[column].value_counts().sort_index().items()}
        for column in ("verified", "prelabelled")
    }


def funnel_by_album_and_kind(faces: pd.DataFrame, assets: pd.DataFrame) -> list[dict]:
    """Per album and source kind (frame, still, web, reference): images, images dropped, faces, kept,
    and each drop reason (`image.<reason>`, `face.<reason>`)."""
    images = assets.drop_duplicates("asset_id")  # an image found twice (two sources) counts once
    kind = images.set_index("asset_id")["kind"]
    faces = faces.assign(kind=faces["asset_id"].map(kind).fillna("unknown"))
    rows: dict[tuple, dict] = {}
    for (album, source), group in images.groupby(["album_id", "kind"], dropna=False):
        row = rows.setdefault((album, source), _empty_funnel_row(album, source))
        row["images"] = len(group)
        row["images_dropped"] = int((group["status"] == "dropped").sum())
        for reason, n in group["drop_reason"].dropna().value_counts().items():
            row[f"image.{reason}"] = int(n)
    for (album, source), group in faces.groupby(["album_id", "kind"], dropna=False):
        row = rows.setdefault((album, source), _empty_funnel_row(album, source))
        row["faces"] = len(group)
        row["kept"] = int((group["status"] == "kept").sum())
        for reason, n in group["drop_reason"].dropna().value_counts().items():
            row[f"face.{reason}"] = int(n)
    return [rows[key] for key in sorted(rows, key=lambda k: (str(k[0]), str(k[1])))]


def _empty_funnel_row(album, kind) -> dict:
    return {"album_id": str(album), "kind": str(kind), "images": 0, "images_dropped": 0, "faces": 0, "kept": 0}


def conflicts(identities: pd.DataFrame) -> list[dict]:
    """Names whose references look like another name's (the identities table's `conflicts`)."""
    out = []
    for identity, listed in zip(identities["identity"], identities["conflicts"]):
        for other in json.loads(listed or "[]"):
            out.append({"identity": identity, "other": other["identity"], "similarity": other["similarity"]})
    return out


def changes(manifest: Manifest, version: int, per_identity: pd.DataFrame) -> dict:
    """What this version added: rows per table, and identities that the previous version did not have."""
    history = manifest.history().set_index("manifest_version")
    rows_added = json.loads(history.loc[version, "rows_added"] or "{}")
    if version == 0 or version - 1 not in history.index:
        return {"previous_version": None, "rows_added": rows_added, "identities_gained": list(per_identity["identity"])}
    before = manifest.read("identities", version=version - 1)
    before_labels = manifest.read("labels", version=version - 1)
    before_faces = faces_with_current_prelabels(manifest, version - 1, columns=["face_id", "status", "prelabel"])
    known = set(before["identity"]) | set(before_labels["identity"])
    known |= set(before_faces.loc[before_faces["status"] == "kept", "prelabel"].dropna())
    return {
        "previous_version": version - 1,
        "rows_added": rows_added,
        "identities_gained": sorted(set(per_identity["identity"]) - known),
    }
