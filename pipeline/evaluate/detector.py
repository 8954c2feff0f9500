"""Evaluate a face detector on boxed images (``toonface eval-detector``), COCO-style, as JSON.

    toonface eval-detector --images DIR (--yolo LABELS_DIR | --boxes FILE.csv|FILE.json [--split val])
                           [--detector retinanet|animeface] [--weights FILE.safetensors]

The detector is the one the pipeline runs (``pipeline.detect``: RetinaNet at its shipped weights, or any
registered name); the figures are ``models.det_metrics``' (COCO AP50, AP, recall, per face size, at the
operating threshold and a threshold sweep), comparable to published COCO-style numbers.
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np

from models.det_data import read_boxes_file, read_yolo
from models.det_metrics import DetectFn, evaluate
from models.detector import CANDIDATE_SCORE, load_detector
from models.precision import PRECISIONS, resolve_precision
from pipeline.detect import default_detector_weights, get_detector


def detector_fn(
    name: str,
    weights: str | None = None,
    device: str = "cpu",
    batch_size: int = 16,
    size: int = 0,
    precision: str = "auto",
) -> tuple[DetectFn, float, str]:
    """(detect function, operating threshold, model id) for a registered detector name; ``size`` 0 runs
    RetinaNet at its weights' own input size, in ``precision`` (models/precision.py)."""
    if name == "retinanet":
        det = load_detector(
            weights or default_detector_weights(), device=device, size=size or None, precision=precision
        )
        # AP needs the whole ranked list, so score everything above torchvision's candidate threshold.
        return (
            lambda imgs: det.detect_many(imgs, batch_size=batch_size, score_threshold=CANDIDATE_SCORE),
            det.score_threshold,
            det.model_id,
        )
    det = get_detector(name, size=size)

    def run(imgs):
        return [
            np.asarray([[d.x1, d.y1, d.x2, d.y2, d.score] for d in det.detect(img)], np.float32).reshape(-1, 5)
            for img in imgs
        ]

    return run, 0.0, det.model_id


def add_arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p.add_argument("--images", required=True, help="folder of images (paths in --boxes are relative to it)")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--yolo", metavar="LABELS_DIR", help="YOLO txt labels, one <image stem>.txt per image")
    g.add_argument("--boxes", metavar="FILE", help="CAVA-style boxes.csv or COCO .json")
    p.add_argument("--split", help="only rows of this split (CSV with a split column)")
    p.add_argument("--detector", default="retinanet", help="retinanet (default) or animeface")
    p.add_argument("--weights", help="detector weights (default: the shipped models/weights/detector.safetensors)")
    p.add_argument(
        "--size", type=int, default=0, help="RetinaNet letterbox side, a multiple of 32 (default: the weights' own)"
    )
    p.add_argument("--threshold", type=float, help="operating threshold (default: the detector's own)")
    p.add_argument("--device", default="cpu")
    p.add_argument(
        "--precision",
        choices=PRECISIONS,
        default="auto",
        help="auto: bf16 on CUDA and on CPUs that compute bf16 natively, else fp32 (RetinaNet)",
    )
    p.add_argument("--batch-size", type=int, default=16)
    return p


def run(args: argparse.Namespace) -> int:
    try:
        images = (
            read_yolo(args.images, args.yolo) if args.yolo else read_boxes_file(args.boxes, args.images, args.split)
        )
        detect, threshold, mid = detector_fn(
            args.detector, args.weights, args.device, args.batch_size, args.size, args.precision
        )
    except (ValueError, FileNotFoundError) as e:
        print(f"eval-detector: {e}", file=sys.stderr)
        return 2
    result = {
        "detector": args.detector,
        "model_id": mid,
        "precision": resolve_precision(args.precision, args.device) if args.detector == "retinanet" else None,
    }
    result.update(
        evaluate(detect, images, args.threshold if args.threshold is not None else threshold, args.batch_size)
    )
    print(json.dumps(result, indent=2))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="toonface eval-detector", description=__doc__.split("\n\n")[0])
    return run(add_arguments(parser).parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
