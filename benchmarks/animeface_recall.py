"""Recall and precision of the animeface detector at IoU 0.5 on a labelled split.

    python benchmarks/animeface_recall.py [--folder DIR] [--split val]          # CAVA boxes.csv
    python benchmarks/animeface_recall.py --yolo-images DIR --yolo-labels DIR    # YOLO txt labels

CAVA: `boxes.csv` in the folder (split,image,x1,y1,x2,y2,identity; pixels, image relative to the
folder). YOLO (icartoonface_det): one `<name>.txt` per image with lines `0 cx cy w h`, normalised;
an image without a label file has no face. Images are decoded and detected at full size, as ingest
does. Prints readable lines, then one JSON line.
"""

from __future__ import annotations

import argparse
import collections
import csv
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from anywhere without install

from pipeline.decode import decode_image
from pipeline.detect import get_detector

# Same override as the tests: TOONFACE_SHARED, else ../shared next to the project.
SHARED = Path(os.environ.get("TOONFACE_SHARED", Path(__file__).resolve().parent.parent.parent / "shared"))
DEFAULT_FOLDER = SHARED / "data/cava/dexters_laboratory"
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
Box = tuple[float, float, float, float]


def cava_boxes(folder: Path, split: str) -> dict[Path, list[Box]]:
    gt: dict[Path, list[Box]] = collections.defaultdict(list)
    with open(folder / "boxes.csv", newline="") as f:
        for row in csv.DictReader(f):
            if row["split"] == split:
                gt[folder / row["image"]].append(tuple(float(row[k]) for k in ("x1", "y1", "x2", "y2")))
    return gt


def yolo_boxes(label: Path, w: int, h: int) -> list[Box]:
    if not label.is_file():
        return []
    boxes = []
    for line in label.read_text().split("\n"):
        parts = line.split()
        if len(parts) == 5:
            cx, cy, bw, bh = (float(v) for v in parts[1:])
            boxes.append(((cx - bw / 2) * w, (cy - bh / 2) * h, (cx + bw / 2) * w, (cy + bh / 2) * h))
    return boxes


def iou(a: Box, b: Box) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def match(gt: list[Box], det: list[Box], threshold: float) -> int:
    """Greedy one-to-one matching, highest IoU first; returns the number of matched GT boxes."""
    pairs = sorted(((iou(g, d), i, j) for i, g in enumerate(gt) for j, d in enumerate(det)), reverse=True)
    used_gt, used_det = set(), set()
    for value, i, j in pairs:
        if value < threshold:
            break
        if i not in used_gt and j not in used_det:
            used_gt.add(i)
            used_det.add(j)
    return len(used_gt)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--folder", type=Path, default=DEFAULT_FOLDER, help="CAVA folder holding boxes.csv")
    parser.add_argument("--split", default="val")
    parser.add_argument("--yolo-images", type=Path, help="folder of images (YOLO mode)")
    parser.add_argument("--yolo-labels", type=Path, help="folder of <name>.txt labels (YOLO mode)")
    parser.add_argument("--iou", type=float, default=0.5)
    parser.add_argument("--limit", type=int, default=0, help="first N images only (0: all)")
    args = parser.parse_args()
    if bool(args.yolo_images) != bool(args.yolo_labels):
        parser.error("--yolo-images and --yolo-labels go together")

    if args.yolo_images:
        images = sorted(p for p in args.yolo_images.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        source, gt_of = f"YOLO {args.yolo_images}", None
    else:
        gt_of = cava_boxes(args.folder, args.split)
        images = sorted(gt_of)
        source = f"CAVA {args.folder / 'boxes.csv'} split {args.split}"
    if args.limit:
        images = images[: args.limit]

    detector = get_detector("animeface")
    n_gt = n_det = tp = unreadable = 0
    detect_s = 0.0
    for path in images:
        decoded = decode_image(path.read_bytes())
        if not decoded.ok:  # counted, and its GT boxes still count as missed
            unreadable += 1
        t0 = time.perf_counter()
        found = [(d.x1, d.y1, d.x2, d.y2) for d in detector.detect(decoded.image)] if decoded.ok else []
        detect_s += time.perf_counter() - t0
        gt = (
            gt_of[path]
            if gt_of is not None
            else yolo_boxes(args.yolo_labels / f"{path.stem}.txt", decoded.width, decoded.height)
        )
        n_gt, n_det, tp = n_gt + len(gt), n_det + len(found), tp + match(gt, found, args.iou)

    recall = tp / n_gt if n_gt else 0.0
    precision = tp / n_det if n_det else 0.0
    print(f"source: {source} ({detector.model_id})")
    print(
        f"images: {len(images)} (unreadable {unreadable}); detection {detect_s:.1f} s = "
        f"{len(images) / detect_s if detect_s else 0:.2f} images/s"
    )
    print(f"GT boxes: {n_gt}  detections: {n_det}  true positives: {tp}")
    print(f"recall@IoU{args.iou}: {recall:.3f}  precision@IoU{args.iou}: {precision:.3f}")
    print(
        json.dumps(
            {
                "source": source,
                "model_id": detector.model_id,
                "images": len(images),
                "unreadable": unreadable,
                "gt_boxes": n_gt,
                "detections": n_det,
                "true_positives": tp,
                "iou": args.iou,
                "recall": round(recall, 4),
                "precision": round(precision, 4),
                "detect_seconds": round(detect_s, 2),
            }
        )
    )


if __name__ == "__main__":
    main()
