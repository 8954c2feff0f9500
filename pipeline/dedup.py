"""Near-duplicate removal over L2-normalised embeddings (the paper: similarity > 0.95).

Greedy keep, ranked by quality: crops are visited best first (sharpness, then resolution); a crop
is removed when it is more similar than the threshold to a crop already *kept* (in this run or
published before), and records that crop as `duplicate_of` with the similarity. Only kept crops
remove others, so there is no chaining: with A≈B, B≈C and A≉C, B goes and A and C both stay
(connected components would have merged all three; fastdup's users found unrelated images chained
into one cluster that way).

Exact byte duplicates never get here (the content store dedups them first). The neighbours are
found with a Faiss range search (exact inner product; faiss-gpu when installed) over this run's
crops and a persisted index of every crop published before, so each run is checked against the
whole dataset, not only itself.
"""
from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import faiss
import numpy as np

from pipeline.store import atomic_write


@dataclasses.dataclass
class DedupResult:
    kept: np.ndarray                  # bool per new crop
    duplicate_of: list[str | None]    # id of the kept crop it duplicates
    similarity: np.ndarray            # similarity to that crop (nan when kept)


def _use_gpu(index: faiss.Index) -> faiss.Index:
    if hasattr(faiss, "get_num_gpus") and faiss.get_num_gpus() > 0:  # faiss-gpu installed and a GPU seen
        return faiss.index_cpu_to_all_gpus(index)
    return index


def range_neighbours(queries: np.ndarray, database: np.ndarray, threshold: float,
                     batch: int = 8192) -> list[tuple[np.ndarray, np.ndarray]]:
    """For each query, (database indices, similarities) with inner product > threshold."""
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    database = np.ascontiguousarray(database, dtype=np.float32)
    if len(queries) == 0:
        return []
    if len(database) == 0:
        return [(np.empty(0, np.int64), np.empty(0, np.float32)) for _ in range(len(queries))]
    index = faiss.IndexFlatIP(database.shape[1])
    index.add(database)
    out: list[tuple[np.ndarray, np.ndarray]] = []
    for start in range(0, len(queries), batch):
        chunk = queries[start:start + batch]
        try:
            lims, sims, ids = index.range_search(chunk, threshold)
        except RuntimeError:  # some GPU indexes lack range search: exact top-k fallback
            k = min(len(database), 256)
            sims_k, ids_k = _use_gpu(index).search(chunk, k)
            for s, i in zip(sims_k, ids_k):
                keep = s > threshold
                out.append((i[keep].astype(np.int64), s[keep]))
            continue
        for q in range(len(chunk)):
            lo, hi = lims[q], lims[q + 1]
            mask = sims[lo:hi] > threshold  # range_search keeps >=; the paper says "> 0.95"
            out.append((ids[lo:hi][mask].astype(np.int64), sims[lo:hi][mask]))
    return out


def greedy_dedup(vectors: np.ndarray, ids: list[str], quality: np.ndarray, threshold: float = 0.95,
                 published: np.ndarray | None = None, published_ids: list[str] | None = None) -> DedupResult:
    """Decide keep/remove for new crops. `quality` is a sortable key per crop (higher is better);
    `published` vectors are already in the dataset and are always kept."""
    n = len(vectors)
    published = np.zeros((0, vectors.shape[1] if n else 1), np.float32) if published is None else published
    published_ids = published_ids or []
    database = np.concatenate([published, vectors]) if n else published
    all_ids = list(published_ids) + list(ids)
    offset = len(published)
    neighbours = range_neighbours(vectors, database, threshold)
    kept = np.zeros(n, bool)
    duplicate_of: list[str | None] = [None] * n
    similarity = np.full(n, np.nan, np.float32)
    order = np.argsort(-np.asarray(quality, dtype=np.float64), kind="stable")
    is_kept = np.zeros(len(database), bool)
    is_kept[:offset] = True
    for i in order:
        idx, sims = neighbours[i]
        others = idx != offset + i
        idx, sims = idx[others], sims[others]
        blocking = is_kept[idx]
        if blocking.any():
            best = int(np.argmax(np.where(blocking, sims, -np.inf)))
            duplicate_of[i] = all_ids[idx[best]]
            similarity[i] = sims[best]
        else:
            kept[i] = True
            is_kept[offset + i] = True
    return DedupResult(kept, duplicate_of, similarity)


class PublishedIndex:
    """Embeddings of every kept crop already published, per embedding model, on disk.

    `vectors.npy` (float32, one row per crop) and `ids.json`, replaced atomically together with a
    manifest version: `commit` writes new files then swaps a pointer file, so a crash leaves the old
    index intact."""

    def __init__(self, data_root: str | Path, model_id: str):
        self.dir = Path(data_root) / "index" / model_id

    def load(self) -> tuple[np.ndarray, list[str]]:
        pointer = self.dir / "CURRENT"
        if not pointer.exists():
            return np.zeros((0, 0), np.float32), []
        name = pointer.read_text().strip()
        vectors = np.load(self.dir / f"{name}.npy")
        ids = json.loads((self.dir / f"{name}.json").read_text())
        return vectors, ids

    def stage(self, run_id: str, vectors: np.ndarray, ids: list[str]) -> None:
        """Park a run's vectors until its manifest version is published (see `promote`)."""
        self.dir.mkdir(parents=True, exist_ok=True)
        tmp = self.dir / f".pending-{run_id}.npy"
        with open(tmp, "wb") as f:
            np.save(f, np.ascontiguousarray(vectors, np.float32))
        atomic_write(self.dir / f"pending-{run_id}.json", json.dumps(list(ids)).encode())
        os.replace(tmp, self.dir / f"pending-{run_id}.npy")

    def promote(self, published_runs: dict[str, int]) -> list[str]:
        """Add the parked vectors of every published run (oldest version first) to the index.
        Called after publishing, and at the start of a run in case one died in between."""
        from data_manifest.store import file_lock

        promoted = []
        if not self.dir.exists():
            return promoted
        with file_lock(self.dir / ".lock"):
            pending = {p.stem[len("pending-"):]: p for p in self.dir.glob("pending-*.npy")}
            for run_id in sorted((r for r in pending if r in published_runs), key=published_runs.get):
                ids = json.loads((self.dir / f"pending-{run_id}.json").read_text())
                self.commit(np.load(pending[run_id]), ids, published_runs[run_id])
                pending[run_id].unlink()
                (self.dir / f"pending-{run_id}.json").unlink(missing_ok=True)
                promoted.append(run_id)
        return promoted

    def commit(self, vectors: np.ndarray, ids: list[str], version: int) -> None:
        old_vectors, old_ids = self.load()
        if len(old_ids) and len(ids):
            vectors = np.concatenate([old_vectors, vectors.astype(np.float32)])
            ids = old_ids + list(ids)
        elif len(old_ids):
            vectors, ids = old_vectors, old_ids
        self.dir.mkdir(parents=True, exist_ok=True)
        name = f"v{version:06d}"
        tmp = self.dir / f".{name}.npy"
        with open(tmp, "wb") as f:
            np.save(f, np.ascontiguousarray(vectors, np.float32))
        os.replace(tmp, self.dir / f"{name}.npy")
        atomic_write(self.dir / f"{name}.json", json.dumps(list(ids)).encode())
        atomic_write(self.dir / "CURRENT", name.encode())
        for old in self.dir.glob("v*.npy"):
            if old.stem != name:
                old.unlink(missing_ok=True)
                (self.dir / f"{old.stem}.json").unlink(missing_ok=True)
