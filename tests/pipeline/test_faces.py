"""The face funnel: one batched detector call for a batch of images gives what one call per image gives."""
from __future__ import annotations

import pytest

from pipeline.config import IngestConfig
from pipeline.detect import get_detector
from pipeline.faces import FunnelCache, analyse_images, funnel_key
from pipeline.store import ContentStore
from tests.conftest import CAVA_DEXTER

FRAMES = sorted((CAVA_DEXTER / "images" / "val").glob("*.jpg"))[:6]


class CountingDetector:
    """The real detector, recording how many images each call got."""

    def __init__(self, detector):
        self.detector, self.name, self.model_id, self.calls = detector, detector.name, detector.model_id, []

    def detect_many(self, images):
        self.calls.append(len(images))
        return self.detector.detect_many(images)


def funnel(tmp_path, name, **settings):
    config = IngestConfig(**settings)
    detector = get_detector(config.detector, config.detector_weights, config.detector_size)
    store, cache = ContentStore(tmp_path / name / "store"), FunnelCache(tmp_path / name, funnel_key(config, detector))
    return config, detector, store, cache


def test_a_batch_gives_the_same_faces_as_one_image_at_a_time(tmp_path):
    datas = [p.read_bytes() for p in FRAMES]
    batch = datas[:3] + [b"\xff\xd8 not really a jpeg"] + datas[3:] + [datas[0]]
    config, detector, store, cache = funnel(tmp_path, "batched")
    counting = CountingDetector(detector)
    batched = analyse_images(batch, config, counting, store, cache)
    assert counting.calls == [6]  # the 6 distinct readable frames, in one call

    config, detector, store, cache = funnel(tmp_path, "single")
    single = [analyse_images([data], config, detector, store, cache)[0] for data in batch]

    assert [cached for _, cached in batched] == [cached for _, cached in single] == [False] * 7 + [True]
    assert batched[3][0].drop_reason == single[3][0].drop_reason is not None
    assert sum(len(a.faces) for a, _ in batched) > 0
    for (a, _), (b, _) in zip(batched, single):
        assert a.asset_id == b.asset_id and len(a.faces) == len(b.faces)
        for fa, fb in zip(a.faces, b.faces):
            assert fa["face_id"] == fb["face_id"] and fa["status"] == fb["status"]
            assert [fa[k] for k in ("x1", "y1", "x2", "y2", "det_score")] == pytest.approx(
                [fb[k] for k in ("x1", "y1", "x2", "y2", "det_score")], abs=1e-2)
    # A pixel budget below two frames splits the batch into one detector call per image: same faces.
    config, detector, store, cache = funnel(tmp_path, "split")
    counting = CountingDetector(detector)
    split = analyse_images(batch, config, counting, store, cache, max_batch_pixels=480 * 360 + 1)
    assert counting.calls == [1] * 6
    assert [[f["face_id"] for f in a.faces] for a, _ in split] == [[f["face_id"] for f in a.faces] for a, _ in batched]
    # The cache now answers for every image of the batch.
    assert all(cached for _, cached in analyse_images(batch, config, detector, store, cache))


def test_an_empty_batch_is_fine(tmp_path):
    assert analyse_images([], *funnel(tmp_path, "empty")) == []


def test_the_detector_size_setting_reaches_the_face_rows_and_the_cache_key(tmp_path):
    datas = [p.read_bytes() for p in FRAMES[:2]]
    config, detector, store, cache = funnel(tmp_path, "stored")
    at_stored = analyse_images(datas, config, detector, store, cache)
    config, larger, store, cache = funnel(tmp_path, "larger", detector_size=detector.size + 64)
    at_larger = analyse_images(datas, config, larger, store, cache)
    assert larger.model_id == f"{detector.model_id}-{detector.size + 64}px"
    assert funnel_key(config, larger) != funnel_key(config, detector)  # never answered from the other's cache
    faces = [f for a, _ in at_larger for f in a.faces]
    assert faces and {f["model_id"] for f in faces} == {larger.model_id}
    assert not {f["face_id"] for f in faces} & {f["face_id"] for a, _ in at_stored for f in a.faces}
