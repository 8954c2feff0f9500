"""The embedder of the identity stage: the shipped weights, the model loaded once per process, the
thresholds that go with it, and the embeddings of crops (plain, or by their views) and album means,
each computed once and kept in the project's content-keyed file cache.

Thresholds only mean something for one embedding model, so everything here is keyed by its model id.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import threading
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np

from pipeline.identity.matching import album_mean_faces
from pipeline.store import NPY, ContentStore, FileCache

if TYPE_CHECKING:
    from models.embedder import Embedder

DEFAULT_WEIGHTS = Path(__file__).resolve().parents[2] / "models" / "weights" / "embedder.safetensors"
PAPER_THRESHOLDS = {"dedup_threshold": 0.95, "prelabel_threshold": 0.6}


@dataclasses.dataclass(frozen=True)
class LoadedEmbedder:
    """An embedder loaded from its weights: the network and its metadata (`models.embedder.read_meta`
    plus `weights_sha256` and `model_id`; the calibrated thresholds when training wrote them)."""

    model: Embedder
    meta: dict

    @property
    def model_id(self) -> str:
        return self.meta["model_id"]

    @property
    def precision(self) -> str:
        """The precision its embeddings are computed in (models/precision.py)."""
        return self.model.precision

    def thresholds(self, dedup: float | None, prelabel: float | None) -> tuple[float, float]:
        """(dedup, prelabel): each setting when given, else this embedder's calibrated value, else the paper's."""

        def pick(value, key):
            return float(value if value is not None else self.meta.get(key, PAPER_THRESHOLDS[key]))

        return pick(dedup, "dedup_threshold"), pick(prelabel, "prelabel_threshold")


_models: dict[str, LoadedEmbedder] = {}
_models_lock = threading.Lock()


def embedder_path(setting: str) -> Path | None:
    """`default` -> the shipped weights; `none` -> no identity stage; else a path."""
    if setting == "none":
        return None
    return DEFAULT_WEIGHTS if setting == "default" else Path(setting)


def load(setting: str) -> LoadedEmbedder | None:
    """The embedder of a setting, loaded once per process; None when the stage is switched off."""
    path = embedder_path(setting)
    if path is None:
        return None
    if setting == "default" and not path.is_file():
        # A checkout without trained weights still ingests; the run's metadata then names no embedder.
        logging.getLogger(__name__).warning("no shipped embedder weights at %s: identity stage skipped", path)
        return None
    if not path.is_file():
        raise FileNotFoundError(
            f"embedder weights not found: {path} (train them with `toonface train-embedder`, "
            "or --set embedder=none to skip the identity stage)"
        )
    with _models_lock:
        key = str(path.resolve())
        if key not in _models:
            _models[key] = LoadedEmbedder(*_load_weights(path))
        return _models[key]


def _load_weights(path: Path) -> tuple:
    # Lazy: torch and the model code take seconds to import, which commands that never embed should not pay.
    import torch

    from models.embedder import load_embedder

    return load_embedder(path, "cuda" if torch.cuda.is_available() else "cpu")


def views_id() -> str:
    """The name of the view set (`models.embedder.REFERENCE_VIEWS_ID`): it names the caches of views."""
    # Lazy: models.embedder imports torch (start-up cost); whoever asks for views has loaded a model.
    from models.embedder import REFERENCE_VIEWS_ID

    return REFERENCE_VIEWS_ID


def embedding_cache(data_root: str | Path, model_id: str, views: bool = False) -> FileCache:
    """One .npy per (crop sha, model): `cache/embeddings/<model_id>[-<views id>]/<sha[:2]>/<sha>.npy`.
    Embeddings are computed once, in the shard that made the crop."""
    name = f"{model_id}-{views_id()}" if views else model_id
    return FileCache(Path(data_root) / "cache" / "embeddings" / name, NPY, fanout=True)


def album_mean_cache(data_root: str | Path, model_id: str, views: bool) -> FileCache:
    """An album mean per (embedder, view set, the crop shas it was taken over), keyed by `album_mean_key`:
    `cache/album_means/<model_id>[-<views id>]/<key>.npy`."""
    name = f"{model_id}-{views_id()}" if views else model_id
    return FileCache(Path(data_root) / "cache" / "album_means" / name, NPY, fanout=False)


def album_mean_key(shas: list) -> str | None:
    """The cache key of a mean taken over these crops: the shas and the model id fix every row it is
    taken over (embeddings are cached by them too), so a hit is the same mean computed again. Faces
    without a sha are not cached (None)."""
    if not shas or not all(isinstance(s, str) for s in shas):
        return None
    return hashlib.sha256("\n".join(shas).encode()).hexdigest()


def _cached(cache: FileCache, keys: list[str]) -> dict[str, np.ndarray]:
    found = {}
    for key in keys:
        value = cache.get(key)
        if value is not None:
            found[key] = value
    return found


def embed_crops(
    crop_shas: list[str], setting: str, data_root: str | Path, batch_size: int = 64, views: bool = False
) -> dict[str, np.ndarray]:
    """L2-normalised embedding per crop sha (from the cache, computing what is missing). With `views`,
    the embeddings of the crop's `models.embedder.reference_views` (V, dim) instead, cached beside the
    plain ones under the model id plus the view set's name."""
    loaded = load(setting)
    if loaded is None or not crop_shas:
        return {}
    plain_cache = embedding_cache(data_root, loaded.model_id)
    cache = embedding_cache(data_root, loaded.model_id, views=True) if views else plain_cache
    unique = list(dict.fromkeys(crop_shas))
    vectors = _cached(cache, unique)
    missing = [s for s in unique if s not in vectors]
    store = ContentStore(Path(data_root) / "store")
    for start in range(0, len(missing), batch_size):
        chunk = missing[start : start + batch_size]
        images = [cv2.imread(str(store.path_for(s, ".jpg"))) for s in chunk]
        ok = [(s, im) for s, im in zip(chunk, images) if im is not None]
        if not ok:
            continue
        if views:
            emb = _embed_views(loaded.model, plain_cache, ok, batch_size)
        else:
            emb = loaded.model.embed([im for _, im in ok], batch_size=batch_size)
        _cache_vectors(cache, vectors, ok, emb)
    return vectors


def _embed_views(model: Embedder, plain_cache: FileCache, decoded: list, batch_size: int) -> np.ndarray:
    """The views of decoded (sha, image) crops. View 0 is the crop itself: its plain embedding (cached,
    else made here and cached)."""
    plain = _cached(plain_cache, [s for s, _ in decoded])
    todo = [(s, im) for s, im in decoded if s not in plain]
    if todo:
        _cache_vectors(plain_cache, plain, todo, model.embed([im for _, im in todo], batch_size=batch_size))
    return model.embed_views(
        [im for _, im in decoded], batch_size=batch_size, plain=np.stack([plain[s] for s, _ in decoded])
    )


def _cache_vectors(cache: FileCache, found: dict[str, np.ndarray], decoded: list, vectors) -> None:
    """Store each decoded crop's new vector in the cache and in `found` (sha -> vector)."""
    for (sha, _), vec in zip(decoded, vectors):
        cache.put(sha, vec)
        found[sha] = vec


def candidate_rows(
    crop_shas: list[str], plain: np.ndarray, setting: str, data_root: str | Path, views: bool
) -> np.ndarray:
    """What pre-labels match against the references for these crops: their embeddings `plain` (N, dim),
    or with `views` each crop's views (N, V, dim; a crop whose views cannot be made, or with no known
    sha, keeps its one vector as every view)."""
    if not views or not len(crop_shas):
        return plain
    got = embed_crops([s for s in crop_shas if isinstance(s, str)], setting, data_root, views=True)
    n_views = next(iter(got.values())).shape[0] if got else 1
    return np.stack([got[s] if s in got else np.repeat(v[None], n_views, axis=0) for s, v in zip(crop_shas, plain)])


def album_means(
    albums: list[str], crop_shas: list[str], plain, setting: str, data_root: str | Path, views: bool
) -> tuple[dict[str, np.ndarray], dict[str, int]]:
    """Each album's mean of the rows its candidates are matched by (`candidate_rows` of the faces' crop
    shas and `plain` embeddings: their views with `views`), over its first `album_mean_faces` faces in the
    order given (publication order, then this run's). Returns (album -> mean, album -> faces it was
    taken over); albums with too few faces have none.

    A mean is cached under the shas it was taken over (`album_mean_cache`): on most nights an album's
    first faces are the same, so its mean is one file read instead of reading every one of their views."""
    order: dict[str, list[int]] = {}
    for i, album in enumerate(albums):
        order.setdefault(album, []).append(i)
    loaded = load(setting)
    cache = album_mean_cache(data_root, loaded.model_id, views) if loaded is not None else None
    means, counts = {}, {}
    for album, idx in sorted(order.items()):
        m = album_mean_faces(len(idx))
        if not m:
            continue
        take = idx[:m]
        shas = [crop_shas[i] for i in take]
        key = album_mean_key(shas) if cache is not None else None
        mean = cache.get(key) if key is not None else None
        if mean is None:
            rows = candidate_rows(shas, np.stack([plain[i] for i in take]), setting, data_root, views)
            mean = rows.reshape(-1, rows.shape[-1]).astype(np.float64).mean(axis=0).astype(np.float32)
            if key is not None:
                cache.put(key, mean)
        means[album] = mean
        counts[album] = m
    return means, counts
