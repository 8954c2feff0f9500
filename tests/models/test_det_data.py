"""Box sources in the three formats, and the training augmentation's geometry."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from models.det_data import (
    BoxedImage,
    augment,
    letterbox_with_boxes,
    parse_source,
    read_boxes_file,
    read_cava,
    read_coco,
    read_yolo,
    restyle,
)
from tests.conftest import CAVA_DEXTER, SHARED

ICF = SHARED / "data" / "icartoonface_det"


@pytest.mark.shared_data
def test_yolo_val_set_reads_every_image_and_box():
    items = read_yolo(ICF / "images" / "val", ICF / "labels" / "val")
    assert len(items) == 200 and sum(len(i.boxes) for i in items) == 361
    img, boxes = items[0].load()
    h, w = img.shape[:2]
    # normalised centre/size became pixel corners inside the image
    assert boxes.shape[1] == 4 and (boxes[:, 2] > boxes[:, 0]).all()
    assert boxes[:, [0, 2]].max() <= w + 1 and boxes[:, [1, 3]].max() <= h + 1


@pytest.mark.shared_data
def test_cava_split_and_coco_give_the_same_pixels(tmp_path):
    val = read_cava(CAVA_DEXTER / "boxes.csv", split="val")
    assert len(val) == 200 and sum(len(i.boxes) for i in val) == 307
    assert parse_source(f"cava:{CAVA_DEXTER}:val") == val
    # The same boxes written as COCO JSON read back identically.
    doc = {"images": [], "annotations": [], "categories": [{"id": 1, "name": "face"}]}
    for n, item in enumerate(val[:20]):
        doc["images"].append({"id": n, "file_name": str(item.path.relative_to(CAVA_DEXTER))})
        for x1, y1, x2, y2 in item.boxes:
            doc["annotations"].append(
                {
                    "id": len(doc["annotations"]),
                    "image_id": n,
                    "category_id": 1,
                    "bbox": [x1, y1, x2 - x1, y2 - y1],
                    "iscrowd": 0,
                }
            )
    path = tmp_path / "val.json"
    path.write_text(json.dumps(doc))
    coco = read_coco(path, CAVA_DEXTER)
    assert [(c.path, c.boxes) for c in coco] == [(v.path, v.boxes) for v in val[:20]]
    assert read_boxes_file(path, CAVA_DEXTER) == coco


def test_malformed_labels_name_the_file_and_line(tmp_path):
    (tmp_path / "img").mkdir()
    (tmp_path / "lab").mkdir()
    cv2.imwrite(str(tmp_path / "img" / "a.jpg"), np.zeros((10, 10, 3), np.uint8))
    (tmp_path / "lab" / "a.txt").write_text("0 0.5 0.5 0.2 0.2\n0 0.5 oops 0.2\n")
    with pytest.raises(ValueError, match=r"a\.txt:2"):
        read_yolo(tmp_path / "img", tmp_path / "lab")
    with pytest.raises(ValueError, match="bad box source"):
        parse_source("voc:/somewhere")
    (tmp_path / "b.json").write_text('{"images": [{"id": 1}]}')
    with pytest.raises(ValueError, match="not COCO"):
        read_coco(tmp_path / "b.json", tmp_path)


def test_unreadable_image_is_a_clear_error(tmp_path):
    bad = tmp_path / "x.jpg"
    bad.write_bytes(b"not a jpeg")
    with pytest.raises(ValueError, match="cannot decode"):
        BoxedImage(bad, ((0, 0, 1, 1),)).load()


def test_augmented_boxes_still_cover_the_drawn_faces():
    # A dark image with two bright squares at the labelled boxes: wherever scale, crop and flip put
    # them, each kept box must still enclose a bright square and nothing else.
    img = np.full((300, 400, 3), 20, np.uint8)
    boxes = np.array([[40, 50, 120, 130], [250, 150, 350, 250]], np.float32)
    for x1, y1, x2, y2 in boxes.astype(int):
        img[y1:y2, x1:x2] = 230
    kept_total = 0
    for seed in range(20):
        out, b = augment(img, boxes, 256, np.random.default_rng(seed))
        assert out.shape == (256, 256, 3) and out.dtype == np.uint8
        assert ((b >= 0) & (b <= 256)).all()
        for x1, y1, x2, y2 in np.round(b).astype(int):
            inner = out[y1 + 2 : y2 - 2, x1 + 2 : x2 - 2].astype(float).mean()
            assert inner > 120, (seed, inner)
        kept_total += len(b)
    assert kept_total >= 20  # most views keep faces


@pytest.mark.shared_data
def test_style_changes_redraw_a_real_frame_but_keep_its_faces_where_they_are():
    item = parse_source(f"cava:{CAVA_DEXTER}:val")[0]
    img, boxes = item.load()
    changed = 0
    for seed in range(20):
        a, ba = augment(img, boxes, 320, np.random.default_rng(seed))
        b, bb = augment(img, boxes, 320, np.random.default_rng(seed), style=True)
        np.testing.assert_array_equal(ba, bb)  # style never moves a box
        assert b.shape == a.shape and b.dtype == np.uint8
        changed += int(np.abs(a.astype(int) - b.astype(int)).mean() > 1)
    assert 5 <= changed < 20  # each change is drawn at random: some views keep the show's own look


def test_restyle_can_turn_every_hue_and_flatten_shading():
    ramp = np.dstack([np.tile(np.arange(0, 256, 2, dtype=np.uint8), (64, 1))] * 3)
    ramp[..., 2] = 200  # a reddish ramp
    outs = [restyle(ramp, np.random.default_rng(seed)) for seed in range(40)]
    assert any(len(np.unique(o)) < len(np.unique(ramp)) // 2 for o in outs)  # quantised
    hues = {int(cv2.cvtColor(o, cv2.COLOR_BGR2HSV)[32, 10, 0]) // 30 for o in outs}
    assert len(hues) >= 3


def test_letterbox_scales_boxes_with_the_image():
    img = np.zeros((200, 400, 3), np.uint8)
    out, b = letterbox_with_boxes(img, np.array([[100, 50, 200, 150]], np.float32), 128)
    assert out.shape == (128, 128, 3)
    np.testing.assert_allclose(b, [[32, 16, 64, 48]])
