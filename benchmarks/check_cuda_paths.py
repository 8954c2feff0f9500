"""Do the CUDA paths give the CPU's answers? Detector (bf16, channels_last, batched post-processing on
the device), embedder (bf16 autocast) and the torch near-duplicate search, each against the CPU fp32
result on the same real images. Prints one JSON object; exit 1 when a check fails.

    python benchmarks/check_cuda_paths.py [--device cuda]

``--device cpu`` compares the CPU's fp32 with what the pipeline runs on this CPU (bf16 where it computes
bf16 natively, else fp32 again): a dry run of the script where no GPU is lent.
Images: ``$TOONFACE_SHARED`` (the device pack, see benchmarks/device_pack.py) or ``../shared``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import cv2
import numpy as np
import torch

PROJECT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT))
from models.det_metrics import box_iou  # noqa: E402
from models.detector import load_detector  # noqa: E402
from models.embedder import load_embedder  # noqa: E402
from pipeline.dedup import torch_range_neighbours  # noqa: E402
from pipeline.detect import DEFAULT_DETECTOR_WEIGHTS  # noqa: E402
from pipeline.identity.embedding import DEFAULT_WEIGHTS  # noqa: E402

SHARED = Path(os.environ.get("TOONFACE_SHARED", PROJECT.parent / "shared"))


def detector_agreement(images: list[np.ndarray], device: str) -> dict:
    """Each CPU detection scoring >= 0.5 should have a device detection at IoU >= 0.9 (bf16 moves
    boxes and scores a little); scores of matched pairs should differ by < 0.05."""
    cpu = load_detector(DEFAULT_DETECTOR_WEIGHTS, precision="fp32").detect_many(
        images, batch_size=16, score_threshold=0.3
    )
    dev = load_detector(DEFAULT_DETECTOR_WEIGHTS, device=device).detect_many(images, batch_size=16, score_threshold=0.3)
    confident = matched = 0
    score_gaps = []
    for a, b in zip(cpu, dev):
        a = a[a[:, 4] >= 0.5]
        confident += len(a)
        if not len(a) or not len(b):
            continue
        iou = box_iou(a[:, :4].astype(np.float64), b[:, :4].astype(np.float64))
        best = iou.argmax(1)
        hit = iou[np.arange(len(a)), best] >= 0.9
        matched += int(hit.sum())
        score_gaps += np.abs(a[hit, 4] - b[best[hit], 4]).tolist()
    share = matched / confident if confident else 1.0
    gap = max(score_gaps) if score_gaps else 0.0
    return {
        "confident_cpu_detections": confident,
        "matched_at_iou_0.9": share,
        "max_score_gap": gap,
        "ok": share >= 0.95 and gap < 0.05,
    }


def embedder_agreement(crops: list[np.ndarray], device: str) -> dict:
    cpu_model, _ = load_embedder(DEFAULT_WEIGHTS, precision="fp32")
    dev_model, _ = load_embedder(DEFAULT_WEIGHTS, device)
    a, b = cpu_model.embed(crops, batch_size=64), dev_model.embed(crops, batch_size=64)
    cos = (a * b).sum(1)
    return {"crops": len(crops), "min_cosine_cpu_vs_device": float(cos.min()), "ok": float(cos.min()) > 0.99}


def dedup_agreement(device: str, n: int = 20_000, dim: int = 512) -> dict:
    """The device's fp16 search (candidates, then fp32 re-check) against the CPU's fp32 products."""
    rng = np.random.default_rng(0)
    base = rng.normal(size=(n, dim)).astype(np.float32)
    base[n // 2 :] = base[: n // 2] + rng.uniform(0.2, 0.4, (n // 2, 1)).astype(np.float32) * rng.normal(
        size=(n // 2, dim)
    ).astype(np.float32)
    base /= np.linalg.norm(base, axis=1, keepdims=True)
    cpu = torch_range_neighbours(base, base, 0.95, device="cpu", dtype="float32")
    dev = torch_range_neighbours(base, base, 0.95, device=device)
    same = all(np.array_equal(i, j) for (i, _), (j, _) in zip(cpu, dev))
    pairs = sum(len(i) for i, _ in cpu) - n
    return {"vectors": n, "pairs_above_0.95": pairs, "same_pairs": same, "ok": same and pairs > 0}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args()
    icf = sorted((SHARED / "data" / "icartoonface_det" / "images" / "val").glob("*.jpg"))[:64]
    images = [cv2.imread(str(path)) for path in icf]
    crops = [cv2.resize(img, (160, 160)) for img in images]  # whole images as crops: any picture will do here
    result = {
        "device": args.device,
        "torch": torch.__version__,
        "gpu": torch.cuda.get_device_name() if args.device.startswith("cuda") else None,
        "detector": detector_agreement(images, args.device),
        "embedder": embedder_agreement(crops, args.device),
        "dedup": dedup_agreement(args.device),
    }
    print(json.dumps(result, indent=1))
    return 0 if all(result[k]["ok"] for k in ("detector", "embedder", "dedup")) else 1


if __name__ == "__main__":
    sys.exit(main())
