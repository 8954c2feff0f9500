"""The end-to-end pre-label benchmark's library: one typical image per named character, cut from a frame
that is then left out of the album's stills."""

from __future__ import annotations

import importlib
import random

import cv2
import pytest
import yaml

bench = importlib.import_module("benchmarks.bench_prelabel_ingest")


@pytest.mark.shared_data
def test_each_named_character_gets_a_typical_image_whose_frame_is_not_ingested(tmp_path):
    frames = bench.boxed_frames("scooby_doo")
    chosen = bench.make_library(frames, random.Random(3), tmp_path)
    album = yaml.safe_load((tmp_path / "albums.yaml").read_text())["albums"][0]
    names = [c["name"] for c in album["characters"]]
    assert names == sorted(chosen) and "unknown" not in names and len(names) == 4
    stills = {p.name for p in (tmp_path / "stills").iterdir()}
    assert len(stills) == len(frames) - len(set(chosen.values()))
    assert not stills & {f.name for f in chosen.values()}
    for character in album["characters"]:
        image = cv2.imread(str(tmp_path / character["images"][0]))
        assert image is not None and min(image.shape[:2]) >= 20


def test_iou_of_boxes():
    a = {"x1": 0, "y1": 0, "x2": 10, "y2": 10}
    assert bench.iou(a, a) == 1.0
    assert bench.iou(a, {"x1": 5, "y1": 0, "x2": 15, "y2": 10}) == pytest.approx(50 / 150)
    assert bench.iou(a, {"x1": 20, "y1": 20, "x2": 30, "y2": 30}) == 0.0
