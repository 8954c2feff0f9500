import csv

import cv2
import pytest

from models.crop import cut, enlarged_box
from pipeline.quality import gate, sharpness
from tests.conftest import CAVA_DEXTER


def real_crops(limit=30):
    """Faces of the CAVA Dexter's Laboratory val frames, cut at the paper's enlarged rate 1.0."""
    with open(CAVA_DEXTER / "boxes.csv") as f:
        rows = [r for r in csv.DictReader(f) if r["split"] == "val"][:limit]
    for r in rows:
        image = cv2.imread(str(CAVA_DEXTER / r["image"]))
        box = enlarged_box(tuple(float(r[k]) for k in ("x1", "y1", "x2", "y2")), image.shape[1], image.shape[0], 1.0)
        yield cut(image, box)


@pytest.mark.shared_data
def test_real_crops_pass_and_their_blurred_copies_fail():
    crops = [c for c in real_crops() if min(c.shape[:2]) >= 100]
    assert len(crops) >= 10
    sharp = [sharpness(c) for c in crops]
    blurred = [sharpness(cv2.GaussianBlur(c, (0, 0), 6)) for c in crops]
    assert sum(s >= 30 for s in sharp) >= 0.8 * len(crops)
    assert all(b < 30 for b in blurred)
    assert all(gate(b, *c.shape[1::-1]) == "blurry" for b, c in zip(blurred, crops))


@pytest.mark.shared_data
def test_sharpness_is_measured_at_256_pixels_so_scale_barely_matters():
    crop = next(c for c in real_crops() if min(c.shape[:2]) >= 150)
    doubled = cv2.resize(crop, None, fx=2, fy=2, interpolation=cv2.INTER_CUBIC)
    assert sharpness(doubled) == pytest.approx(sharpness(crop), rel=0.35)


def test_resolution_rule_uses_the_shorter_side():
    assert gate(500.0, 300, 99) == "low_resolution"
    assert gate(500.0, 100, 100) is None
    assert gate(29.9, 400, 400) == "blurry"
    assert gate(30.0, 400, 400) is None
    assert gate(10.0, 50, 50) == "low_resolution"  # resolution is judged first
