"""Near-duplicate quality per source: copies of real pictures that must be removed, and distinct
pictures of the same characters that must stay.

    .venv/bin/python benchmarks/dedup_quality.py [--source NAME ...] [--role test] [--weights PATH]
        [--embedding-only 0.95 0.98] [--candidates 0.8] [--min-keypoints 12] [--min-correlation 0.8]

Sources are the identity sources of `benchmarks/identity_data/sources.json` (rebuild them first with
`benchmarks/identity_data/rebuild.py`); by default every source of `--role`. Originals: up to
`--originals` images of the source (seeded). Copies of `--copied` of them, one of each kind: JPEG at
quality 40, half size, a crop of 5-15% (centred), brightness +-35, mirror image. Every image is embedded
once and described once (`pipeline.same_picture`), then each rule runs the pipeline's greedy keep
(`pipeline.dedup.greedy_dedup`, originals ranked first, as a sharper crop would be):

- `embedding>T`: the paper's rule, similarity above T removes;
- `picture>C,k=K,r=R`: similarity above C proposes, the pipeline's picture check decides (at least K
  keypoints agree on one transform, and the pictures aligned by it correlate at least R; the defaults
  are the pipeline's).

A removal is right when it points at the crop's own original or another copy of it. Recall: copies
rightly removed, over all copies and per kind. Precision: right removals over all removals, an original
removed (a different picture of the same character, usually) counting as a wrong one. Pairs are compared once
for all rules, so the first picture rule's seconds include the comparisons and later ones do not.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.identity_data.rebuild import images_by_identity, source, source_root, sources  # noqa: E402
from models.embedder import load_embedder  # noqa: E402
from pipeline.dedup import greedy_dedup  # noqa: E402
from pipeline.identity.embedding import DEFAULT_WEIGHTS  # noqa: E402
from pipeline.same_picture import MIN_CORRELATION, MIN_KEYPOINTS, agreement, describe  # noqa: E402

KINDS = ("jpeg_q40", "half_size", "crop_5_15", "brightness_35", "mirror")


def copies(image: np.ndarray, rng: random.Random) -> list[np.ndarray]:
    """One copy of each kind in KINDS."""
    h, w = image.shape[:2]
    jpeg = cv2.imdecode(cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 40])[1], cv2.IMREAD_COLOR)
    half = cv2.resize(image, (max(1, w // 2), max(1, h // 2)), interpolation=cv2.INTER_AREA)
    cut = rng.uniform(0.05, 0.15)  # the share of each side taken away, half from each edge
    dy, dx = round(h * cut / 2), round(w * cut / 2)
    brighter = cv2.convertScaleAbs(image, alpha=1.0, beta=rng.choice([-35, 35]))
    return [jpeg, half, image[dy : h - dy, dx : w - dx], brighter, np.ascontiguousarray(image[:, ::-1])]


def load_set(name: str, originals: int, copied: int, seed: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """(originals, copies): copies[5 * g + k] is copy kind k of originals[g], for g < copied."""
    rng = random.Random(seed)
    paths = [p for ps in images_by_identity(source_root(source(name))).values() for p in ps]
    rng.shuffle(paths)
    images = [im for im in (cv2.imread(str(p), cv2.IMREAD_COLOR) for p in paths) if im is not None][:originals]
    return images, [c for im in images[:copied] for c in copies(im, rng)]


def score(result, n: int, copied: int) -> dict:
    """Recall (all copies and per kind) and precision of one greedy keep over originals then copies."""

    def group(face_id: str | None) -> int | None:
        return None if face_id is None else int(face_id[1:].split("-")[0])

    right = np.zeros((copied, len(KINDS)), bool)
    for c in range(copied * len(KINDS)):
        right[c // len(KINDS), c % len(KINDS)] = group(result.duplicate_of[n + c]) == c // len(KINDS)
    removed = int((~result.kept).sum())
    wrong = removed - int(right.sum())
    return {
        "recall": round(float(right.mean()), 4),
        "recall_by_kind": {k: round(float(right[:, i].mean()), 4) for i, k in enumerate(KINDS)},
        "precision": round(float(right.sum() / removed), 4) if removed else None,
        "removed": removed,
        "wrong_removals": wrong,
        "originals_removed": int((~result.kept[:n]).sum()),
    }


def run_source(name: str, model, args) -> list[dict]:
    originals, copy_images = load_set(name, args.originals, args.copied, args.seed)
    images = originals + copy_images
    n, copied = len(originals), len(copy_images) // len(KINDS)
    ids = [f"o{i}" for i in range(n)] + [f"c{c // len(KINDS)}-{c % len(KINDS)}" for c in range(len(copy_images))]
    quality = np.r_[np.ones(n), np.zeros(len(copy_images))]
    start = time.perf_counter()
    vectors = model.embed(images)
    embed_s = time.perf_counter() - start
    start = time.perf_counter()
    described = [describe(im) for im in images]
    describe_s = time.perf_counter() - start
    print(
        f"{name}: {n} originals, {len(copy_images)} copies of {copied}; embedded in {embed_s:.1f} s, "
        f"described in {describe_s:.1f} s",
        flush=True,
    )
    rows = []
    rules = [("embedding", t, None) for t in args.embedding_only]
    rules += [("picture", c, (k, r)) for c in args.candidates for k in args.min_keypoints for r in args.min_correlation]
    agreements: dict[tuple[int, int], tuple[int, float]] = {}  # each pair compared once for every rule
    for kind, threshold, minimum in rules:
        checks = 0

        def confirm(i: int, j: int, minimum=minimum) -> bool:
            nonlocal checks
            checks += 1
            if (j, i) not in agreements:
                agreements[j, i] = agreement(described[j], described[i])
            keypoints, correlation = agreements[j, i]
            return keypoints >= minimum[0] and correlation >= minimum[1]

        start = time.perf_counter()
        result = greedy_dedup(vectors, ids, quality, threshold, confirm=confirm if kind == "picture" else None)
        row = {
            "source": name,
            "rule": f"embedding>{threshold}"
            if kind == "embedding"
            else f"picture>{threshold},k={minimum[0]},r={minimum[1]}",
            **score(result, n, copied),
            "pairs_checked": checks,
            "seconds": round(time.perf_counter() - start, 2),
        }
        print(
            f"  {row['rule']:<22} recall {row['recall']:.3f} "
            + " ".join(f"{k} {v:.2f}" for k, v in row["recall_by_kind"].items())
            + f" | precision {row['precision']} ({row['wrong_removals']} wrong of {row['removed']} removed, "
            f"{row['originals_removed']} originals) | {checks} pairs checked, {row['seconds']} s",
            flush=True,
        )
        rows.append(row)
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--source", nargs="+", help="identity sources (default: every source of --role)")
    p.add_argument("--role", default="test", choices=["train", "tune", "test"])
    p.add_argument("--weights", type=Path, default=DEFAULT_WEIGHTS)
    p.add_argument("--originals", type=int, default=1000)
    p.add_argument("--copied", type=int, default=250)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--embedding-only", type=float, nargs="*", default=[0.95, 0.98])
    p.add_argument("--candidates", type=float, nargs="*", default=[0.8])
    p.add_argument("--min-keypoints", type=int, nargs="*", default=[MIN_KEYPOINTS])
    p.add_argument("--min-correlation", type=float, nargs="*", default=[MIN_CORRELATION])
    args = p.parse_args()
    names = args.source or [e["name"] for e in sources() if e["role"] == args.role]
    model, meta = load_embedder(args.weights)
    print(f"embedder {meta['model_id']}; sources {', '.join(names)}")
    rows = [row for name in names for row in run_source(name, model, args)]
    for rule in dict.fromkeys(r["rule"] for r in rows):
        mine = [r for r in rows if r["rule"] == rule]
        recall = np.mean([r["recall"] for r in mine])
        precision = np.mean([r["precision"] if r["precision"] is not None else 1.0 for r in mine])
        print(f"mean over {len(mine)} sources, {rule}: recall {recall:.3f}, precision {precision:.3f}")
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
