"""The face funnel: one batched detector call for a batch of images gives what one call per image gives;
and reading a library still before it: size and file type checked before any byte is read."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from pipeline.config import IngestConfig
from pipeline.faces import analyse_images, funnel_cache, funnel_key, read_still
from pipeline.runner import detector_of
from pipeline.store import ContentStore, sha256_bytes
from tests.conftest import CAVA_DEXTER, PROJECT

FRAMES = sorted((CAVA_DEXTER / "images" / "val").glob("*.jpg"))[:6]


class CountingDetector:
    """The real detector, recording how many images each call got."""

    def __init__(self, detector):
        self.detector, self.name, self.model_id, self.calls = detector, detector.name, detector.model_id, []

    def detect_many(self, images):
        self.calls.append(len(images))
        return self.detector.detect_many(images)


def funnel(tmp_path, name, **settings):
    """The funnel's settings record, the run's detector, a content store and a funnel cache of their own."""
    config = IngestConfig.from_dict(settings)
    detector = detector_of(config)
    store, cache = ContentStore(tmp_path / name / "store"), funnel_cache(tmp_path / name, config.funnel, detector)
    return config.funnel, detector, store, cache


@pytest.mark.shared_data
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
                [fb[k] for k in ("x1", "y1", "x2", "y2", "det_score")], abs=1e-2
            )
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


@pytest.mark.shared_data
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


@contextlib.contextmanager
def fifo_watch(fifo: Path):
    """Yields a list that gets an entry whenever something opens `fifo` for reading. Such a reader
    would wait forever for a writer: the watch plays the writer and closes at once, so the reader
    sees end-of-file and the test fails on the list instead of hanging."""
    opened, stop = [], threading.Event()

    def watch():
        while not stop.is_set():
            try:
                fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)  # fails (ENXIO) while no reader has it open
            except OSError:
                time.sleep(0.01)
                continue
            opened.append(True)
            os.close(fd)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    try:
        yield opened
    finally:
        stop.set()
        thread.join()


@pytest.mark.shared_data
def test_read_still_gives_the_bytes_or_a_dropped_analysis_without_opening_what_is_not_a_file(tmp_path):
    good = tmp_path / "good.jpg"
    good.write_bytes(FRAMES[0].read_bytes())
    assert read_still(good, "a/good.jpg", good.stat().st_size) == good.read_bytes()  # the limit is inclusive
    os.mkfifo(tmp_path / "pipe.jpg")
    (tmp_path / "dangling.jpg").symlink_to(tmp_path / "gone.jpg")
    with fifo_watch(tmp_path / "pipe.jpg") as opened:
        got = {name: read_still(tmp_path / name, f"a/{name}", 1 << 20) for name in ("pipe.jpg", "dangling.jpg")}
    assert not opened, "the FIFO was opened"
    assert {name: a.drop_reason for name, a in got.items()} == {"pipe.jpg": "not_a_file", "dangling.jpg": "unreadable"}
    # no bytes to hash: the id is the source name's hash, as for any file that could not be read
    assert got["pipe.jpg"].asset_id == sha256_bytes(b"a/pipe.jpg") and got["pipe.jpg"].faces == []
    too_large = read_still(good, "a/good.jpg", good.stat().st_size - 1)
    assert (too_large.drop_reason, too_large.size_bytes) == ("file_too_large", good.stat().st_size)


RSS_AFTER_READ = """
import re, sys
from pipeline.faces import read_still

def peak_kib():  # this address space's peak (getrusage's ru_maxrss would start at the parent's)
    with open("/proc/self/status") as f:
        return int(re.search(r"VmHWM:\\s*(\\d+) kB", f.read()).group(1))

start = peak_kib()
got = read_still(sys.argv[1], "album/huge.jpg", 64 << 20)
print(got.drop_reason, got.size_bytes, peak_kib() - start)
with open(sys.argv[1], "rb") as f:  # the check can fail: reading 256 MiB of it shows in the peak
    f.read(256 << 20)
print(peak_kib() - start)
"""


def test_a_huge_still_is_refused_by_its_size_before_it_is_read(tmp_path):
    huge = tmp_path / "huge.jpg"
    with open(huge, "wb") as f:
        f.truncate(1 << 30)  # sparse: 1 GiB to stat and read, no disk
    # a fresh process, so the peak resident size measures this read alone
    out = subprocess.run(
        [sys.executable, "-c", RSS_AFTER_READ, str(huge)], cwd=PROJECT, capture_output=True, text=True, check=True
    ).stdout.split()
    assert out[:2] == ["file_too_large", str(1 << 30)]
    assert int(out[2]) < 8 * 1024, f"reading a refused still grew the peak by {out[2]} KiB"
    assert int(out[3]) > 200 * 1024, out
