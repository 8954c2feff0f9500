"""COCO-style AP, checked against pycocotools (an independent implementation) on the same detections."""

from __future__ import annotations

import contextlib
import io

import numpy as np
import pytest

from models.det_data import read_yolo
from models.det_metrics import (
    AREA_RANGES,
    ap_by_area,
    average_precision,
    box_iou,
    held_out_operating_point,
    operating_point,
)
from tests.conftest import SHARED

ICF = SHARED / "data" / "icartoonface_det"


def real_ground_truth(n: int = 60) -> list[np.ndarray]:
    items = read_yolo(ICF / "images" / "val", ICF / "labels" / "val")[:n]
    return [item.load()[1].astype(np.float64) for item in items]


def noisy_detections(gts: list[np.ndarray], seed: int) -> list[np.ndarray]:
    """Plausible detector output: jittered copies of most faces (some twice), misses, false alarms."""
    rng = np.random.default_rng(seed)
    out = []
    for g in gts:
        rows = []
        for box in g:
            w, h = box[2] - box[0], box[3] - box[1]
            for _ in range(rng.choice([0, 1, 1, 1, 2])):
                jitter = rng.normal(0, 0.12, 4) * [w, h, w, h]
                rows.append([*(box + jitter), rng.uniform(0.2, 1.0)])
        for _ in range(rng.integers(0, 4)):
            x, y = rng.uniform(0, 500, 2)
            s = rng.uniform(20, 150)
            rows.append([x, y, x + s, y + s, rng.uniform(0.0, 0.7)])
        d = np.asarray(rows, np.float64).reshape(-1, 5)
        d[:, 2:4] = np.maximum(d[:, 2:4], d[:, 0:2] + 1)
        out.append(d)
    return out


def pycocotools_ap(dets: list[np.ndarray], gts: list[np.ndarray], area_range=None) -> tuple[float, float, float]:
    # pycocotools: heavy and optional (a test extra), imported only by the tests that compare with it
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    images, anns, results = [], [], []
    for i, (d, g) in enumerate(zip(dets, gts)):
        images.append({"id": i, "width": 10000, "height": 10000})
        for x1, y1, x2, y2 in g:
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": i,
                    "category_id": 1,
                    "iscrowd": 0,
                    "bbox": [x1, y1, x2 - x1, y2 - y1],
                    "area": (x2 - x1) * (y2 - y1),
                }
            )
        for x1, y1, x2, y2, s in d:
            results.append({"image_id": i, "category_id": 1, "bbox": [x1, y1, x2 - x1, y2 - y1], "score": s})
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = {"info": {}, "images": images, "annotations": anns, "categories": [{"id": 1, "name": "face"}]}
        coco.createIndex()
        ev = COCOeval(coco, coco.loadRes(results), "bbox")
        if area_range is not None:  # scored as the only area range
            ev.params.areaRng = [[area_range[0], min(area_range[1], 1e10)]]
            ev.params.areaRngLbl = ["chosen"]
        ev.evaluate()
        ev.accumulate()
    # eval["precision"]: (IoU, recall point, class, area range, max dets); -1 where undefined
    precision = ev.eval["precision"][:, :, 0, 0, -1]
    ap_per_iou = [float(p[p > -1].mean()) for p in precision]
    recall50 = float(ev.eval["recall"][0, 0, 0, -1])
    return float(np.mean(ap_per_iou)), ap_per_iou[0], recall50


@pytest.mark.shared_data
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ap_matches_pycocotools_on_real_boxes(seed):
    gts = real_ground_truth()
    dets = noisy_detections(gts, seed)
    ours = average_precision(dets, gts)
    ap, ap50, recall50 = pycocotools_ap(dets, gts)
    assert 0.2 < ours["ap50"] < 0.99  # a non-trivial case
    assert ours["ap50"] == pytest.approx(ap50, abs=1e-9)
    assert ours["ap"] == pytest.approx(ap, abs=1e-9)
    assert ours["recall"] == pytest.approx(recall50, abs=1e-9)


@pytest.mark.shared_data
@pytest.mark.parametrize("area", ["small", "medium", "large", "gate"])
def test_ap_per_face_size_matches_pycocotools_area_ranges(area):
    gts = real_ground_truth(120)
    dets = noisy_detections(gts, seed=3)
    ours = ap_by_area(dets, gts)[area]
    ap, ap50, recall50 = pycocotools_ap(dets, gts, AREA_RANGES[area])
    assert ours["faces"] > 20  # each size has faces among these real boxes
    assert ours["ap50"] == pytest.approx(ap50, abs=1e-9)
    assert ours["ap"] == pytest.approx(ap, abs=1e-9)
    assert ours["recall"] == pytest.approx(recall50, abs=1e-9)


def test_a_detection_of_a_face_outside_the_size_range_is_neither_right_nor_wrong():
    small, large = [0, 0, 20, 20], [100, 100, 300, 300]
    gts = [np.array([small, large], float)]
    dets = [np.array([[*small, 0.9], [*large, 0.8], [400, 400, 420, 420, 0.95]])]  # last: a small false alarm
    assert average_precision(dets, gts)["ap50"] < 1  # the false alarm outranks both faces
    by_area = ap_by_area(dets, gts)
    assert by_area["large"]["ap50"] == pytest.approx(1.0) and by_area["large"]["faces"] == 1
    assert by_area["small"]["ap50"] < 1 and by_area["small"]["faces"] == 1
    only_large = ap_by_area(dets, [np.array([large], float)])
    assert only_large["small"]["faces"] == 0 and only_large["small"]["ap50"] is None  # JSON null, not NaN


@pytest.mark.shared_data
def test_perfect_and_empty_detectors():
    gts = real_ground_truth(20)
    perfect = [np.hstack([g, np.ones((len(g), 1))]) for g in gts]
    r = average_precision(perfect, gts)
    assert r["ap50"] == pytest.approx(1.0) and r["ap"] == pytest.approx(1.0) and r["recall"] == 1.0
    none = [np.zeros((0, 5)) for _ in gts]
    assert average_precision(none, gts)["ap50"] == 0.0
    op = operating_point(perfect, gts, threshold=0.5)
    assert op["precision_at_threshold"] == 1.0 and op["recall_at_threshold"] == 1.0


def test_held_out_threshold_is_chosen_on_the_other_half():
    face = np.array([[0, 0, 10, 10]], float)
    # even images: the face at 0.9 and a false positive at 0.6 -> their best threshold is above 0.6
    even = [np.array([[0, 0, 10, 10, 0.9], [50, 50, 60, 60, 0.6]])]
    # odd images: the face at 0.5 only -> any threshold up to 0.5 is perfect there
    odd = [np.array([[0, 0, 10, 10, 0.5]])]
    dets = [even[0], odd[0], even[0], odd[0]]
    result = held_out_operating_point(dets, [face] * 4)
    assert result["thresholds"] == [0.65, 0.05]  # ties go to the lower threshold
    # 0.65 on the odd images finds nothing; 0.05 on the even ones finds both faces and both false positives
    assert result["precision"] == 0.5 and result["recall"] == 0.5


def test_operating_point_counts_only_detections_above_threshold():
    gt = [np.array([[0, 0, 10, 10], [20, 20, 30, 30]], float)]
    det = [np.array([[0, 0, 10, 10, 0.9], [50, 50, 60, 60, 0.8], [20, 20, 30, 30, 0.3]])]
    op = operating_point(det, gt, threshold=0.5)
    assert op["precision_at_threshold"] == 0.5 and op["recall_at_threshold"] == 0.5
    assert box_iou(np.array([[0, 0, 10, 10.0]]), np.array([[5, 0, 15, 10.0]]))[0, 0] == pytest.approx(1 / 3)
