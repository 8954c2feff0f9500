"""What earlier manifest versions hold that the identity stage needs: the standing references, the
pre-labels in force, the verification labels, and the embedder's index of published crops."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pandas as pd

from data_manifest.schema import LABELS
from pipeline.dedup import PublishedIndex
from pipeline.identity.embedding import embed_crops, load
from pipeline.identity.labels import verified_faces
from pipeline.identity.matching import PRELABEL_COLUMNS

REFERENCE_COLUMNS = ["face_id", "asset_id", "crop_sha", "album_id", "character", "crop_w", "crop_h"]
VERIFIED_COLUMNS = ["face_id", "crop_sha", "album_id", "identity"]
CROP_COLUMNS = ["face_id", "crop_sha", "album_id"]


@dataclasses.dataclass
class Published:
    """What earlier manifest versions hold that the identity stage needs."""

    references: (
        pd.DataFrame
    )  # the face of each typical image (REFERENCE_COLUMNS, `typical_faces`): the standing references
    face_ids: set[str]  # faces decided by an earlier version (a rerun meets them again: left as they are)
    prelabels: pd.DataFrame  # face_id, PRELABEL_COLUMNS, embedder: the pre-label in force of every published face
    reference_set: str | None  # fingerprint of the reference set the latest ingest run matched against
    labels: pd.DataFrame  # the `labels` table (verification verdicts)
    crops: pd.DataFrame  # face_id, crop_sha, album_id of every other kept face: what the index must hold
    version: int | None  # the latest version (None: nothing published)
    verified: pd.DataFrame = dataclasses.field(  # kept faces whose label in force is verified: VERIFIED_COLUMNS
        default_factory=lambda: pd.DataFrame(columns=VERIFIED_COLUMNS)
    )

    @classmethod
    def nothing(cls) -> Published:
        return cls(
            pd.DataFrame(columns=REFERENCE_COLUMNS),
            set(),
            pd.DataFrame(columns=["face_id", *PRELABEL_COLUMNS, "embedder"]),
            None,
            LABELS.empty_table().to_pandas(),
            pd.DataFrame(columns=CROP_COLUMNS),
            None,
        )

    @classmethod
    def read(cls, manifest) -> Published:
        """From the latest version of a `data_manifest.Manifest` (one read of `faces` and `assets`)."""
        version = manifest.latest_version()
        if version is None:
            return cls.nothing()
        faces = faces_with_current_prelabels(
            manifest,
            version,
            columns=[
                "face_id",
                "asset_id",
                "crop_sha",
                "album_id",
                "status",
                "crop_w",
                "crop_h",
                "embedder",
                *PRELABEL_COLUMNS,
            ],
        )
        assets = manifest.read("assets", version=version, columns=["asset_id", "kind", "character"])
        refs = assets[assets["kind"] == "reference"].drop_duplicates("asset_id")
        kept = faces[faces["status"] == "kept"]
        references = typical_faces(kept.merge(refs[["asset_id", "character"]], on="asset_id"))
        crops = (
            kept[kept["crop_sha"].notna() & ~kept["face_id"].isin(set(references["face_id"]))]
            .drop_duplicates("face_id")[CROP_COLUMNS]
            .reset_index(drop=True)
        )
        labels = manifest.read("labels", version=version)
        verified = pd.Series(verified_faces(labels), name="identity", dtype=object).rename_axis("face_id").reset_index()
        return cls(
            references[REFERENCE_COLUMNS].reset_index(drop=True),
            set(faces["face_id"]),
            faces[["face_id", *PRELABEL_COLUMNS, "embedder"]],
            latest_calibration(manifest, "reference_set"),
            labels,
            crops,
            version,
            crops.merge(verified, on="face_id")[VERIFIED_COLUMNS],
        )


def typical_faces(faces: pd.DataFrame) -> pd.DataFrame:
    """Of the kept faces on typical images (with `character`), the one per image and character taken
    to show that character: a typical image shows its character, and when it has several faces the
    largest is taken to be them. The others are ordinary candidates."""
    return (
        faces.assign(area=faces["crop_w"] * faces["crop_h"])
        .sort_values(["area", "face_id"], ascending=[False, True])
        .drop_duplicates(["asset_id", "character"])
        .drop_duplicates("face_id")
        .drop(columns="area")
    )


def latest_calibration(manifest, key: str):
    """The value of `key` in the calibration of the latest version that has it (versions made by
    `annotate merge` carry only some keys), else None."""
    for calibration in manifest.history()["calibration"][::-1]:
        value = json.loads(calibration or "{}").get(key)
        if value is not None:
            return value
    return None


def faces_with_current_prelabels(
    manifest, version: int | None = None, columns: list[str] | None = None
) -> pd.DataFrame:
    """The `faces` table at a version with each face's pre-label columns (and `embedder`) replaced
    by its latest `prelabels` row, if any: the pre-labels in force at that version."""
    faces = manifest.read("faces", version=version, columns=columns)
    prelabels = manifest.read("prelabels", version=version)
    if prelabels.empty:
        return faces
    latest = (
        prelabels.assign(_version=prelabels["run_id"].map(manifest.run_versions()))
        .sort_values("_version", kind="stable")
        .drop_duplicates("face_id", keep="last")
        .set_index("face_id")
    )
    faces = faces.copy()
    hit = faces["face_id"].isin(latest.index).to_numpy()
    for column in (*PRELABEL_COLUMNS, "embedder"):
        if column in faces.columns:
            faces[column] = faces[column].astype(object)
            faces.loc[hit, column] = latest.loc[faces.loc[hit, "face_id"], column].to_numpy()
    return faces


def complete_published_index(published: Published, setting: str, data_root: str | Path) -> int:
    """Make the embedder's index of published crops hold every published kept crop (each typical
    image's own face aside: `Published.crops`), so that new crops are checked against the whole dataset
    and old ones can be pre-labelled again. It lacks crops after a switch to another embedder (indexes
    are per model) or after runs made with `embedder=none`; those are embedded now (cached) and added.
    Returns how many."""
    loaded = load(setting)
    if loaded is None or published.version is None:
        return 0
    index = PublishedIndex(data_root, loaded.model_id)
    _, indexed = index.load()
    missing = published.crops[~published.crops["face_id"].isin(set(indexed))]
    vectors = embed_crops(missing["crop_sha"].tolist(), setting, data_root)
    missing = missing[missing["crop_sha"].isin(list(vectors))]
    if missing.empty:
        return 0
    index.commit(np.stack([vectors[s] for s in missing["crop_sha"]]), missing["face_id"].tolist(), published.version)
    return len(missing)
