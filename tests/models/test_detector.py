"""The RetinaNet detector: batched post-processing equals torchvision's, files round-trip, shipped weights work."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from models.det_data import read_cava, read_yolo
from models.det_metrics import box_iou
from models.detector import (
    BACKBONES,
    FaceDetector,
    anchors_for,
    batched_postprocess,
    build_retinanet,
    head_outputs,
    init_from_embedder,
    letterbox,
    level_sizes,
    load_detector,
    normalise,
    save_detector,
    to_tensor,
)
from pipeline.detect import DEFAULT_DETECTOR_WEIGHTS
from tests.conftest import CAVA_DEXTER, PROJECT, SHARED

ICF = SHARED / "data" / "icartoonface_det"
SIZE = 256


def torchvision_reference(model, cls_logits, bbox_regression, anchors, levels, n):
    """What torchvision's RetinaNet.forward does after the heads, per image."""
    split = {
        "cls_logits": list(cls_logits.split(levels, dim=1)),
        "bbox_regression": list(bbox_regression.split(levels, dim=1)),
    }
    per_image_anchors = [list(anchors.split(levels)) for _ in range(n)]
    return model.postprocess_detections(split, per_image_anchors, [(SIZE, SIZE)] * n)


def canonical(boxes: torch.Tensor, scores: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Rows [x1, y1, x2, y2, score, label] by score (desc), ties broken by the box: one defined order."""
    rows = torch.cat([boxes, scores[:, None], labels[:, None].to(boxes.dtype)], 1)
    a = rows.numpy()
    return rows[np.lexsort((a[:, 3], a[:, 2], a[:, 1], a[:, 0], -a[:, 4]))]


def assert_same(ours: list[torch.Tensor], reference: list[dict]):
    assert len(ours) == len(reference)
    for mine, ref in zip(ours, reference):
        assert len(mine) == len(ref["scores"])
        mine = canonical(mine[:, :4], mine[:, 4], mine[:, 5])
        theirs = canonical(ref["boxes"], ref["scores"], ref["labels"])
        torch.testing.assert_close(mine[:, :4], theirs[:, :4], rtol=0, atol=1e-4)
        torch.testing.assert_close(mine[:, 4:], theirs[:, 4:], rtol=0, atol=1e-6)


@pytest.mark.parametrize("num_classes", [1, 3])
def test_batched_postprocess_equals_torchvision(num_classes):
    torch.manual_seed(0)
    model = build_retinanet("resnet18", SIZE).eval()
    x = torch.zeros(1, 3, SIZE, SIZE)
    _, features = head_outputs(model, x)
    anchors = anchors_for(model, x, features)
    levels = level_sizes(features, 9)
    n = 5
    # Head outputs of every kind: confident, borderline and hopeless anchors; up to the per-level top-k
    # and the 300-per-image cap (image 0 is saturated), and an image with nothing above threshold.
    logits = torch.randn(n, len(anchors), num_classes) * 2 - 2
    logits[0] += 3  # not more: float32 sigmoid saturates at 1.0 and ties have no defined order
    logits[1] -= 7
    logits[3] = -10
    regression = torch.randn(n, len(anchors), 4) * 0.3
    ours = batched_postprocess(logits, regression, anchors, levels, (SIZE, SIZE))
    reference = torchvision_reference(model, logits, regression, anchors, levels, n)
    assert len(ours[0]) == 300 and len(ours[3]) == 0 and 0 < len(ours[1]) < 300
    assert_same(ours, reference)


@pytest.mark.shared_data
def test_fast_forward_equals_stock_torchvision_forward():
    """The whole fast path (uint8 batch -> normalise -> heads -> batched post-processing) against the
    stock model's own forward on the same letterboxed images, with the shipped weights."""
    det = load_detector(DEFAULT_DETECTOR_WEIGHTS, precision="fp32")
    items = read_yolo(ICF / "images" / "val", ICF / "labels" / "val")[:4]
    batch = np.stack([letterbox(item.load()[0], det.size)[0] for item in items])
    ours = det.forward_letterboxed(to_tensor(batch))
    stock = det.model.eval()([torch.from_numpy(b).permute(2, 0, 1).float() / 255 for b in batch])
    assert sum(len(o) for o in ours) > 0
    for mine, ref in zip(ours, stock):
        # Same network on inputs normalised in a different float order: compare the confident boxes.
        keep = ref["scores"] > 0.1
        m = mine[mine[:, 4] > 0.1]
        assert len(m) == int(keep.sum())
        torch.testing.assert_close(m[:, :4], ref["boxes"][keep], rtol=0, atol=0.05)
        torch.testing.assert_close(m[:, 4], ref["scores"][keep], rtol=0, atol=1e-3)


@pytest.mark.shared_data
def test_folding_the_norms_into_the_convolutions_changes_nothing_but_rounding():
    """load_detector folds the body's BatchNorms into its convolutions for inference; the network with
    its norms (as stored and trained) gives the same head outputs on real val images."""
    folded = load_detector(DEFAULT_DETECTOR_WEIGHTS, precision="fp32")
    stored = load_detector(DEFAULT_DETECTOR_WEIGHTS, precision="fp32", fold_norms=False)
    norms = lambda det: sum(isinstance(m, torch.nn.BatchNorm2d) for m in det.model.modules())  # noqa: E731
    assert norms(folded) == 0 and norms(stored) == 20  # ResNet-18: the stem, 16 in the blocks, 3 shortcuts
    assert folded.model_id == stored.model_id  # the same weights file, the same model
    items = read_yolo(ICF / "images" / "val", ICF / "labels" / "val")[:4]
    batch = to_tensor(np.stack([letterbox(item.load()[0], folded.size)[0] for item in items]))
    a, b = folded.network_outputs(batch)[0], stored.network_outputs(batch)[0]
    torch.testing.assert_close(a["cls_logits"], b["cls_logits"], rtol=0, atol=2e-3)
    torch.testing.assert_close(a["bbox_regression"], b["bbox_regression"], rtol=0, atol=2e-3)
    for x, y in zip(folded.forward_letterboxed(batch), stored.forward_letterboxed(batch)):
        x, y = x[x[:, 4] > 0.1], y[y[:, 4] > 0.1]
        assert len(x) == len(y)
        torch.testing.assert_close(x[:, :5], y[:, :5], rtol=0, atol=0.01)


@pytest.mark.shared_data
def test_bf16_finds_the_same_faces_as_fp32():
    """bf16 (what "auto" runs on CUDA and on CPUs with native bf16; forced here, so any CPU checks it)
    moves boxes and scores a little and nothing more, on real val images."""
    items = read_yolo(ICF / "images" / "val", ICF / "labels" / "val")[:8]
    images = [item.load()[0] for item in items]
    fp32 = load_detector(DEFAULT_DETECTOR_WEIGHTS, precision="fp32")
    bf16 = load_detector(DEFAULT_DETECTOR_WEIGHTS, precision="bf16")
    assert (fp32.precision, bf16.precision) == ("fp32", "bf16") and fp32.model_id == bf16.model_id
    overlaps = []
    for a, b in zip(
        fp32.detect_many(images, batch_size=8, score_threshold=0.3),
        bf16.detect_many(images, batch_size=8, score_threshold=0.3),
    ):
        a = a[a[:, 4] >= 0.5]
        if len(a):
            iou = box_iou(a[:, :4], b[:, :4])
            best = iou.argmax(1)
            overlaps += iou[np.arange(len(a)), best].tolist()
            assert np.abs(a[:, 4] - b[best, 4]).max() < 0.05
    overlaps = np.asarray(overlaps)
    assert len(overlaps) >= 4 and overlaps.min() >= 0.5  # every confident face found again
    assert (overlaps >= 0.9).mean() >= 0.9, overlaps  # nearly all in the same place


@pytest.mark.shared_data
def test_shipped_weights_find_the_faces_of_real_val_images():
    # CAVA val frames: shows whose val frames were never trained on (recall at the threshold ~0.7).
    det = load_detector(DEFAULT_DETECTOR_WEIGHTS)
    assert det.model_id.startswith("retinanet-")
    # A training run's own recipe, or the mean of several files' (average-detector), which may be means too.
    recipes, trained = [det.meta["recipe"]], []
    while recipes:
        recipe = recipes.pop()
        if "average_of" in recipe:
            recipes += [part["recipe"] for part in recipe["average_of"]]
        else:
            trained.append(recipe)
    assert trained and all(r["steps"] > 0 for r in trained)
    items = read_cava(CAVA_DEXTER / "boxes.csv", split="val")[:12]
    loaded = [item.load() for item in items]
    found = det.detect_many([img for img, _ in loaded], batch_size=4)
    matched = total = 0
    for (img, gt), boxes in zip(loaded, found):
        h, w = img.shape[:2]
        assert boxes.shape[1] == 5 and (boxes[:, 4] >= det.score_threshold).all()
        assert (boxes[:, [0, 2]] <= w).all() and (boxes[:, [1, 3]] <= h).all()  # original pixels
        if len(boxes):
            matched += int((box_iou(gt, boxes[:, :4]).max(1) >= 0.5).sum())
        total += len(gt)
    assert matched >= total // 2, (matched, total)


@pytest.mark.shared_data
def test_boxes_come_back_in_original_pixels():
    det = load_detector(DEFAULT_DETECTOR_WEIGHTS)
    img = read_yolo(ICF / "images" / "val", ICF / "labels" / "val")[1].load()[0]
    big = np.ascontiguousarray(np.repeat(np.repeat(img, 2, 0), 2, 1))  # the same picture at twice the size
    small_boxes, big_boxes = det.detect_many([img, big], batch_size=2, score_threshold=0.1)
    small_boxes = small_boxes[:5]  # the most confident ones
    assert len(small_boxes) > 0
    iou = box_iou(small_boxes[:, :4] * 2, big_boxes[:, :4])
    assert iou.max(1).min() > 0.8


@pytest.mark.shared_data
def test_another_input_size_is_part_of_the_model_id_and_finds_the_same_faces():
    stored = load_detector(DEFAULT_DETECTOR_WEIGHTS)
    larger = load_detector(DEFAULT_DETECTOR_WEIGHTS, size=stored.size + 128)
    same = load_detector(DEFAULT_DETECTOR_WEIGHTS, size=stored.size)
    assert larger.size == stored.size + 128 and larger.model_id == f"{stored.model_id}-{larger.size}px"
    assert same.model_id == stored.model_id  # asking for the stored size is the stored model
    items = read_cava(CAVA_DEXTER / "boxes.csv", split="val")[:6]
    images = [item.load()[0] for item in items]
    at_stored = stored.detect_many(images, batch_size=2)
    at_larger = larger.detect_many(images, batch_size=2)
    confident = [b[b[:, 4] >= 0.6] for b in at_stored]
    assert sum(len(b) for b in confident) >= 3
    for img, a, b in zip(images, confident, at_larger):
        h, w = img.shape[:2]
        assert (b[:, [0, 2]] <= w).all() and (b[:, [1, 3]] <= h).all()  # still the original pixels
        if len(a):  # every confident face at the stored size is found at the larger one too
            assert len(b) and box_iou(a[:, :4], b[:, :4]).max(1).min() > 0.5
    for bad in (100, 4096, 500):
        with pytest.raises(ValueError, match="multiple of 32"):
            load_detector(DEFAULT_DETECTOR_WEIGHTS, size=bad)


def test_save_load_round_trip_keeps_the_id(tmp_path):
    torch.manual_seed(1)
    model = build_retinanet("resnet18", SIZE)
    path = save_detector(
        model,
        tmp_path / "d.safetensors",
        backbone="resnet18",
        size=SIZE,
        score_threshold=0.4,
        meta={"recipe": {"epochs": 0}},
    )
    a = load_detector(path, fold_norms=False)  # as stored: a detector folded for inference cannot be saved
    save_detector(
        a.model,
        tmp_path / "e.safetensors",
        backbone="resnet18",
        size=SIZE,
        score_threshold=0.4,
        meta={"note": "re-saved"},
    )
    with pytest.raises(ValueError, match="fold_norms=False"):
        save_detector(
            load_detector(path).model, tmp_path / "f.safetensors", backbone="resnet18", size=SIZE, score_threshold=0.4
        )
    b = load_detector(tmp_path / "e.safetensors")
    assert a.model_id == b.model_id and a.score_threshold == 0.4 and a.size == SIZE
    with pytest.raises(ValueError, match="not a toonface detector"):
        load_detector(PROJECT / "models" / "weights" / "embedder.safetensors")


def test_both_backbones_build_and_the_embedder_seeds_resnet18():
    assert set(BACKBONES) == {"resnet18", "resnet50"}
    r50 = build_retinanet("resnet50", SIZE)
    assert r50.backbone.out_channels == 256
    r18 = build_retinanet("resnet18", SIZE)
    assert r18.backbone.out_channels == 128
    n = init_from_embedder(r18, PROJECT / "models" / "weights" / "embedder.safetensors")
    assert n > 100
    x = normalise(torch.zeros(1, 3, SIZE, SIZE, dtype=torch.uint8))
    assert len(list(r18.eval().backbone(x).values())) == 5  # P3-P7
    with pytest.raises(ValueError, match="unknown detector backbone"):
        build_retinanet("vgg", SIZE)


def test_letterbox_pads_to_a_fixed_square():
    out, scale = letterbox(np.full((100, 300), 7, np.uint8), 150)
    assert out.shape == (150, 150, 3) and scale == 0.5
    assert (out[:50] == 7).all() and (out[50:] != 7).all()
    assert isinstance(FaceDetector, type)
