"""Identity stage of a run: embed kept crops, remove near-duplicates, build the reference set,
pre-label candidates (the paper: duplicates at similarity > 0.95, pre-label at > 0.6), and match
published faces again when what their pre-labels depend on changed.

Thresholds only mean something for one embedding model, so the model id and both thresholds are
written on every row this stage touches and into the run's metadata.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Collection
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.config import IdentitySettings
from pipeline.dedup import PublishedIndex, greedy_dedup
from pipeline.identity.embedding import LoadedEmbedder, album_means, embed_crops, load
from pipeline.identity.matching import PRELABEL_COLUMNS, prelabels_changed, reference_matrix
from pipeline.identity.published import (
    CROP_COLUMNS,
    REFERENCE_COLUMNS,
    VERIFIED_COLUMNS,
    Published,
    complete_published_index,
    typical_faces,
)
from pipeline.identity.quality import histogram, prelabel_quality
from pipeline.identity.rule import MatchRule, reference_set_id
from pipeline.same_picture import CropPictures

# The similarity that proposes near-duplicate candidates while the picture check decides (chosen on the
# hololive and moeimouto crops: benchmarks/dedup_quality.py, models/weights/EMBEDDER.md).
PICTURE_CHECK_CANDIDATES = 0.8


@dataclasses.dataclass(kw_only=True)
class IdentityOutcome:
    faces: pd.DataFrame  # the run's faces with identity columns filled
    identities: list[dict]  # rows of the identities table
    prelabels: list[dict]  # rows of the prelabels table: published faces whose pre-label changed
    calibration: dict  # thresholds, histograms, pre-label quality, for the run's metadata
    new_vectors: np.ndarray  # kept, non-duplicate crops of this run (for the published index)
    new_ids: list[str]
    published_crops_indexed: int = 0  # published crops this model's index lacked, embedded into it first


@dataclasses.dataclass(frozen=True)
class References:
    """What pre-labels are matched against: the faces of typical images (and verified faces) by identity."""

    faces: pd.DataFrame  # VERIFIED_COLUMNS (face_id, crop_sha, album_id, identity), by face_id
    vectors: dict[str, np.ndarray]  # crop sha -> embedding
    views: dict[str, np.ndarray] | None  # crop sha -> its views (`reference_views`), else None
    verified: int  # how many of them people verified

    @property
    def matrix(self) -> np.ndarray:
        return np.stack([self.vectors[s] for s in self.faces["crop_sha"]]) if len(self.faces) else np.zeros((0, 1))


@dataclasses.dataclass(frozen=True)
class Indexed:
    """The embedder's index of published crops, with each face's crop and album (None where unknown)."""

    vectors: np.ndarray
    ids: list[str]
    shas: list
    albums: list


@dataclasses.dataclass(frozen=True)
class Survivors:
    """This run's candidates that are no near-duplicate: their rows in the run's faces, and per face its
    id, embedding, crop and album, in the order the published index will hold them."""

    rows: pd.Index
    ids: list[str]
    matrix: np.ndarray
    shas: list
    albums: list


def run_identity_stage(
    faces: pd.DataFrame,
    assets: pd.DataFrame,
    published: Published,
    *,
    settings: IdentitySettings,
    data_root: str | Path,
    run_id: str,
    random_sample: Collection[str] = (),
) -> IdentityOutcome | None:
    """`faces`/`assets`: this run's staged rows; `published`: what earlier versions hold; `settings`: the
    stage's record (thresholds left None are the embedder's calibrated ones); `random_sample`: the faces
    judged in random order (`pipeline.annotate.merge.random_order_faces`), which pre-label quality
    suggests a setting from. None when the settings name no embedder."""
    embedder = load(settings.embedder)
    if embedder is None:
        return None
    settings = resolved_settings(settings, embedder)
    faces = _with_identity_columns(faces, embedder.model_id)
    kept = faces["status"] == "kept"
    vectors = embed_crops(faces.loc[kept, "crop_sha"].tolist(), settings.embedder, data_root)
    kept &= faces["crop_sha"].isin(list(vectors))
    refs = _references(faces[kept], assets, published, settings, data_root)
    pictures = CropPictures(data_root) if settings.dedup_same_picture else None
    identities = _identities(refs, settings.dedup_threshold, pictures, embedder.model_id, run_id)
    indexed_now = complete_published_index(published, settings.embedder, data_root)
    index = _published_index(published, data_root, embedder.model_id)
    candidates = faces[
        kept & ~faces["face_id"].isin(refs.faces["face_id"]) & ~faces["face_id"].isin(published.face_ids)
    ]
    survivors = _drop_near_duplicates(faces, candidates, vectors, index, settings.dedup_threshold, pictures)
    rule = _match_rule(refs, index, survivors, settings, data_root)
    if len(refs.faces):  # pre-label the survivors with their nearest reference identity
        found = rule.prelabel(survivors.shas, survivors.matrix, survivors.albums)
        for column in PRELABEL_COLUMNS:
            faces.loc[survivors.rows, column] = found[column].to_numpy()
    reference_set = reference_set_id(embedder.model_id, settings, refs.faces, rule.means)
    again = _rematch_published(published, index, refs, rule, reference_set, embedder.model_id, run_id)
    relabels = again.astype(object).where(again.notna(), None).to_dict("records") if again is not None else []
    current = _prelabels_in_force(
        published.prelabels, again, faces.loc[faces.index.isin(survivors.rows), ["face_id", *PRELABEL_COLUMNS]]
    )
    quality = prelabel_quality(
        current, published.labels, settings.prelabel_threshold, settings.prelabel_min_margin, random_sample
    )
    calibration = _calibration(faces, refs, rule, embedder, reference_set, len(relabels), quality)
    return IdentityOutcome(
        faces=faces,
        identities=identities,
        prelabels=relabels,
        calibration=calibration,
        new_vectors=survivors.matrix.astype(np.float32),
        new_ids=survivors.ids,
        published_crops_indexed=indexed_now,
    )


def resolved_settings(settings: IdentitySettings, embedder: LoadedEmbedder) -> IdentitySettings:
    """The record with both thresholds set: as given, else the embedder's calibrated values, else the paper's."""
    dedup, prelabel = embedder.thresholds(settings.dedup_threshold, settings.prelabel_threshold)
    if settings.dedup_threshold is None and settings.dedup_same_picture:
        dedup = PICTURE_CHECK_CANDIDATES
    return dataclasses.replace(settings, dedup_threshold=dedup, prelabel_threshold=prelabel)


def _with_identity_columns(faces: pd.DataFrame, model_id: str) -> pd.DataFrame:
    """The run's faces, one row per face, with the identity columns empty and `embedder` set."""
    # One decision per face: identical bytes met twice in a run (a typical image that is also a
    # still) give the same face rows, which must not be each other's near-duplicate.
    faces = faces.drop_duplicates("face_id").reset_index(drop=True)
    for col, value in (
        ("embedder", model_id),
        ("duplicate_of", None),
        ("duplicate_similarity", np.nan),
        ("prelabel", None),
        ("prelabel_score", np.nan),
        ("runner_up", None),
        ("runner_up_score", np.nan),
        ("prelabel_margin", np.nan),
    ):
        faces[col] = value
    return faces


def _references(
    kept: pd.DataFrame, assets: pd.DataFrame, published: Published, settings: IdentitySettings, data_root: str | Path
) -> References:
    """Kept faces of typical images (this run's and published ones), by character; with
    `verified_references` also the faces people verified as an identity. Faces whose crop cannot be
    embedded are left out."""
    characters = assets.loc[assets["kind"] == "reference", ["asset_id", "character", "album_id"]].drop_duplicates(
        "asset_id"
    )
    ref_faces = kept.merge(characters[["asset_id", "character"]], on="asset_id")
    ref_faces = pd.concat([ref_faces[REFERENCE_COLUMNS], published.references[REFERENCE_COLUMNS]], ignore_index=True)
    ref_faces = typical_faces(ref_faces)
    ref_faces = ref_faces.assign(identity=ref_faces["album_id"] + "/" + ref_faces["character"])[VERIFIED_COLUMNS]
    if settings.verified_references:
        ref_faces = pd.concat([ref_faces, published.verified[VERIFIED_COLUMNS]], ignore_index=True).drop_duplicates(
            "face_id"
        )
    ref_faces = ref_faces.sort_values("face_id").reset_index(drop=True)
    vectors = embed_crops(ref_faces["crop_sha"].tolist(), settings.embedder, data_root)
    ref_faces = ref_faces[ref_faces["crop_sha"].isin(list(vectors))].reset_index(drop=True)
    views = (
        embed_crops(ref_faces["crop_sha"].tolist(), settings.embedder, data_root, views=True)
        if settings.reference_views
        else None
    )
    verified = (
        int(ref_faces["face_id"].isin(set(published.verified["face_id"])).sum()) if settings.verified_references else 0
    )
    return References(ref_faces, vectors, views, verified)


def _published_index(published: Published, data_root: str | Path, model_id: str) -> Indexed:
    """The embedder's index of published crops, with the crop and album of each face in it."""
    vectors, ids = PublishedIndex(data_root, model_id).load()
    # Every indexed face by its id, including those that became references since (a still that is
    # also a typical image): an album's first faces stay its first faces.
    faces = pd.concat(
        [published.crops.reindex(columns=CROP_COLUMNS), published.references.reindex(columns=CROP_COLUMNS)]
    ).drop_duplicates("face_id")
    faces = faces.set_index("face_id").reindex(ids)
    return Indexed(vectors, ids, faces["crop_sha"].tolist(), faces["album_id"].tolist())


def _drop_near_duplicates(
    faces: pd.DataFrame,
    candidates: pd.DataFrame,
    vectors: dict[str, np.ndarray],
    index: Indexed,
    threshold: float,
    pictures: CropPictures | None,
) -> Survivors:
    """Near-duplicates among this run's candidates and against everything published are dropped in
    `faces`, each pointing at the face it duplicates; with `pictures`, only copies of one picture.
    Returns the candidates left."""
    matrix = np.stack([vectors[s] for s in candidates["crop_sha"]]) if len(candidates) else np.zeros((0, 1))
    quality = candidates["sharpness"].to_numpy() * 1e6 + (candidates["crop_w"] * candidates["crop_h"]).to_numpy()
    new_shas, new_assets = candidates["crop_sha"].tolist(), candidates["asset_id"].tolist()
    database_shas = list(index.shas) + new_shas  # greedy_dedup's rows: published first, then this run's

    def copy_of(i: int, j: int) -> bool:
        # Two faces of one image are two faces, however much their enlarged crops overlap.
        published = j < len(index.ids)
        return (published or new_assets[j - len(index.ids)] != new_assets[i]) and pictures.same(
            database_shas[j], new_shas[i]
        )

    result = greedy_dedup(
        matrix,
        candidates["face_id"].tolist(),
        quality,
        threshold,
        index.vectors if len(index.ids) else None,
        index.ids,
        confirm=copy_of if pictures else None,
    )
    dup = candidates.index[~result.kept]
    faces.loc[dup, "status"] = "dropped"
    faces.loc[dup, "drop_reason"] = "near_duplicate"
    faces.loc[dup, "duplicate_of"] = [d for d, k in zip(result.duplicate_of, result.kept) if not k]
    faces.loc[dup, "duplicate_similarity"] = result.similarity[~result.kept]
    rows = candidates.index[result.kept]
    return Survivors(
        rows,
        [i for i, k in zip(candidates["face_id"], result.kept) if k],
        matrix[result.kept] if len(candidates) else matrix,
        candidates.loc[rows, "crop_sha"].tolist(),
        candidates.loc[rows, "album_id"].tolist(),
    )


def _match_rule(
    refs: References, index: Indexed, survivors: Survivors, settings: IdentitySettings, data_root: str | Path
) -> MatchRule:
    """The rows pre-labels are matched against, with each album's mean taken away (`subtract_album_mean`)."""
    means, mean_faces = None, {}
    if settings.subtract_album_mean and len(refs.faces):
        # Publication order: the index's, then this run's survivors in the order the index will hold
        # them. So the first faces of an album, and its mean, do not change until it has twice as many.
        known = [i for i, a in enumerate(index.albums) if isinstance(a, str)]
        means, mean_faces = album_means(
            [index.albums[i] for i in known] + survivors.albums,
            [index.shas[i] for i in known] + survivors.shas,
            [index.vectors[i] for i in known] + list(survivors.matrix),
            settings.embedder,
            data_root,
            settings.candidate_views,
        )
    matrix, identities, albums = reference_matrix(refs.faces, refs.vectors, refs.views, means)
    return MatchRule(matrix, identities, albums, means, mean_faces, settings, data_root)


def _rematch_published(
    published: Published,
    index: Indexed,
    refs: References,
    rule: MatchRule,
    reference_set: str,
    model_id: str,
    run_id: str,
) -> pd.DataFrame | None:
    """Published candidates are matched again when the reference set changed since the last run (a
    character's typical image arrived after its faces did), so none stays unlabelled for ever. Returns
    the prelabels rows of the faces whose pre-label changed; None when they were not matched again."""
    if reference_set == published.reference_set or not len(index.ids) or not len(refs.faces):
        return None
    again = rule.prelabel(index.shas, index.vectors, index.albums)
    again.insert(0, "face_id", index.ids)
    old = (
        published.prelabels.drop_duplicates("face_id")
        .set_index("face_id")
        .reindex(index.ids)[list(PRELABEL_COLUMNS) + ["embedder"]]
        .reset_index()
    )
    changed = prelabels_changed(old, again) | (old["embedder"].fillna("").to_numpy() != model_id)
    # A verified face is a reference now and would match itself; its pre-label stays the one it had
    # before people saw it, so prelabel_vs_verified keeps measuring real pre-labels.
    changed &= ~again["face_id"].isin(set(refs.faces["face_id"])).to_numpy()
    return again[changed].assign(embedder=model_id, reference_set=reference_set, run_id=run_id)


def _prelabels_in_force(current: pd.DataFrame, again: pd.DataFrame | None, this_run: pd.DataFrame) -> pd.DataFrame:
    """The published pre-labels in force (`current`) updated by those matched again and this run's."""
    if again is not None:
        current = pd.concat([current[~current["face_id"].isin(again["face_id"])], again], ignore_index=True)
    return pd.concat([current[~current["face_id"].isin(this_run["face_id"])], this_run], ignore_index=True)


def _calibration(
    faces: pd.DataFrame,
    refs: References,
    rule: MatchRule,
    embedder: LoadedEmbedder,
    reference_set: str,
    prelabels_updated: int,
    quality: dict,
) -> dict:
    """The run's metadata about this stage: thresholds, switches, histograms, pre-label quality."""
    settings = rule.settings
    return {
        "embedder": embedder.model_id,
        "embedder_precision": embedder.precision,  # the precision of this stage's embeddings
        "dedup_threshold": settings.dedup_threshold,
        "dedup_same_picture": bool(settings.dedup_same_picture),
        "prelabel_threshold": settings.prelabel_threshold,
        "prelabel_min_margin": settings.prelabel_min_margin,
        "reference_views": len(rule.matrix) if settings.reference_views else 0,
        "candidate_views": bool(settings.candidate_views),
        "within_album": bool(settings.within_album),
        "album_mean_faces": rule.mean_faces if rule.means is not None else None,
        "reference_set": reference_set,
        "prelabels_updated": prelabels_updated,
        "references": len(refs.faces),
        "verified_references": refs.verified,
        "duplicate_similarity": histogram(faces["duplicate_similarity"]),
        "prelabel_score": histogram(faces["prelabel_score"]),
        "prelabel_vs_verified": quality,
    }


def _identities(
    refs: References, threshold: float, pictures: CropPictures | None, model_id: str, run_id: str
) -> list[dict]:
    """One row per identity; two names whose references are near-duplicates (more alike than the
    duplicate threshold and, with `pictures`, one picture) are reported as a conflict, never merged."""
    ref_faces, ref_matrix = refs.faces, refs.matrix
    shas = ref_faces["crop_sha"].to_numpy()
    rows = []
    names = sorted(set(ref_faces["identity"])) if len(ref_faces) else []
    for name in names:
        mine = ref_faces["identity"] == name
        conflicts = []
        for other in names:
            if other == name:
                continue
            theirs = (ref_faces["identity"] == other).to_numpy()
            sims = ref_matrix[mine.to_numpy()] @ ref_matrix[theirs].T
            similarity = _near_duplicate_pair(sims, threshold, shas[mine.to_numpy()], shas[theirs], pictures)
            if similarity is not None:
                conflicts.append({"identity": other, "similarity": round(similarity, 4)})
        album_id, character = name.split("/", 1)
        rows.append(
            {
                "identity": name,
                "album_id": album_id,
                "character": character,
                "references": int(mine.sum()),
                "reference_faces": json.dumps(ref_faces.loc[mine, "face_id"].tolist()),
                "conflicts": json.dumps(conflicts),
                "embedder": model_id,
                "run_id": run_id,
            }
        )
    return rows


def _near_duplicate_pair(
    sims: np.ndarray, threshold: float, shas_a, shas_b, pictures: CropPictures | None, max_checks: int = 10
) -> float | None:
    """The similarity of the most similar pair above `threshold` that is a near-duplicate (with `pictures`:
    one of the `max_checks` most similar that is one picture), or None."""
    rows, cols = np.nonzero(sims > threshold)
    order = np.argsort(-sims[rows, cols], kind="stable")
    if pictures is None:
        return float(sims[rows[order[0]], cols[order[0]]]) if len(order) else None
    for k in order[:max_checks]:
        if pictures.same(shas_a[rows[k]], shas_b[cols[k]]):
            return float(sims[rows[k], cols[k]])
    return None
