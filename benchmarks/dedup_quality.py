"""Near-duplicate quality per threshold: copies of real crops that should be removed, and distinct
crops that should not be. Embeds once, then runs the greedy keep at each threshold (the paper's 0.95
and the candidates for a model's calibrated ``dedup_threshold``).

    .venv/bin/python benchmarks/dedup_quality.py [--weights PATH] [--threshold 0.95 0.97 0.98 0.99]

Originals: every crop of moeimouto test and the first 20 per hololive identity. Copies of each
original: JPEG re-encoded at quality 40, resized to half, centre-cropped to 90%. Dedup recall is the
share of copies removed as duplicates of their own original; wrongly removed counts originals that
were removed as duplicates of a different original.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from models.embedder import load_embedder  # noqa: E402
from pipeline.dedup import greedy_dedup  # noqa: E402
from pipeline.identity.embedding import DEFAULT_WEIGHTS  # noqa: E402

SHARED = Path(os.environ.get("TOONFACE_SHARED", Path(__file__).resolve().parent.parent.parent / "shared"))


def originals() -> list[np.ndarray]:
    paths = sorted((SHARED / "data/anime_identities/moeimouto/test").rglob("*.*"))
    for folder in sorted((SHARED / "data/anime_identities/hololive_danbooru").iterdir()):
        paths += sorted(folder.glob("*.jpg"))[:20]
    images = [cv2.imread(str(p)) for p in paths]
    return [im for im in images if im is not None]


def copies(image: np.ndarray) -> list[np.ndarray]:
    h, w = image.shape[:2]
    jpeg = cv2.imdecode(cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 40])[1], cv2.IMREAD_COLOR)
    half = cv2.resize(image, (max(1, w // 2), max(1, h // 2)), interpolation=cv2.INTER_AREA)
    dy, dx = h // 20, w // 20
    return [jpeg, half, image[dy : h - dy, dx : w - dx]]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", type=Path, default=DEFAULT_WEIGHTS)
    p.add_argument("--threshold", type=float, nargs="+", default=[0.95, 0.97, 0.98, 0.99])
    args = p.parse_args()
    model, meta = load_embedder(args.weights)
    orig = originals()
    copy_images = [c for im in orig for c in copies(im)]
    emb = model.embed(orig + copy_images)
    n = len(orig)
    ids = [f"o{i}" for i in range(n)] + [f"c{i // 3}-{i % 3}" for i in range(len(copy_images))]
    # originals rank first (as a sharper crop would), so copies are the ones to go
    quality = np.r_[np.ones(n), np.zeros(len(copy_images))]
    print(f"{meta['model_id']}: {len(copy_images)} copies of {n} real crops")
    for threshold in args.threshold:
        result = greedy_dedup(emb, ids, quality, threshold)
        per_kind = {
            k: sum(1 for i in range(k, len(copy_images), 3) if result.duplicate_of[n + i] == f"o{i // 3}")
            for k in range(3)
        }
        own = sum(per_kind.values())
        wrong = int((~result.kept[:n]).sum())
        out = {
            "model_id": meta["model_id"],
            "threshold": threshold,
            "originals": n,
            "copies": len(copy_images),
            "recall": round(own / len(copy_images), 4),
            "recall_by_copy": {"jpeg_q40": per_kind[0] / n, "half_size": per_kind[1] / n, "crop_90": per_kind[2] / n},
            "distinct_wrongly_removed": wrong,
        }
        print(
            f"> {threshold}: dedup recall {out['recall']:.3f} (jpeg q40 {per_kind[0] / n:.3f}, half size "
            f"{per_kind[1] / n:.3f}, 90% crop {per_kind[2] / n:.3f}); distinct originals wrongly removed: {wrong} of {n}"
        )
        print(json.dumps(out))


if __name__ == "__main__":
    main()
