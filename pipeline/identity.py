"""Identity stage of a run: embed kept crops, remove near-duplicates, build the reference set,
pre-label candidates (the paper: duplicates at similarity > 0.95, pre-label at > 0.6).

Thresholds only mean something for one embedding model, so the model id and both thresholds are
written on every row this stage touches and into the run's metadata.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import threading
from collections.abc import Collection
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
        save_npy(self.path(sha), vector)


def save_npy(path: Path, array: np.ndarray) -> None:
    """Write `array` as float32 .npy atomically (a killed run leaves no half-written cache entry)."""
    import io

    buf = io.BytesIO()
    np.save(buf, np.asarray(array, np.float32))
    atomic_write(path, buf.getvalue())


def embed_crops(crop_shas: list[str], setting: str, data_root: str | Path, batch_size: int = 64,
                views: bool = False) -> dict[str, np.ndarray]:
    """L2-normalised embedding per crop sha (from the cache, computing what is missing). With `views`,
    the embeddings of the crop's `models.embedder.reference_views` (V, dim) instead, cached beside the
    plain ones under the model id plus the view set's name."""
    loaded = load(setting)
    if loaded is None or not crop_shas:
        return {}
    model, meta = loaded
    plain_cache = EmbeddingCache(data_root, meta["model_id"])
    if views:
        from models.embedder import REFERENCE_VIEWS_ID

        cache = EmbeddingCache(data_root, f"{meta['model_id']}-{REFERENCE_VIEWS_ID}")
    else:
        cache = plain_cache
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
        if views:  # view 0 is the crop itself: its plain embedding (cached, else made here and cached)
            plain = plain_cache.get_many([s for s, _ in ok])
            todo = [(s, im) for s, im in ok if s not in plain]
            if todo:
                _cache_vectors(plain_cache, plain, todo, model.embed([im for _, im in todo], batch_size=batch_size))
            emb = model.embed_views([im for _, im in ok], batch_size=batch_size, plain=np.stack([plain[s] for s, _ in ok]))
        else:
            emb = model.embed([im for _, im in ok], batch_size=batch_size)
        _cache_vectors(cache, vectors, ok, emb)
    return vectors


def _cache_vectors(cache: EmbeddingCache, found: dict[str, np.ndarray], decoded: list, vectors) -> None:
    """Store each decoded crop's new vector in the cache and in `found` (sha -> vector)."""
    for (sha, _), vec in zip(decoded, vectors):
        cache.put(sha, vec)
        found[sha] = vec


def candidate_rows(crop_shas: list[str], plain: np.ndarray, setting: str, data_root: str | Path,
                   views: bool) -> np.ndarray:
    """What pre-labels match against the references for these crops: their embeddings `plain` (N, dim),
    or with `views` each crop's views (N, V, dim; a crop whose views cannot be made, or with no known
    sha, keeps its one vector as every view)."""
    if not views or not len(crop_shas):
        return plain
    got = embed_crops([s for s in crop_shas if isinstance(s, str)], setting, data_root, views=True)
    n_views = next(iter(got.values())).shape[0] if got else 1
    return np.stack([got[s] if s in got else np.repeat(v[None], n_views, axis=0) for s, v in zip(crop_shas, plain)])


def prelabel_crops(crop_shas: list[str], plain: np.ndarray, setting: str, data_root: str | Path, views: bool,
                   ref_matrix: np.ndarray, ref_identities, threshold: float, min_margin: float,
                   means: list | None = None, chunk: int = 8192, albums: list | None = None,
                   ref_albums=None) -> pd.DataFrame:
    """`nearest_identities` for these crops (their `candidate_rows`), `chunk` crops at a time, so that
    matching every published crop again holds only one chunk's views in memory. `means`: per crop, its
    album's mean to subtract before matching (`subtract_mean`; None: none), as `ref_matrix` had its own.
    `albums` (per crop) and `ref_albums` (per row of `ref_matrix`): a crop is matched only against its
    own album's references (`within_album`); None: against all of them."""
    def rows(i: int) -> np.ndarray:
        got = candidate_rows(crop_shas[i:i + chunk], plain[i:i + chunk], setting, data_root, views)
        return got if means is None else subtract_mean(got, means[i:i + chunk])

    def match(i: int) -> pd.DataFrame:
        if albums is None:
            return nearest_identities(rows(i), ref_matrix, ref_identities, threshold, min_margin)
        return nearest_identities_by_album(rows(i), ref_matrix, ref_identities, threshold, min_margin,
                                           albums[i:i + chunk], ref_albums)

    frames = [match(i) for i in range(0, len(plain), chunk)]
    return pd.concat(frames, ignore_index=True) if frames else nearest_identities(plain, ref_matrix, ref_identities,
                                                                                    threshold, min_margin)


# An album's mean is taken over its first 2^k faces in publication order (16 <= 2^k <= 1024): it stays
# the same from one run to the next until the album has twice as many faces, so published pre-labels
# are matched again (with the new mean) a few times in an album's life, not every night.
ALBUM_MEAN_MIN_FACES = 16
ALBUM_MEAN_MAX_FACES = 1024


def album_mean_faces(n: int) -> int:
    """How many of an album's first faces its mean is taken over: the largest power of two <= n, at
    most ALBUM_MEAN_MAX_FACES; 0 (no mean) under ALBUM_MEAN_MIN_FACES."""
    if n < ALBUM_MEAN_MIN_FACES:
        return 0
    return min(1 << (int(n).bit_length() - 1), ALBUM_MEAN_MAX_FACES)


def subtract_mean(rows: np.ndarray, means: list) -> np.ndarray:
    """`rows` (N, dim) or (N, V, dim) with each row's album mean (`means`: one (dim,) vector or None per
    row) subtracted and normalised again; rows whose mean is None stay as they are.

    Why: the faces of one show share its drawing style, and that common part lifts the similarity of
    any two of its characters. Taking it away leaves what tells them apart (model card: "Album mean")."""
    rows = np.asarray(rows, dtype=np.float32)
    if not len(rows):
        return rows
    has = np.array([m is not None for m in means], bool)
    centre = np.stack([np.zeros(rows.shape[-1], np.float32) if m is None else np.asarray(m, np.float32) for m in means])
    out = rows - (centre[:, None, :] if rows.ndim == 3 else centre)
    out /= np.maximum(np.linalg.norm(out, axis=-1, keepdims=True), 1e-12)
    out[~has] = rows[~has]
    return out


def album_means(albums: list[str], crop_shas: list[str], plain, setting: str, data_root: str | Path,
                views: bool) -> tuple[dict[str, np.ndarray], dict[str, int]]:
    """Each album's mean of the rows its candidates are matched by (`candidate_rows` of the faces' crop
    shas and `plain` embeddings: their views with `views`), over its first `album_mean_faces` faces in the
    order given (publication order, then this run's). Returns (album -> mean, album -> faces it was
    taken over); albums with too few faces have none.

    A mean is cached under the shas it was taken over (`AlbumMeanCache`): on most nights an album's
    first faces are the same, so its mean is one file read instead of reading every one of their views."""
    order: dict[str, list[int]] = {}
    for i, album in enumerate(albums):
        order.setdefault(album, []).append(i)
    loaded = load(setting)
    cache = AlbumMeanCache(data_root, loaded[1]["model_id"], views) if loaded is not None else None
    means, counts = {}, {}
    for album, idx in sorted(order.items()):
        m = album_mean_faces(len(idx))
        if not m:
            continue
        take = idx[:m]
        shas = [crop_shas[i] for i in take]
        mean = cache.get(shas) if cache is not None else None
        if mean is None:
            rows = candidate_rows(shas, np.stack([plain[i] for i in take]), setting, data_root, views)
            mean = rows.reshape(-1, rows.shape[-1]).astype(np.float64).mean(axis=0).astype(np.float32)
            if cache is not None:
                cache.put(shas, mean)
        means[album] = mean
        counts[album] = m
    return means, counts


class AlbumMeanCache:
    """An album mean per (embedder, view set, the crop shas it was taken over), one .npy each.

    The shas and the model id fix every row the mean is taken over (embeddings are cached by them
    too), so a hit is the same mean computed again. Faces without a sha are not cached."""

    def __init__(self, data_root: str | Path, model_id: str, views: bool):
        from models.embedder import REFERENCE_VIEWS_ID

        self.dir = Path(data_root) / "cache" / "album_means" / (f"{model_id}-{REFERENCE_VIEWS_ID}" if views else model_id)

    def path(self, shas: list) -> Path | None:
        if not shas or not all(isinstance(s, str) for s in shas):
            return None
        key = hashlib.sha256("\n".join(shas).encode()).hexdigest()
        return self.dir / f"{key}.npy"

    def get(self, shas: list) -> np.ndarray | None:
        path = self.path(shas)
        try:
            return np.load(path) if path is not None else None
        except (FileNotFoundError, ValueError, OSError):
            return None

    def put(self, shas: list, mean: np.ndarray) -> None:
        path = self.path(shas)
        if path is not None:
            save_npy(path, mean)


def reference_matrix(ref_faces: pd.DataFrame, vectors: dict[str, np.ndarray],
                     views: dict[str, np.ndarray] | None = None,
                     means: dict[str, np.ndarray] | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The rows pre-labels are matched against, the identity of each and the album of its reference
    face: one row per reference face, or with `views` every view of each (a reference face whose views
    are missing keeps its one vector). `means`: album -> mean, subtracted from the rows of each
    reference face of that album (`album_id`)."""
    rows, names, albums = [], [], []
    for sha, identity, album in zip(ref_faces["crop_sha"], ref_faces["identity"], ref_faces["album_id"]):
        block = views[sha] if views is not None and sha in views else vectors[sha][None]
        if means and album in means:
            block = subtract_mean(block, [means[album]] * len(block))
        rows.append(block)
        names += [identity] * len(block)
        albums += [album] * len(block)
    if not rows:
        return np.zeros((0, 1), np.float32), np.zeros(0, object), np.zeros(0, object)
    return np.concatenate(rows).astype(np.float32), np.asarray(names, dtype=object), np.asarray(albums, dtype=object)


PRELABEL_COLUMNS = ("prelabel", "prelabel_score", "runner_up", "runner_up_score", "prelabel_margin")
REFERENCE_COLUMNS = ["face_id", "asset_id", "crop_sha", "album_id", "character", "crop_w", "crop_h"]
VERIFIED_COLUMNS = ["face_id", "crop_sha", "album_id", "identity"]
CROP_COLUMNS = ["face_id", "crop_sha", "album_id"]


@dataclasses.dataclass
class Published:
    """What earlier manifest versions hold that the identity stage needs."""
    references: pd.DataFrame     # the face of each typical image (REFERENCE_COLUMNS, `typical_faces`): the standing references
    face_ids: set[str]           # faces decided by an earlier version (a rerun meets them again: left as they are)
    prelabels: pd.DataFrame      # face_id, PRELABEL_COLUMNS, embedder: the pre-label in force of every published face
    reference_set: str | None    # fingerprint of the reference set the latest ingest run matched against
    labels: pd.DataFrame         # the `labels` table (verification verdicts)
    crops: pd.DataFrame          # face_id, crop_sha, album_id of every other kept face: what the index must hold
    version: int | None          # the latest version (None: nothing published)
    verified: pd.DataFrame = dataclasses.field(  # kept faces whose label in force is verified: VERIFIED_COLUMNS
        default_factory=lambda: pd.DataFrame(columns=VERIFIED_COLUMNS))

    @classmethod
    def nothing(cls) -> "Published":
        from data_manifest.schema import LABELS

        return cls(pd.DataFrame(columns=REFERENCE_COLUMNS), set(),
                   pd.DataFrame(columns=["face_id", *PRELABEL_COLUMNS, "embedder"]), None, LABELS.empty_table().to_pandas(),
                   pd.DataFrame(columns=CROP_COLUMNS), None)

    @classmethod
    def read(cls, manifest) -> "Published":
        """From the latest version of a `data_manifest.Manifest` (one read of `faces` and `assets`)."""
        from pipeline.annotate.catalogue import verified_faces

        version = manifest.latest_version()
        if version is None:
            return cls.nothing()
        faces = faces_with_current_prelabels(manifest, version, columns=[
            "face_id", "asset_id", "crop_sha", "album_id", "status", "crop_w", "crop_h", "embedder", *PRELABEL_COLUMNS])
        assets = manifest.read("assets", version=version, columns=["asset_id", "kind", "character"])
        refs = assets[assets["kind"] == "reference"].drop_duplicates("asset_id")
        kept = faces[faces["status"] == "kept"]
        references = typical_faces(kept.merge(refs[["asset_id", "character"]], on="asset_id"))
        crops = (kept[kept["crop_sha"].notna() & ~kept["face_id"].isin(set(references["face_id"]))]
                 .drop_duplicates("face_id")[CROP_COLUMNS].reset_index(drop=True))
        labels = manifest.read("labels", version=version)
        verified = pd.Series(verified_faces(labels), name="identity", dtype=object).rename_axis("face_id").reset_index()
        return cls(references[REFERENCE_COLUMNS].reset_index(drop=True), set(faces["face_id"]),
                   faces[["face_id", *PRELABEL_COLUMNS, "embedder"]], latest_calibration(manifest, "reference_set"),
                   labels, crops, version, crops.merge(verified, on="face_id")[VERIFIED_COLUMNS])


def typical_faces(faces: pd.DataFrame) -> pd.DataFrame:
    """Of the kept faces on typical images (with `character`), the one per image and character taken
    to show that character: a typical image shows its character, and when it has several faces the
    largest is taken to be them. The others are ordinary candidates."""
    return (faces.assign(area=faces["crop_w"] * faces["crop_h"])
            .sort_values(["area", "face_id"], ascending=[False, True])
            .drop_duplicates(["asset_id", "character"]).drop_duplicates("face_id").drop(columns="area"))


def latest_calibration(manifest, key: str):
    """The value of `key` in the calibration of the latest version that has it (versions made by
    `annotate merge` carry only some keys), else None."""
    for calibration in manifest.history()["calibration"][::-1]:
        value = json.loads(calibration or "{}").get(key)
        if value is not None:
            return value
    return None


def complete_published_index(published: Published, setting: str, data_root: str | Path) -> int:
    """Make the embedder's index of published crops hold every published kept crop (each typical
    image's own face aside: `Published.crops`), so that new crops are checked against the whole dataset and old ones can be pre-labelled
    again. It lacks crops after a switch to another embedder (indexes are per model) or after runs
    made with `embedder=none`; those are embedded now (cached) and added. Returns how many."""
    loaded = load(setting)
    if loaded is None or published.version is None:
        return 0
    index = PublishedIndex(data_root, loaded[1]["model_id"])
    _, indexed = index.load()
    missing = published.crops[~published.crops["face_id"].isin(set(indexed))]
    vectors = embed_crops(missing["crop_sha"].tolist(), setting, data_root)
    missing = missing[missing["crop_sha"].isin(list(vectors))]
    if missing.empty:
        return 0
    index.commit(np.stack([vectors[s] for s in missing["crop_sha"]]), missing["face_id"].tolist(), published.version)
    return len(missing)


def faces_with_current_prelabels(manifest, version: int | None = None, columns: list[str] | None = None) -> pd.DataFrame:
    """The `faces` table at a version with each face's pre-label columns (and `embedder`) replaced
    by its latest `prelabels` row, if any: the pre-labels in force at that version."""
    faces = manifest.read("faces", version=version, columns=columns)
    prelabels = manifest.read("prelabels", version=version)
    if prelabels.empty:
        return faces
    latest = (prelabels.assign(_version=prelabels["run_id"].map(manifest.run_versions())).sort_values("_version", kind="stable")
              .drop_duplicates("face_id", keep="last").set_index("face_id"))
    faces = faces.copy()
    hit = faces["face_id"].isin(latest.index).to_numpy()
    for column in (*PRELABEL_COLUMNS, "embedder"):
        if column in faces.columns:
            faces[column] = faces[column].astype(object)
            faces.loc[hit, column] = latest.loc[faces.loc[hit, "face_id"], column].to_numpy()
    return faces


def reference_set_id(model_id: str, threshold: float, references: pd.DataFrame, min_margin: float = 0.0,
                     views: bool = False, candidate_views: bool = False,
                     means: dict[str, np.ndarray] | None = None, within_album: bool = False) -> str:
    """Fingerprint of what pre-labels depend on besides the crop: model, rule, (face, identity) pairs
    (with `within_album`, (face, identity, album): the album decides who is matched against it), and
    the album means subtracted (`means`; None: the rule subtracts none)."""
    pairs = sorted(zip(references["face_id"], references["identity"])) if len(references) else []
    if within_album and len(references):
        pairs = sorted(zip(references["face_id"], references["identity"], references["album_id"]))
    from models.embedder import REFERENCE_VIEWS_ID

    rule = [model_id, round(float(threshold), 6), round(float(min_margin), 6)] + ([REFERENCE_VIEWS_ID] if views else [])
    rule += [f"candidates-{REFERENCE_VIEWS_ID}"] if candidate_views else []
    rule += ["within-album"] if within_album else []
    if means is not None:  # a new mean (an album that doubled) changes pre-labels: rounded, so float noise does not
        rule += ["album-mean", {a: hashlib.sha256(np.round(m.astype(np.float64), 4).tobytes()).hexdigest()[:12]
                                for a, m in sorted(means.items())}]
    blob = json.dumps([*rule, pairs]).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def nearest_identities(matrix: np.ndarray, ref_matrix: np.ndarray, ref_identities, threshold: float,
                       min_margin: float = 0.0, chunk: int = 65536) -> pd.DataFrame:
    """Per row of `matrix` (normalised embeddings): the nearest identity (its most similar reference)
    as `prelabel` when the similarity is above `threshold` (the paper's rule) and at least
    `min_margin` above the runner-up identity's (0: the paper's rule alone), that similarity, the
    runner-up identity, its similarity and the margin. Columns PRELABEL_COLUMNS, one row per vector.

    `matrix` may also be (N, V, dim), each candidate's views (`candidate_views`): an identity's
    similarity is then the mean over the views of each view's best match among its references."""
    matrix = np.asarray(matrix)
    if matrix.ndim == 2:
        matrix = matrix[:, None, :]
    n = len(matrix)
    out = {"prelabel": np.full(n, None, object), "prelabel_score": np.full(n, np.nan),
           "runner_up": np.full(n, None, object), "runner_up_score": np.full(n, np.nan),
           "prelabel_margin": np.full(n, np.nan)}
    names = np.asarray(ref_identities, dtype=object)
    order = sorted(set(names))
    if n == 0 or not order:
        return _frame(out)
    masks = [names == name for name in order]
    step = max(1, chunk // matrix.shape[1])
    for start in range(0, n, step):  # bounded memory for a large published set
        sims = matrix[start:start + step] @ ref_matrix.T  # (rows, views, references)
        per_identity = np.stack([sims[:, :, m].max(axis=2).mean(axis=1) for m in masks], axis=1)
        top = np.argsort(-per_identity, axis=1, kind="stable")
        rows = np.arange(len(sims))
        best = per_identity[rows, top[:, 0]]
        second = per_identity[rows, top[:, 1]] if len(order) > 1 else np.full(len(sims), -np.inf)
        part = slice(start, start + len(sims))
        out["prelabel_score"][part] = best
        sure = (best > threshold) & (best - second >= min_margin)
        out["prelabel"][part] = [order[i] if ok else None for i, ok in zip(top[:, 0], sure)]
        if len(order) > 1:
            out["runner_up"][part] = [order[i] for i in top[:, 1]]
            out["runner_up_score"][part] = second
            out["prelabel_margin"][part] = best - second
    return _frame(out)


def nearest_identities_by_album(matrix: np.ndarray, ref_matrix: np.ndarray, ref_identities, threshold: float,
                                min_margin: float, albums, ref_albums) -> pd.DataFrame:
    """`nearest_identities` with each row matched only against the references of its own album
    (`albums`: per row of `matrix`; `ref_albums`: per row of `ref_matrix`). An album without references
    leaves its rows unlabelled; a row whose album is not known (None) is matched against all."""
    names, ref_albums = np.asarray(ref_identities, dtype=object), np.asarray(ref_albums, dtype=object)
    matrix = np.asarray(matrix)
    part = np.asarray([a if isinstance(a, str) else None for a in albums], dtype=object)
    if not len(part):
        return nearest_identities(matrix, ref_matrix, names, threshold, min_margin)
    pieces = []
    for album in dict.fromkeys(part):
        here = np.flatnonzero([a == album for a in part])
        theirs = ref_albums == album if album is not None else np.ones(len(ref_albums), bool)
        pieces.append(nearest_identities(matrix[here], ref_matrix[theirs], names[theirs], threshold,
                                         min_margin).set_index(here))
    return pd.concat(pieces).sort_index()


def _frame(columns: dict) -> pd.DataFrame:
    frame = pd.DataFrame(columns)
    for name in ("prelabel", "runner_up"):  # pandas turns None into NaN in object columns; keep None
        frame[name] = frame[name].astype(object).where(frame[name].notna(), None)
    return frame


def _changed(old: pd.DataFrame, new: pd.DataFrame) -> np.ndarray:
    """Rows whose pre-label differs (names, or a score by more than float noise)."""
    changed = np.zeros(len(new), bool)
    for column in ("prelabel", "runner_up"):
        changed |= old[column].fillna("").astype(str).to_numpy() != new[column].fillna("").astype(str).to_numpy()
    for column in ("prelabel_score", "runner_up_score"):
        a, b = old[column].astype(float).to_numpy(), new[column].astype(float).to_numpy()
        changed |= ~(np.isclose(a, b, atol=1e-5) | (np.isnan(a) & np.isnan(b)))
    return changed


TARGET_PRECISION = 0.95     # the precision a suggested setting must reach on the judged faces
MIN_JUDGED = 30             # fewer judged faces say too little to suggest a setting


def prelabel_quality(current: pd.DataFrame, labels: pd.DataFrame, threshold: float, min_margin: float = 0.0,
                     random_sample: Collection[str] = ()) -> dict:
    """The pre-labels in force (`current`: face_id, prelabel, prelabel_score, prelabel_margin) against
    the verification labels in force: precision = right / (right + wrong) over pre-labelled faces with
    a verdict about them, recall = right / faces verified as some identity.

    Also at stricter settings, to choose one: `sweep` crosses the threshold in force, 0.7, 0.8 and 0.9
    with the minimum margin in force, 0.05, 0.1, 0.15 and 0.2 (only stricter ones: a face the setting
    in force left unlabelled has no label to judge), first row the setting in force. `by_album` is the
    setting in force per album (the pre-label's), and `suggested` the setting of the sweep that labels
    the most faces right at precision >= TARGET_PRECISION over at least MIN_JUDGED judged faces of
    `random_sample` (None if none does); it is advice, applied only by `--set prelabel_threshold=...
    prelabel_min_margin=...`. `random_sample` is the judged prefix of the random queue's shuffle
    (`pipeline.annotate.merge.random_order_faces`): judged in score order, the surest pre-labels come
    first and a sample of them over-states the precision of the rest. `sample` is the in-force row
    over that sample alone.

    The labelling page shows pre-labelled faces, so the verified faces are mostly pre-labelled ones:
    recall here is measured on them and reads high; precision is the figure to trust."""
    from pipeline.annotate.catalogue import latest_labels, verified_faces

    in_force = latest_labels(labels)
    truth = verified_faces(labels)
    rejected = set(zip(in_force.loc[in_force["verdict"] == "rejected", "face_id"],
                       in_force.loc[in_force["verdict"] == "rejected", "identity"])) if len(in_force) else set()
    out = {"verified_faces": len(truth), "sweep": [], "by_album": {}, "sample": None, "suggested": None}
    if current.empty or not (truth or rejected):
        return out
    faces = current.drop_duplicates("face_id")
    ids, names = faces["face_id"].to_numpy(), faces["prelabel"].to_numpy()
    scores = faces["prelabel_score"].astype(float).fillna(-1.0).to_numpy()
    margins = (faces["prelabel_margin"].astype(float).fillna(np.inf).to_numpy() if "prelabel_margin" in faces
               else np.full(len(faces), np.inf))   # a face with no runner-up passes every margin
    known = np.array([truth.get(f) for f in ids], dtype=object)
    is_rejected = np.array([(f, n) in rejected for f, n in zip(ids, names)])
    named = np.array([isinstance(n, str) for n in names], dtype=bool)   # unlabelled: None or NaN
    albums = np.array([n.split("/", 1)[0] if isinstance(n, str) else None for n in names], dtype=object)

    def judge(t: float, m: float, only: np.ndarray | None = None) -> dict:
        labelled = named & (scores > t) & (margins >= m - 1e-9)
        if only is not None:
            labelled &= only
        verified = len(truth) if only is None else int((only & (known != None)).sum())  # noqa: E711
        right = labelled & (known == names)
        wrong = labelled & ~right & ((known != None) | is_rejected)  # noqa: E711 (element-wise)
        judged = int(right.sum() + wrong.sum())
        return {"threshold": round(t, 4), "min_margin": round(m, 4), "judged": judged, "right": int(right.sum()),
                "precision": round(right.sum() / judged, 4) if judged else None,
                "recall": round(right.sum() / verified, 4) if verified else None}

    thresholds = [threshold] + [x for x in (0.7, 0.8, 0.9) if x > threshold + 1e-9]
    stricter = [min_margin] + [x for x in (0.05, 0.1, 0.15, 0.2) if x > min_margin + 1e-9]
    out["sweep"] = [judge(t, m) for t in thresholds for m in stricter]
    out.update({k: out["sweep"][0][k] for k in ("judged", "precision", "recall")})
    for album in sorted({a for a in albums if a is not None}):
        row = judge(threshold, min_margin, albums == album)
        if row["judged"]:
            out["by_album"][album] = {k: row[k] for k in ("judged", "right", "precision")}
    sampled = np.isin(ids, list(random_sample))
    sample_sweep = [judge(t, m, sampled) for t in thresholds for m in stricter]
    out["sample"] = sample_sweep[0]     # the setting in force, as the sweep's first row
    good = [r for r in sample_sweep if r["judged"] >= MIN_JUDGED and r["precision"] >= TARGET_PRECISION]
    if good:
        best = max(good, key=lambda r: (r["right"], -r["threshold"], -r["min_margin"]))
        out["suggested"] = {k: best[k] for k in ("threshold", "min_margin", "precision", "judged", "right")}
    return out


@dataclasses.dataclass
class IdentityOutcome:
    faces: pd.DataFrame          # the run's faces with identity columns filled
    identities: list[dict]       # rows of the identities table
    prelabels: list[dict]        # rows of the prelabels table: published faces whose pre-label changed
    calibration: dict            # thresholds, histograms, pre-label quality, for the run's metadata
    new_vectors: np.ndarray      # kept, non-duplicate crops of this run (for the published index)
    new_ids: list[str]
    published_crops_indexed: int = 0  # published crops this model's index lacked, embedded into it first


HIST_BINS = np.round(np.linspace(0.0, 1.0, 21), 2)


def _histogram(values) -> dict:
    values = np.asarray([v for v in values if v == v], dtype=np.float64)
    counts, _ = np.histogram(values, bins=HIST_BINS)
    return {"bins": HIST_BINS.tolist(), "counts": counts.tolist(), "n": int(len(values))}


def run_identity_stage(faces: pd.DataFrame, assets: pd.DataFrame, published: Published, setting: str,
                       data_root: str | Path, dedup_threshold: float, prelabel_threshold: float,
                       run_id: str, prelabel_min_margin: float = 0.0,
                       verified_references: bool = True, reference_views: bool = True,
                       candidate_views: bool = True, subtract_album_mean: bool = True,
                       within_album: bool = True) -> IdentityOutcome | None:
    """`faces`/`assets`: this run's staged rows; `published`: what earlier versions hold.
    `verified_references`: faces people verified join their identity's references.
    `reference_views`: references are matched by their crop and centred crops of it.
    `candidate_views`: candidates are matched by the same views of their crop (the mean over them).
    `subtract_album_mean`: each album's mean (`album_means`) is subtracted from its faces' rows first.
    `within_album`: a face is matched only against the references of its own album."""
    loaded = load(setting)
    if loaded is None:
        return None
    model, meta = loaded
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
    ref_faces = faces[kept].merge(characters[["asset_id", "character"]], on="asset_id")
    ref_faces = pd.concat([ref_faces[REFERENCE_COLUMNS], published.references[REFERENCE_COLUMNS]], ignore_index=True)
    ref_faces = typical_faces(ref_faces)
    ref_faces = ref_faces.assign(identity=ref_faces["album_id"] + "/" + ref_faces["character"])[VERIFIED_COLUMNS]
    if verified_references:  # and faces verified as an identity by people
        ref_faces = pd.concat([ref_faces, published.verified[VERIFIED_COLUMNS]], ignore_index=True).drop_duplicates("face_id")
    ref_faces = ref_faces.sort_values("face_id").reset_index(drop=True)
    ref_vectors = embed_crops(ref_faces["crop_sha"].tolist(), setting, data_root)
    ref_faces = ref_faces[ref_faces["crop_sha"].isin(list(ref_vectors))].reset_index(drop=True)
    ref_matrix = np.stack([ref_vectors[s] for s in ref_faces["crop_sha"]]) if len(ref_faces) else np.zeros((0, 1))
    identities = _identities(ref_faces, ref_matrix, dedup_threshold, model_id, run_id)
    views = embed_crops(ref_faces["crop_sha"].tolist(), setting, data_root, views=True) if reference_views else None

    # Near-duplicates among this run's candidates and against everything published.
    indexed = complete_published_index(published, setting, data_root)
    candidates = faces[kept & ~faces["face_id"].isin(ref_faces["face_id"]) & ~faces["face_id"].isin(published.face_ids)]
    index = PublishedIndex(data_root, model_id)
    published_vectors, published_ids = index.load()
    cand_matrix = np.stack([vectors[s] for s in candidates["crop_sha"]]) if len(candidates) else np.zeros((0, 1))
    quality = candidates["sharpness"].to_numpy() * 1e6 + (candidates["crop_w"] * candidates["crop_h"]).to_numpy()
    result = greedy_dedup(cand_matrix, candidates["face_id"].tolist(), quality, dedup_threshold,
                          published_vectors if len(published_ids) else None, published_ids)
    dup = candidates.index[~result.kept]
    faces.loc[dup, "status"] = "dropped"
    faces.loc[dup, "drop_reason"] = "near_duplicate"
    faces.loc[dup, "duplicate_of"] = [d for d, k in zip(result.duplicate_of, result.kept) if not k]
    faces.loc[dup, "duplicate_similarity"] = result.similarity[~result.kept]

    # Pre-label the surviving candidates with their nearest reference identity.
    survivors = candidates.index[result.kept]
    surv_matrix = cand_matrix[result.kept] if len(candidates) else cand_matrix
    surv_shas = candidates.loc[survivors, "crop_sha"].tolist()
    surv_albums = candidates.loc[survivors, "album_id"].tolist()
    # Every indexed face by its id, including those that became references since (a still that is
    # also a typical image): an album's first faces stay its first faces.
    indexed_faces = pd.concat([published.crops.reindex(columns=CROP_COLUMNS),
                               published.references.reindex(columns=CROP_COLUMNS)]).drop_duplicates("face_id")
    indexed_faces = indexed_faces.set_index("face_id").reindex(published_ids)
    published_albums, published_shas = indexed_faces["album_id"].tolist(), indexed_faces["crop_sha"].tolist()
    means, mean_faces = None, {}
    if subtract_album_mean and len(ref_faces):
        # Publication order: the index's, then this run's survivors in the order the index will hold
        # them. So the first faces of an album, and its mean, do not change until it has twice as many.
        known = [i for i, a in enumerate(published_albums) if isinstance(a, str)]
        means, mean_faces = album_means([published_albums[i] for i in known] + surv_albums,
                                        [published_shas[i] for i in known] + surv_shas,
                                        [published_vectors[i] for i in known] + list(surv_matrix),
                                        setting, data_root, candidate_views)
    match_matrix, match_identities, match_albums = reference_matrix(ref_faces, ref_vectors, views, means)
    if len(ref_faces):
        found = prelabel_crops(surv_shas, surv_matrix, setting, data_root, candidate_views, match_matrix,
                               match_identities, prelabel_threshold, prelabel_min_margin,
                               [means.get(a) for a in surv_albums] if means is not None else None,
                               albums=surv_albums if within_album else None, ref_albums=match_albums)
        for column in PRELABEL_COLUMNS:
            faces.loc[survivors, column] = found[column].to_numpy()

    # Published candidates are matched again when the reference set changed since the last run
    # (a character's typical image arrived after its faces did), so none stays unlabelled for ever.
    reference_set = reference_set_id(model_id, prelabel_threshold, ref_faces, prelabel_min_margin, reference_views,
                                     candidate_views, means, within_album)
    current = published.prelabels
    relabels: list[dict] = []
    if reference_set != published.reference_set and len(published_ids) and len(ref_faces):
        again = prelabel_crops(published_shas, published_vectors, setting, data_root, candidate_views, match_matrix,
                               match_identities, prelabel_threshold, prelabel_min_margin,
                               [means.get(a) for a in published_albums] if means is not None else None,
                               albums=published_albums if within_album else None, ref_albums=match_albums)
        again.insert(0, "face_id", published_ids)
        old = (current.drop_duplicates("face_id").set_index("face_id")
               .reindex(published_ids)[list(PRELABEL_COLUMNS) + ["embedder"]].reset_index())
        changed = _changed(old, again) | (old["embedder"].fillna("").to_numpy() != model_id)
        # A verified face is a reference now and would match itself; its pre-label stays the one it had
        # before people saw it, so prelabel_vs_verified keeps measuring real pre-labels.
        changed &= ~again["face_id"].isin(set(ref_faces["face_id"])).to_numpy()
        again = again[changed].assign(embedder=model_id, reference_set=reference_set, run_id=run_id)
        relabels = again.astype(object).where(again.notna(), None).to_dict("records")
        current = pd.concat([current[~current["face_id"].isin(again["face_id"])], again], ignore_index=True)
    this_run = faces.loc[faces.index.isin(survivors), ["face_id", *PRELABEL_COLUMNS]]
    current = pd.concat([current[~current["face_id"].isin(this_run["face_id"])], this_run], ignore_index=True)

    n_verified = int(ref_faces["face_id"].isin(set(published.verified["face_id"])).sum()) if verified_references else 0
    from pipeline.annotate.merge import random_order_faces  # merge imports this module

    calibration = {
        "embedder": model_id, "embedder_precision": model.precision,  # the precision of this stage's embeddings
        "dedup_threshold": dedup_threshold, "prelabel_threshold": prelabel_threshold,
        "prelabel_min_margin": prelabel_min_margin, "reference_views": len(match_matrix) if reference_views else 0,
        "candidate_views": bool(candidate_views), "within_album": bool(within_album), "album_mean_faces": mean_faces if means is not None else None,
        "reference_set": reference_set, "prelabels_updated": len(relabels),
        "references": len(ref_faces), "verified_references": n_verified,
        "duplicate_similarity": _histogram(faces["duplicate_similarity"]),
        "prelabel_score": _histogram(faces["prelabel_score"]),
        "prelabel_vs_verified": prelabel_quality(current, published.labels, prelabel_threshold, prelabel_min_margin,
                                                 random_order_faces(data_root)),
    }
    keep_ids = [i for i, k in zip(candidates["face_id"], result.kept) if k]
    return IdentityOutcome(faces, identities, relabels, calibration, surv_matrix.astype(np.float32), keep_ids,
                           indexed)


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
