"""COCO-style average precision of a face detector on boxed images (pure numpy).

Figures (one class, every box counts, at most 100 detections per image as in COCO):
* ``ap50``: average precision at IoU 0.5 — COCO's 101-point interpolated AP (pycocotools ``AP@.50``).
* ``ap``: the mean over IoU 0.50, 0.55, ..., 0.95 (COCO's AP[.5:.95]).
* ``recall``: the share of faces matched at IoU 0.5 by any of the top 100 detections (COCO AR@100 at .5).
* ``precision_at_threshold`` / ``recall_at_threshold``: detections scoring >= the detector's operating
  threshold, greedily matched at IoU 0.5 — what the ingest flow actually keeps; ``threshold_sweep``
  gives the same at 0.1, 0.2, ..., 0.9.
* ``by_area``: ``ap50``, ``ap`` and ``recall`` per face size (``AREA_RANGES``: COCO's small, medium and
  large, and ``gate``, faces big enough for their crop to pass the 100 px gate), scored as pycocotools
  scores area ranges.

``average_precision`` follows pycocotools' matching and accumulation step for step (a test compares both
on the same detections), so figures here are comparable to published COCO-style numbers. ``evaluate``
runs any detect function over boxed images and scores it: the detector trainer validates with it, and
``toonface eval-detector`` (``pipeline.evaluate.detector``) reports it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import numpy as np

from models.det_data import BoxedImage

IOU_THRESHOLDS = np.linspace(0.5, 0.95, 10)
RECALL_POINTS = np.linspace(0.0, 1.0, 101)
MAX_DETECTIONS = 100
# Face sizes scored apart (box area in pixels², bounds included, as pycocotools' area ranges): COCO's
# small / medium / large, and "gate": faces at least the area of a 50 px square, the smallest whose
# crop at the enlarged rate 1.0 can pass the quality gate's 100 px. Smaller faces never reach a dataset.
AREA_RANGES = {
    "small": (0.0, 32.0**2),
    "medium": (32.0**2, 96.0**2),
    "large": (96.0**2, np.inf),
    "gate": (50.0**2, np.inf),
}


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of (N, 4) and (M, 4) x1y1x2y2 boxes, COCO's convention (areas are w * h, no +1)."""
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)))
    ix = np.clip(np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0, None)
    iy = np.clip(np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]), 0, None)
    inter = ix * iy
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def _match(iou: np.ndarray, threshold: float, gt_ignore: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Greedy COCO matching of score-sorted dets (rows of ``iou``) to gts (columns) at >= threshold.
    Returns (hit, on_ignored): a det matched a still unmatched gt; that gt is one ``gt_ignore`` marks
    (outside the area range being scored). As pycocotools, ignored gts are tried last, and only when
    the det has no match among the others."""
    n_dets, n_gts = iou.shape
    ignore = np.zeros(n_gts, bool) if gt_ignore is None else np.asarray(gt_ignore, bool)
    gt_order = np.argsort(ignore, kind="mergesort")
    taken = np.zeros(n_gts, bool)
    hit = np.zeros(n_dets, bool)
    on_ignored = np.zeros(n_dets, bool)
    for d in range(n_dets):
        best, best_iou = -1, min(threshold, 1 - 1e-10)
        for g in gt_order:
            if taken[g]:
                continue
            if best >= 0 and not ignore[best] and ignore[g]:
                break
            if iou[d, g] < best_iou:
                continue
            best, best_iou = g, iou[d, g]
        if best >= 0:
            taken[best] = True
            hit[d] = True
            on_ignored[d] = ignore[best]
    return hit, on_ignored


def _area(boxes: np.ndarray) -> np.ndarray:
    return (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])


def average_precision(
    detections: Sequence[np.ndarray], ground_truth: Sequence[np.ndarray], area_range: tuple[float, float] | None = None
) -> dict:
    """COCO AP per IoU threshold, and the number of faces scored. detections[i]: (K, 5)
    [x1,y1,x2,y2,score]; ground_truth[i]: (G, 4).

    With ``area_range`` (lo, hi) in pixels², scored as pycocotools scores an area range: faces whose
    box area is outside it are ignored (a detection of one is neither right nor wrong), and so are
    unmatched detections outside it; AP and recall are then over the faces inside."""
    lo, hi = area_range if area_range is not None else (-np.inf, np.inf)
    per_threshold = []
    recall_at = []
    sorted_dets, gts = [], []
    for d, g in zip(detections, ground_truth):
        d = np.asarray(d, np.float64).reshape(-1, 5)
        sorted_dets.append(d[np.argsort(-d[:, 4], kind="mergesort")][:MAX_DETECTIONS])
        gts.append(np.asarray(g, np.float64).reshape(-1, 4))
    gt_ignore = [(_area(g) < lo) | (_area(g) > hi) for g in gts]
    det_outside = np.concatenate([(_area(d) < lo) | (_area(d) > hi) for d in sorted_dets]) if gts else np.zeros(0, bool)
    n_gt = int(sum((~ig).sum() for ig in gt_ignore))
    scores = np.concatenate([d[:, 4] for d in sorted_dets]) if sorted_dets else np.zeros(0)
    order = np.argsort(-scores, kind="mergesort")
    ious = [box_iou(d[:, :4], g) for d, g in zip(sorted_dets, gts)]
    for t in IOU_THRESHOLDS:
        matched = [_match(iou, t, ig) for iou, ig in zip(ious, gt_ignore)]
        hits = np.concatenate([h for h, _ in matched]) if matched else np.zeros(0, bool)
        ignored = np.concatenate([i for _, i in matched]) if matched else np.zeros(0, bool)
        ignored = ignored | (~hits & det_outside)
        hits, ignored = hits[order], ignored[order]
        tp = np.cumsum(hits & ~ignored)
        fp = np.cumsum(~hits & ~ignored)
        if n_gt == 0:
            per_threshold.append(float("nan"))
            recall_at.append(float("nan"))
            continue
        rc = tp / n_gt
        pr = tp / np.maximum(tp + fp, np.spacing(1))
        for i in range(len(pr) - 1, 0, -1):  # precision envelope, right to left
            if pr[i] > pr[i - 1]:
                pr[i - 1] = pr[i]
        q = np.zeros(len(RECALL_POINTS))
        idx = np.searchsorted(rc, RECALL_POINTS, side="left")
        ok = idx < len(pr)
        q[ok] = pr[idx[ok]]
        per_threshold.append(float(q.mean()))
        recall_at.append(float(rc[-1]) if len(rc) else 0.0)
    return {
        "faces": n_gt,
        "ap50": per_threshold[0],
        "ap75": per_threshold[5],
        "ap": float(np.mean(per_threshold)),
        "recall": recall_at[0],
        "ap_per_iou": dict(zip([f"{t:.2f}" for t in IOU_THRESHOLDS], per_threshold)),
    }


def ap_by_area(detections: Sequence[np.ndarray], ground_truth: Sequence[np.ndarray]) -> dict:
    """AP50, AP and recall (IoU 0.5) per ``AREA_RANGES`` entry, with the number of faces in each."""
    out = {}
    for name, (lo, hi) in AREA_RANGES.items():
        r = average_precision(detections, ground_truth, (lo, hi))
        out[name] = {
            "area_px2": [lo, hi if np.isfinite(hi) else None],
            "faces": r["faces"],
            **{k: r[k] if r["faces"] else None for k in ("ap50", "ap", "recall")},
        }  # None: no face this size
    return out


def _counts(
    detections: Sequence[np.ndarray], ground_truth: Sequence[np.ndarray], threshold: float
) -> tuple[int, int, int]:
    """(true positives at IoU 0.5, detections, labelled faces) counting detections scored >= threshold."""
    tp = n_det = 0
    for d, g in zip(detections, ground_truth):
        d = np.asarray(d, np.float64).reshape(-1, 5)
        d = d[d[:, 4] >= threshold]
        d = d[np.argsort(-d[:, 4], kind="mergesort")]
        tp += int(_match(box_iou(d[:, :4], np.asarray(g, np.float64).reshape(-1, 4)), 0.5)[0].sum())
        n_det += len(d)
    return tp, n_det, int(sum(len(g) for g in ground_truth))


def operating_point(detections: Sequence[np.ndarray], ground_truth: Sequence[np.ndarray], threshold: float) -> dict:
    tp, n_det, n_gt = _counts(detections, ground_truth, threshold)
    return {
        "threshold": threshold,
        "precision_at_threshold": tp / n_det if n_det else 0.0,
        "recall_at_threshold": tp / n_gt if n_gt else 0.0,
        "detections_at_threshold": n_det,
    }


def _f1(tp: int, n_det: int, n_gt: int) -> float:
    return 2 * tp / (n_det + n_gt) if n_det + n_gt else 0.0


def held_out_operating_point(
    detections: Sequence[np.ndarray],
    ground_truth: Sequence[np.ndarray],
    grid: Sequence[float] = tuple(np.round(np.arange(0.05, 0.96, 0.05), 2)),
) -> dict:
    """Precision and recall at a threshold chosen on *other* images: the images are split in two
    halves (even and odd positions); on each half the best-F1 threshold of ``grid`` is chosen, and
    precision/recall are counted on the other half with it. Both halves pooled give an estimate of
    how a threshold picked this way does on unseen images, which a threshold chosen and reported on
    the same images overstates."""
    halves = [list(range(0, len(ground_truth), 2)), list(range(1, len(ground_truth), 2))]
    tp = n_det = n_gt = 0
    chosen = []
    for pick, score in (halves, halves[::-1]):
        pick_d, pick_g = [detections[i] for i in pick], [ground_truth[i] for i in pick]
        t = max(grid, key=lambda g: (_f1(*_counts(pick_d, pick_g, g)), -g))  # ties: the lower one
        chosen.append(float(t))
        counts = _counts([detections[i] for i in score], [ground_truth[i] for i in score], t)
        tp, n_det, n_gt = tp + counts[0], n_det + counts[1], n_gt + counts[2]
    return {"thresholds": chosen, "precision": tp / n_det if n_det else 0.0, "recall": tp / n_gt if n_gt else 0.0}


DetectFn = Callable[[list[np.ndarray]], list[np.ndarray]]


def evaluate(detect: DetectFn, images: Sequence[BoxedImage], threshold: float, batch_size: int = 16) -> dict:
    """Run ``detect`` over the images (batches of BGR arrays -> (K, 5) arrays) and score it."""
    dets, gts, unreadable = [], [], []
    seconds = 0.0
    for i in range(0, len(images), batch_size):
        loaded = []
        for item in images[i : i + batch_size]:
            try:
                loaded.append(item.load())
            except ValueError as e:
                unreadable.append(str(e))
        if not loaded:
            continue
        t0 = time.perf_counter()
        found = detect([img for img, _ in loaded])
        seconds += time.perf_counter() - t0
        dets.extend(found)
        gts.extend(boxes for _, boxes in loaded)
    out = {"images": len(gts), "detections": int(sum(len(d) for d in dets))}
    out.update(average_precision(dets, gts))  # with "faces", the number of labelled faces
    out["by_area"] = ap_by_area(dets, gts)
    out.update(operating_point(dets, gts, threshold))
    # How precision and recall trade off, to choose an operating threshold.
    out["threshold_sweep"] = [
        {k: round(v, 4) if isinstance(v, float) else v for k, v in operating_point(dets, gts, round(t, 2)).items()}
        for t in np.arange(0.1, 0.95, 0.1)
    ]
    out["held_out_threshold"] = held_out_operating_point(dets, gts)
    out["images_per_s"] = len(gts) / seconds if seconds else None
    if unreadable:
        out["unreadable"] = unreadable
    return out
