"""Near-duplicate removal over L2-normalised embeddings (the paper: similarity > 0.95).

Greedy keep, ranked by quality: crops are visited best first (sharpness, then resolution); a crop
is removed when it is more similar than the threshold to a crop already *kept* (in this run or
published before), and records that crop as `duplicate_of` with the similarity. Only kept crops
remove others, so there is no chaining: with A≈B, B≈C and A≉C, B goes and A and C both stay
(connected components would have merged all three; fastdup's users found unrelated images chained
into one cluster that way).

With a `confirm` check (`pipeline.same_picture`), similarity only proposes: a crop is removed when one of
its most similar kept crops passes the check, so two drawings of one character both stay.

Exact byte duplicates never get here (the content store dedups them first). The neighbours are
found with an exact range search over this run's crops and a persisted index of every crop published
before, so each run is checked against the whole dataset, not only itself. On a CPU that is Faiss's
range search. Faiss has no range search on GPU indexes (faiss-gpu included), so on a CUDA machine it
runs as chunked torch matrix products: fp16 finds the candidates a little below the threshold, and
each candidate's similarity is then computed again in fp32, so the result is the exact one either way.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from data_manifest.store import file_lock
from pipeline.store import atomic_write


@dataclasses.dataclass
class DedupResult:
    kept: np.ndarray  # bool per new crop
    duplicate_of: list[str | None]  # id of the kept crop it duplicates
    similarity: np.ndarray  # similarity to that crop (nan when kept)


def range_neighbours(
    queries: np.ndarray, database: np.ndarray, threshold: float, batch: int = 8192, device: str = "auto"
) -> list[tuple[np.ndarray, np.ndarray]]:
    """For each query, (database indices, similarities) with inner product > threshold, indices
    ascending. ``device`` "auto": CUDA when torch sees a GPU (see torch_range_neighbours), else Faiss."""
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    database = np.ascontiguousarray(database, dtype=np.float32)
    if len(queries) == 0:
        return []
    if len(database) == 0:
        return [(np.empty(0, np.int64), np.empty(0, np.float32)) for _ in range(len(queries))]
    if device == "auto":
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device != "cpu":
        return torch_range_neighbours(queries, database, threshold, device=device)
    import faiss  # here, not at the top: the CUDA path needs no Faiss installed

    index = faiss.IndexFlatIP(database.shape[1])
    index.add(database)
    out: list[tuple[np.ndarray, np.ndarray]] = []
    for start in range(0, len(queries), batch):
        chunk = queries[start : start + batch]
        lims, sims, ids = index.range_search(chunk, threshold)
        for q in range(len(chunk)):
            lo, hi = lims[q], lims[q + 1]
            mask = sims[lo:hi] > threshold  # range_search keeps >=; the paper says "> 0.95"
            order = np.argsort(ids[lo:hi][mask], kind="stable")
            out.append((ids[lo:hi][mask][order].astype(np.int64), sims[lo:hi][mask][order]))
    return out


# How far below the threshold a low-precision product may put a true neighbour, for unit vectors:
# each input is rounded to 11 (fp16) or 8 (bf16) significant bits, products are summed in fp32.
# fp32 gets a hair of slack too: the product and the recomputation sum in different orders.
_SLACK = {"float16": 4e-3, "bfloat16": 3e-2, "float32": 1e-5}


def torch_range_neighbours(
    queries: np.ndarray,
    database: np.ndarray,
    threshold: float,
    device: str = "cuda",
    dtype: str | None = None,
    max_elements: int | None = None,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """range_neighbours as chunked matrix products on a torch device (L2-normalised rows expected).

    ``dtype`` (default fp16 on CUDA, fp32 elsewhere) is used to find candidates above threshold minus
    a slack that covers its rounding; every candidate's similarity is then recomputed in fp32 and
    kept when > threshold, so the result does not depend on ``dtype``. ``max_elements`` bounds one
    chunk's similarity matrix (memory)."""
    import torch

    dev = torch.device(device)
    dtype = dtype or ("float16" if dev.type == "cuda" else "float32")
    slack = _SLACK[dtype]
    max_elements = max_elements or (1 << 31 if dev.type == "cuda" else 1 << 26)
    q32 = torch.from_numpy(np.ascontiguousarray(queries, dtype=np.float32)).to(dev)
    db32 = torch.from_numpy(np.ascontiguousarray(database, dtype=np.float32)).to(dev)
    low = getattr(torch, dtype)
    db_low = db32 if low == torch.float32 else db32.to(low)
    chunk = max(1, min(len(q32), max_elements // max(1, len(db32))))
    rows, cols, sims = [], [], []
    with torch.no_grad():
        for start in range(0, len(q32), chunk):
            q = q32[start : start + chunk]
            approx = (q if low == torch.float32 else q.to(low)) @ db_low.T
            r, c = torch.nonzero(approx > threshold - slack, as_tuple=True)  # row-major: columns ascending
            del approx
            exact = (q[r] * db32[c]).sum(1)
            keep = exact > threshold
            rows.append((r[keep] + start).cpu())
            cols.append(c[keep].cpu())
            sims.append(exact[keep].float().cpu())
    r = torch.cat(rows).numpy()
    c = torch.cat(cols).numpy().astype(np.int64)
    v = torch.cat(sims).numpy().astype(np.float32)
    bounds = np.searchsorted(r, np.arange(len(queries) + 1))
    return [(c[bounds[i] : bounds[i + 1]], v[bounds[i] : bounds[i + 1]]) for i in range(len(queries))]


def greedy_dedup(
    vectors: np.ndarray,
    ids: list[str],
    quality: np.ndarray,
    threshold: float = 0.95,
    published: np.ndarray | None = None,
    published_ids: list[str] | None = None,
    confirm: Callable[[int, int], bool] | None = None,
    max_checks: int = 10,
) -> DedupResult:
    """Decide keep/remove for new crops. `quality` is a sortable key per crop (higher is better);
    `published` vectors are already in the dataset and are always kept. `confirm(i, j)`, when given,
    decides whether new crop i duplicates database row j (published rows first, then the new crops);
    it is asked about the `max_checks` most similar kept neighbours, most similar first."""
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
    # Most crops have no neighbour but themselves: spot them in bulk so the loop below passes them by
    # cheaply (a million crops: seconds saved), still in quality order, so the outcome is the same.
    sizes = np.fromiter((len(idx) for idx, _ in neighbours), np.int64, count=n)
    single = np.flatnonzero(sizes == 1)
    only_self = np.fromiter((neighbours[i][0][0] for i in single), np.int64, count=len(single)) == offset + single
    alone = sizes == 0
    alone[single[only_self]] = True
    alone = alone.tolist()
    for i in order.tolist():
        if alone[i]:
            kept[i] = True
            is_kept[offset + i] = True
            continue
        idx, sims = neighbours[i]
        others = idx != offset + i
        idx, sims = idx[others], sims[others]
        blocking = is_kept[idx]
        best = _duplicated(i, idx[blocking], sims[blocking], confirm, max_checks)
        if best is not None:
            duplicate_of[i] = all_ids[idx[blocking][best]]
            similarity[i] = sims[blocking][best]
        else:
            kept[i] = True
            is_kept[offset + i] = True
    return DedupResult(kept, duplicate_of, similarity)


def _duplicated(
    i: int, rows: np.ndarray, sims: np.ndarray, confirm: Callable[[int, int], bool] | None, max_checks: int
) -> int | None:
    """Which of the kept neighbours `rows` crop i duplicates (a position in rows), or None."""
    if not len(rows):
        return None
    if confirm is None:
        return int(np.argmax(sims))
    for k in np.argsort(-sims, kind="stable")[:max_checks].tolist():
        if confirm(i, int(rows[k])):
            return k
    return None


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
        promoted = []
        if not self.dir.exists():
            return promoted
        with file_lock(self.dir / ".lock"):
            pending = {p.stem[len("pending-") :]: p for p in self.dir.glob("pending-*.npy")}
            for run_id in sorted((r for r in pending if r in published_runs), key=published_runs.get):
                ids = json.loads((self.dir / f"pending-{run_id}.json").read_text())
                self._commit_locked(np.load(pending[run_id]), ids, published_runs[run_id])
                pending[run_id].unlink()
                (self.dir / f"pending-{run_id}.json").unlink(missing_ok=True)
                promoted.append(run_id)
        return promoted

    def commit(self, vectors: np.ndarray, ids: list[str], version: int) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        with file_lock(self.dir / ".lock"):
            self._commit_locked(vectors, ids, version)

    def _commit_locked(self, vectors: np.ndarray, ids: list[str], version: int) -> None:
        old_vectors, old_ids = self.load()
        # Two runs over the same library may both index a crop: an id already indexed is not added again.
        known = set(old_ids)
        fresh = [i for i, face_id in enumerate(ids) if face_id not in known and not known.add(face_id)]
        if fresh:
            new = np.asarray(vectors, np.float32)[fresh]
            vectors = np.concatenate([old_vectors, new]) if old_ids else new
            ids = old_ids + [ids[i] for i in fresh]
        else:
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
