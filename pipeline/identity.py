"""Identity stage of a run: embed kept crops, remove near-duplicates, build the reference set,
pre-label candidates (the paper: duplicates at similarity > 0.95, pre-label at > 0.6).

Thresholds only mean something for one embedding model, so the model id and both thresholds are
written on every row this stage touches and into the run's metadata.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import threading
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from pipeline.dedup import PublishedIndex, greedy_dedup
from pipeline.store import ContentStore, atomic_write

DEFAULT_WEIGHTS = Path(__file__).resolve().parent.parent / "models" / "weights" / "embedder.safetensors"

_models: dict[str, tuple] = {}
_models_lock = threading.Lock()


def embedder_path(setting: str) -> Path | None:
    """`default` -> the shipped weights; `none` -> no identity stage; else a path."""
    if setting == "none":
        return None
    return DEFAULT_WEIGHTS if setting == "default" else Path(setting)


def load(setting: str):
    """(model, meta) loaded once per process; None when the stage is switched off."""
    path = embedder_path(setting)
    if path is None:
        return None
    if setting == "default" and not path.is_file():
        # A checkout without trained weights still ingests; the run's metadata then names no embedder.
        logging.getLogger(__name__).warning("no shipped embedder weights at %s: identity stage skipped", path)
        return None
    if not path.is_file():
        raise FileNotFoundError(f"embedder weights not found: {path} (train them with `toonface train-embedder`, "
                                "or --set embedder=none to skip the identity stage)")
    from models.embedder import load_embedder

    with _models_lock:
        key = str(path.resolve())
        if key not in _models:
            _models[key] = load_embedder(path, "cuda" if _cuda() else "cpu")
        return _models[key]


PAPER_THRESHOLDS = {"dedup_threshold": 0.95, "prelabel_threshold": 0.6}


def thresholds(meta: dict, dedup: float | None, prelabel: float | None) -> tuple[float, float]:
    """The setting when given, else the embedder's calibrated value, else the paper's."""
    def pick(value, key):
        return float(value if value is not None else meta.get(key, PAPER_THRESHOLDS[key]))
    return pick(dedup, "dedup_threshold"), pick(prelabel, "prelabel_threshold")


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


class EmbeddingCache:
    """One .npy per (crop, model): embeddings are computed once, in the shard that made the crop."""

    def __init__(self, data_root: str | Path, model_id: str):
        self.dir = Path(data_root) / "cache" / "embeddings" / model_id

    def path(self, sha: str) -> Path:
        return self.dir / sha[:2] / f"{sha}.npy"

    def get_many(self, shas: list[str]) -> dict[str, np.ndarray]:
        out = {}
        for sha in shas:
            try:
                out[sha] = np.load(self.path(sha))
            except (FileNotFoundError, ValueError, OSError):
                pass
        return out

    def put(self, sha: str, vector: np.ndarray) -> None:
        import io

        buf = io.BytesIO()
        np.save(buf, vector.astype(np.float32))
        atomic_write(self.path(sha), buf.getvalue())


def embed_crops(crop_shas: list[str], setting: str, data_root: str | Path, batch_size: int = 64) -> dict[str, np.ndarray]:
    """L2-normalised embedding per crop sha (from the cache, computing what is missing)."""
    loaded = load(setting)
    if loaded is None or not crop_shas:
        return {}
    model, meta = loaded
    cache = EmbeddingCache(data_root, meta["model_id"])
    unique = list(dict.fromkeys(crop_shas))
    vectors = cache.get_many(unique)
    missing = [s for s in unique if s not in vectors]
    store = ContentStore(Path(data_root) / "store")
    for start in range(0, len(missing), batch_size):
        chunk = missing[start:start + batch_size]
        images = [cv2.imread(str(store.path_for(s, ".jpg"))) for s in chunk]
        ok = [(s, im) for s, im in zip(chunk, images) if im is not None]
        if not ok:
            continue
        emb = model.embed([im for _, im in ok], batch_size=batch_size)
        for (sha, _), vec in zip(ok, emb):
            cache.put(sha, vec)
            vectors[sha] = vec
    return vectors


@dataclasses.dataclass
class IdentityOutcome:
    faces: pd.DataFrame          # the run's faces with identity columns filled
    identities: list[dict]       # rows of the identities table
    calibration: dict            # histograms for the run's metadata
    new_vectors: np.ndarray      # kept, non-duplicate crops of this run (for the published index)
    new_ids: list[str]


HIST_BINS = np.round(np.linspace(0.0, 1.0, 21), 2)


def _histogram(values) -> dict:
    values = np.asarray([v for v in values if v == v], dtype=np.float64)
    counts, _ = np.histogram(values, bins=HIST_BINS)
    return {"bins": HIST_BINS.tolist(), "counts": counts.tolist(), "n": int(len(values))}


def run_identity_stage(faces: pd.DataFrame, assets: pd.DataFrame, published_refs: pd.DataFrame,
                       setting: str, data_root: str | Path, dedup_threshold: float, prelabel_threshold: float,
                       run_id: str, already_published: set[str] = frozenset()) -> IdentityOutcome | None:
    """`faces`/`assets`: this run's staged rows; `published_refs`: published faces of typical images
    (face_id, asset_id, crop_sha, album_id, character, crop_w, crop_h) from earlier versions; `already_published`: face ids
    decided by an earlier version (a rerun meets them again): left as they are."""
    loaded = load(setting)
    if loaded is None:
        return None
    _, meta = loaded
    model_id = meta["model_id"]
    # One decision per face: identical bytes met twice in a run (a typical image that is also a
    # still) give the same face rows, which must not be each other's near-duplicate.
    faces = faces.drop_duplicates("face_id").reset_index(drop=True)
    for col, value in (("embedder", model_id), ("duplicate_of", None), ("duplicate_similarity", np.nan),
                       ("prelabel", None), ("prelabel_score", np.nan), ("runner_up", None),
                       ("runner_up_score", np.nan), ("prelabel_margin", np.nan)):
        faces[col] = value
    kept = faces["status"] == "kept"
    vectors = embed_crops(faces.loc[kept, "crop_sha"].tolist(), setting, data_root)
    kept &= faces["crop_sha"].isin(list(vectors))

    # References: kept faces of typical images (this run's and published ones), by character.
    characters = assets.loc[assets["kind"] == "reference", ["asset_id", "character", "album_id"]].drop_duplicates("asset_id")
    columns = ["face_id", "asset_id", "crop_sha", "album_id", "character", "crop_w", "crop_h"]
    ref_faces = faces[kept].merge(characters[["asset_id", "character"]], on="asset_id")
    ref_faces = pd.concat([ref_faces[columns], published_refs[columns]], ignore_index=True)
    # A typical image shows its character; when it has several faces, the largest is taken to be them.
    ref_faces = (ref_faces.assign(area=ref_faces["crop_w"] * ref_faces["crop_h"])
                 .sort_values(["area", "face_id"], ascending=[False, True])
                 .drop_duplicates(["asset_id", "character"]).drop_duplicates("face_id")
                 .sort_values("face_id").reset_index(drop=True))
    ref_vectors = embed_crops(ref_faces["crop_sha"].tolist(), setting, data_root)
    ref_faces = ref_faces[ref_faces["crop_sha"].isin(list(ref_vectors))].reset_index(drop=True)
    ref_faces["identity"] = ref_faces["album_id"] + "/" + ref_faces["character"]
    ref_matrix = np.stack([ref_vectors[s] for s in ref_faces["crop_sha"]]) if len(ref_faces) else np.zeros((0, 1))
    identities = _identities(ref_faces, ref_matrix, dedup_threshold, model_id, run_id)

    # Near-duplicates among this run's candidates and against everything published.
    candidates = faces[kept & ~faces["face_id"].isin(ref_faces["face_id"]) & ~faces["face_id"].isin(already_published)]
    index = PublishedIndex(data_root, model_id)
    published, published_ids = index.load()
    cand_matrix = np.stack([vectors[s] for s in candidates["crop_sha"]]) if len(candidates) else np.zeros((0, 1))
    quality = candidates["sharpness"].to_numpy() * 1e6 + (candidates["crop_w"] * candidates["crop_h"]).to_numpy()
    result = greedy_dedup(cand_matrix, candidates["face_id"].tolist(), quality, dedup_threshold,
                          published if len(published_ids) else None, published_ids)
    dup = candidates.index[~result.kept]
    faces.loc[dup, "status"] = "dropped"
    faces.loc[dup, "drop_reason"] = "near_duplicate"
    faces.loc[dup, "duplicate_of"] = [d for d, k in zip(result.duplicate_of, result.kept) if not k]
    faces.loc[dup, "duplicate_similarity"] = result.similarity[~result.kept]

    # Pre-label the surviving candidates with their nearest reference identity.
    survivors = candidates.index[result.kept]
    surv_matrix = cand_matrix[result.kept] if len(candidates) else cand_matrix
    if len(ref_faces) and len(survivors):
        sims = surv_matrix @ ref_matrix.T
        names = ref_faces["identity"].to_numpy()
        order = sorted(set(names))
        per_identity = np.stack([sims[:, names == n].max(axis=1) for n in order], axis=1)
        top = np.argsort(-per_identity, axis=1)
        best = per_identity[np.arange(len(survivors)), top[:, 0]]
        faces.loc[survivors, "prelabel_score"] = best
        labelled = best > prelabel_threshold
        faces.loc[survivors[labelled], "prelabel"] = [order[i] for i in top[labelled, 0]]
        if len(order) > 1:
            second = per_identity[np.arange(len(survivors)), top[:, 1]]
            faces.loc[survivors, "runner_up"] = [order[i] for i in top[:, 1]]
            faces.loc[survivors, "runner_up_score"] = second
            faces.loc[survivors, "prelabel_margin"] = best - second
    calibration = {
        "embedder": model_id, "dedup_threshold": dedup_threshold, "prelabel_threshold": prelabel_threshold,
        "duplicate_similarity": _histogram(faces["duplicate_similarity"]),
        "prelabel_score": _histogram(faces["prelabel_score"]),
    }
    keep_ids = [i for i, k in zip(candidates["face_id"], result.kept) if k]
    return IdentityOutcome(faces, identities, calibration, surv_matrix.astype(np.float32), keep_ids)


def _identities(ref_faces: pd.DataFrame, ref_matrix: np.ndarray, threshold: float, model_id: str,
                run_id: str) -> list[dict]:
    """One row per identity; two names whose references are more alike than the duplicate
    threshold are reported as a conflict, never merged."""
    rows = []
    names = sorted(set(ref_faces["identity"])) if len(ref_faces) else []
    for name in names:
        mine = ref_faces["identity"] == name
        conflicts = []
        for other in names:
            if other == name:
                continue
            sims = ref_matrix[mine.to_numpy()] @ ref_matrix[(ref_faces["identity"] == other).to_numpy()].T
            if sims.size and sims.max() > threshold:
                conflicts.append({"identity": other, "similarity": round(float(sims.max()), 4)})
        album_id, character = name.split("/", 1)
        rows.append({"identity": name, "album_id": album_id, "character": character,
                     "references": int(mine.sum()), "reference_faces": json.dumps(ref_faces.loc[mine, "face_id"].tolist()),
                     "conflicts": json.dumps(conflicts), "embedder": model_id, "run_id": run_id})
    return rows
