"""Identity-stage speed: embeddings/s, and near-duplicate removal time for N vectors.

    .venv/bin/python benchmarks/bench_identity.py [--weights PATH] [--crops 512] [--vectors 100000] [--precision auto]

Embedding: real face crops (CAVA Dexter's Laboratory val boxes, cut at enlarged rate 1.0), batch 64,
on CUDA when available else on this CPU, in bf16 where the hardware computes it (models/precision.py;
``--precision fp32`` for the fp32 figure); once as one embedding per crop (near-duplicates)
and then the 3 more views per crop that pre-labels match (`candidate_views`; view 0 is the plain
embedding). Dedup: clustered random unit vectors (one in
ten is a noisy copy of another), the pipeline's exact range search at > 0.95 (Faiss on a CPU; chunked
torch products, fp16 candidates checked in fp32, on CUDA) plus the greedy keep, so recall against
exact search is 1 by construction. On CUDA, Faiss's CPU search is timed too, for comparison, when
--vectors is at most 200,000. Album means: the time a night spends on them with 4 albums of 1,024
published faces, the first night (from the faces' cached views) and the next (read back).
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from models.crop import cut, enlarged_box  # noqa: E402
from models.embedder import REFERENCE_VIEW_SCALES, load_embedder  # noqa: E402
from models.precision import PRECISIONS, precision_name  # noqa: E402
from pipeline.dedup import greedy_dedup, range_neighbours  # noqa: E402
from pipeline.identity.embedding import DEFAULT_WEIGHTS, album_means, embedding_cache, load  # noqa: E402

SHARED = Path(os.environ.get("TOONFACE_SHARED", Path(__file__).resolve().parent.parent.parent / "shared"))


def real_crops(limit: int) -> list[np.ndarray]:
    folder = SHARED / "data" / "cava" / "dexters_laboratory"
    with open(folder / "boxes.csv") as f:
        rows = [r for r in csv.DictReader(f) if r["split"] == "val"]
    crops = []
    while len(crops) < limit:
        for r in rows:
            image = cv2.imread(str(folder / r["image"]))
            box = enlarged_box(tuple(float(r[k]) for k in ("x1", "y1", "x2", "y2")), image.shape[1], image.shape[0])
            crops.append(cut(image, box))
            if len(crops) >= limit:
                break
    return crops


def bench_embed(weights: Path, n: int, precision: str = "auto") -> dict:
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model, meta = load_embedder(weights, device, precision=precision)
    dtype = precision_name(model.use_bf16)
    crops = real_crops(n)
    model.embed(crops[:64])  # warm-up
    t = time.perf_counter()
    plain = model.embed(crops, batch_size=64)
    seconds = plain_seconds = time.perf_counter() - t
    out = {
        "device": device,
        "precision": dtype,
        "model_id": meta["model_id"],
        "input_size": int(meta.get("input_size", 112)),
        "crops": n,
        "seconds": round(seconds, 2),
        "embeddings_per_s": round(n / seconds, 1),
    }
    print(
        f"embed: {n} crops in {seconds:.2f} s = {n / seconds:.1f} embeddings/s on {device}, {dtype} ({meta['model_id']})"
    )
    # The pipeline's candidate_views (and every reference): each crop's 4 views, view 0 being the
    # plain embedding it already has (dedup needs it first), so 3 more forward passes per crop.
    t = time.perf_counter()
    model.embed_views(crops, batch_size=64, plain=plain)
    seconds = time.perf_counter() - t
    both = plain_seconds + seconds  # unrounded, unlike out["seconds"]
    out.update({"views_seconds": round(seconds, 2), "crops_with_views_per_s": round(n / both, 1)})
    print(
        f"embed views: {n} crops x 3 more views in {seconds:.2f} s; with the plain embedding "
        f"{n / both:.1f} crops/s end to end"
    )
    return out


def bench_dedup(n: int, dim: int = 512, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    base = rng.normal(size=(n, dim)).astype(np.float32)
    copies = rng.choice(n, size=n // 10, replace=False)
    base[copies[: len(copies) // 2]] = base[copies[len(copies) // 2 :]] + 0.1 * rng.normal(
        size=(len(copies) - len(copies) // 2, dim)
    ).astype(np.float32)
    base /= np.linalg.norm(base, axis=1, keepdims=True)
    quality = rng.random(n)
    search = "torch fp16 + fp32 check on cuda" if torch.cuda.is_available() else "faiss on cpu"
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()  # the embedder's memory is not the search's
    t = time.perf_counter()
    result = greedy_dedup(base, [str(i) for i in range(n)], quality, 0.95)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t
    removed = int((~result.kept).sum())
    print(
        f"dedup: {n} vectors ({dim}-d) in {seconds:.1f} s ({search}), {removed} removed as near-duplicates "
        f"(exact search: recall 1.0)"
    )
    out = {"vectors": n, "dim": dim, "search": search, "seconds": round(seconds, 2), "removed": removed}
    if torch.cuda.is_available():
        out["gpu_peak_mib"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
        print(f"  peak GPU memory: {out['gpu_peak_mib']} MiB")
    if torch.cuda.is_available() and n <= 200_000 and importlib.util.find_spec("faiss"):
        t = time.perf_counter()
        neighbours = range_neighbours(base, base, 0.95, device="cpu")
        out["faiss_cpu_search_seconds"] = round(time.perf_counter() - t, 2)
        print(
            f"  faiss on cpu, search only: {out['faiss_cpu_search_seconds']} s "
            f"({sum(len(i) for i, _ in neighbours)} pairs)"
        )
    return out


def bench_album_means(weights: Path, faces: int = 1024, albums: int = 4, seed: int = 0) -> dict:
    """Each night's album means: `albums` albums of `faces` published faces whose view embeddings are
    in the embedding cache (random unit vectors written there), taken from those views the first time
    and read back from the album-mean cache on the nights after."""
    rng = np.random.default_rng(seed)
    setting = str(weights)
    model_id = load(setting).model_id
    with tempfile.TemporaryDirectory() as root:
        cache = embedding_cache(root, model_id, views=True)
        shas = [f"{i:064x}" for i in range(faces * albums)]
        plain = rng.normal(size=(len(shas), 512)).astype(np.float32)
        plain /= np.linalg.norm(plain, axis=1, keepdims=True)
        for sha, vector in zip(shas, plain):
            cache.put(sha, np.stack([vector] * (1 + len(REFERENCE_VIEW_SCALES))))  # view 0 and the centred views
        names = [f"album{i % albums}" for i in range(len(shas))]
        out = {"albums": albums, "faces_per_album": faces}
        for night in ("first_night_seconds", "next_night_seconds"):
            t = time.perf_counter()
            album_means(names, shas, plain, setting, root, views=True)
            out[night] = round(time.perf_counter() - t, 3)
    print(
        f"album means: {albums} albums x {faces} faces: {out['first_night_seconds']} s from their views, "
        f"{out['next_night_seconds']} s read back the next night"
    )
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", type=Path, default=DEFAULT_WEIGHTS)
    p.add_argument("--crops", type=int, default=512)
    p.add_argument("--vectors", type=int, default=100_000)
    p.add_argument("--precision", default="auto", choices=PRECISIONS)
    args = p.parse_args()
    print(f"cores: {os.cpu_count()}, torch threads: {torch.get_num_threads()}")
    result = {
        "embed": bench_embed(args.weights, args.crops, args.precision),
        "dedup": bench_dedup(args.vectors),
        "album_means": bench_album_means(args.weights),
    }
    result["peak_rss_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    print(f"peak RSS: {result['peak_rss_mib']} MiB")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
