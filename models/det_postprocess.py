"""The detector's batched post-processing: torchvision's ``RetinaNet.postprocess_detections`` for a whole
letterboxed batch at once, as tensor operations on the model's device with no per-image Python loop.

Per pyramid level the scores above the threshold are cut to the top-k, decoded against the anchors that
every image of the batch shares, clipped, and then one NMS covers every image and class (kept apart by
shifting each group to its own region of the plane), capped per image. ``models.detector`` runs it after
the network; a test checks it returns exactly what torchvision returns for the same head outputs.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torchvision.models.detection import _utils as det_utils
from torchvision.ops import boxes as box_ops

# torchvision's inference defaults, kept so the fast path can be compared with the stock forward.
CANDIDATE_SCORE = 0.05
NMS_IOU = 0.5
TOPK_CANDIDATES = 1000
DETECTIONS_PER_IMAGE = 300
# RetinaNet's own box coder (RetinaNet.box_coder is built with these weights).
BOX_CODER = det_utils.BoxCoder(weights=(1.0, 1.0, 1.0, 1.0))


def _level_candidates(
    cls_logits: torch.Tensor,
    bbox_regression: torch.Tensor,
    anchors: torch.Tensor,
    score_thresh: float,
    topk_candidates: int,
) -> tuple[torch.Tensor, ...]:
    """One pyramid level of a batch: (boxes (N, k, 4), scores, labels, valid (N, k)) of each image's top-k
    candidates, decoded from the level's logits (N, A_l, C), regressions (N, A_l, 4) and anchors (A_l, 4)."""
    n, _, num_classes = cls_logits.shape
    scores = torch.sigmoid(cls_logits.float().reshape(n, -1))  # (N, A_l * C)
    regression = bbox_regression.float()
    k = min(topk_candidates, scores.shape[1])
    # Entries at or below the threshold are pushed under every real score, so top-k picks the
    # same set torchvision picks after its filter; they are masked out again by `valid`.
    masked = torch.where(scores > score_thresh, scores, torch.full_like(scores, -1.0))
    top_scores, top_idx = masked.topk(k, dim=1)
    anchor_idx = torch.div(top_idx, num_classes, rounding_mode="floor")
    labels = top_idx % num_classes
    reg = torch.gather(regression, 1, anchor_idx.unsqueeze(-1).expand(-1, -1, 4))
    boxes = BOX_CODER.decode_single(reg.reshape(-1, 4), anchors[anchor_idx.reshape(-1)]).reshape(n, k, 4)
    return boxes, top_scores, labels, top_scores > score_thresh


def _batched_nms(
    boxes: torch.Tensor,
    scores: torch.Tensor,
    labels: torch.Tensor,
    image_idx: torch.Tensor,
    n: int,
    num_classes: int,
    nms_thresh: float,
    detections_per_img: int,
) -> list[torch.Tensor]:
    """NMS per image and class, then the cap per image, for candidates of ``n`` images at once; per image a
    (K, 6) tensor [x1, y1, x2, y2, score, label] sorted by score."""
    device = boxes.device
    # One NMS for the whole batch: shift each (image, class) group to its own region of the plane.
    group = image_idx * num_classes + labels
    offsets = group.to(boxes.dtype) * (boxes.max() + 1)
    keep = box_ops.nms(boxes + offsets[:, None], scores, nms_thresh)  # sorted by score
    kept_image = image_idx[keep]
    order = torch.argsort(kept_image, stable=True)  # by image, score order kept
    keep, kept_image = keep[order], kept_image[order]
    counts = torch.bincount(kept_image, minlength=n)
    first = torch.cumsum(counts, 0) - counts
    rank = torch.arange(len(keep), device=device) - first[kept_image]
    capped = rank < detections_per_img
    keep, kept_image = keep[capped], kept_image[capped]
    rows = torch.cat([boxes[keep], scores[keep, None], labels[keep, None].to(boxes.dtype)], 1)
    per_image = torch.bincount(kept_image, minlength=n).tolist()
    return list(torch.split(rows, per_image))


@torch.no_grad()
def batched_postprocess(
    cls_logits: torch.Tensor,
    bbox_regression: torch.Tensor,
    anchors: torch.Tensor,
    level_sizes_: Sequence[int],
    image_size: tuple[int, int],
    *,
    score_thresh: float = CANDIDATE_SCORE,
    nms_thresh: float = NMS_IOU,
    topk_candidates: int = TOPK_CANDIDATES,
    detections_per_img: int = DETECTIONS_PER_IMAGE,
) -> list[torch.Tensor]:
    """torchvision's ``RetinaNet.postprocess_detections`` for a whole batch at once.

    cls_logits (N, A, C), bbox_regression (N, A, 4), anchors (A, 4) shared by every image. Returns per
    image a (K, 6) tensor [x1, y1, x2, y2, score, label], sorted by score, in letterboxed pixels.
    Same steps as torchvision (per level: scores > threshold, top-k; decode; clip; NMS per image and
    class; cap), but each step covers every image in one tensor operation and NMS runs once over the
    batch, images kept apart by the coordinate-offset trick.
    """
    n, _, num_classes = cls_logits.shape
    device = cls_logits.device
    per_level = []
    start = 0
    for size_l in level_sizes_:
        level = slice(start, start + size_l)
        per_level.append(
            _level_candidates(
                cls_logits[:, level], bbox_regression[:, level], anchors[level], score_thresh, topk_candidates
            )
        )
        start += size_l
    boxes, scores, labels, valid = (torch.cat(parts, 1) for parts in zip(*per_level))
    h, w = image_size
    boxes = torch.stack(
        [boxes[..., 0].clamp(0, w), boxes[..., 1].clamp(0, h), boxes[..., 2].clamp(0, w), boxes[..., 3].clamp(0, h)], -1
    )
    image_idx = torch.arange(n, device=device).unsqueeze(1).expand_as(scores)

    boxes, scores, labels, image_idx = boxes[valid], scores[valid], labels[valid], image_idx[valid]
    if scores.numel() == 0:
        return [torch.zeros((0, 6), device=device) for _ in range(n)]
    return _batched_nms(boxes, scores, labels, image_idx, n, num_classes, nms_thresh, detections_per_img)
