import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from pipeline.frames import VideoError, extract_frames, probe
from tests.conftest import VIDEOS

TIMECODE = VIDEOS / "timecode_test_card_16s.mp4"


def frame_at(path, seconds, width, height):
    """The frame ffmpeg shows when seeking straight to `seconds` (accurate seek)."""
    raw = subprocess.run(
        [
            "ffmpeg",
            "-v",
            "error",
            "-ss",
            f"{seconds}",
            "-i",
            str(path),
            "-frames:v",
            "1",
            "-f",
            "rawvideo",
            "-pix_fmt",
            "bgr24",
            "pipe:",
        ],
        capture_output=True,
        check=True,
    ).stdout
    return np.frombuffer(raw, np.uint8).reshape(height, width, 3)


@pytest.mark.shared_data
def test_each_frame_of_the_timecode_card_is_the_first_frame_of_its_second():
    frames = list(extract_frames(TIMECODE))
    assert [f.timestamp_s for f in frames] == [float(s) for s in range(16)]
    for f in frames:
        expected = frame_at(TIMECODE, f.timestamp_s, 640, 480)
        assert np.array_equal(f.image, expected), f"frame at {f.timestamp_s}s differs from ffmpeg's seek"
    # The check can fail: the card's timecode changes every frame, so a neighbour frame differs.
    neighbour = frame_at(TIMECODE, 3.04, 640, 480)
    assert not np.array_equal(frames[3].image, neighbour)


@pytest.mark.shared_data
@pytest.mark.parametrize(
    "name, frames, size",
    [
        ("timecode_test_card_16s.mp4", 16, (480, 640)),
        ("sintel_trailer_720p_16s.mp4", 17, (720, 1280)),  # 16.1 s: seconds 0..16
        ("big_buck_bunny_0_30s.webm", 30, (720, 1280)),  # VP8 in WebM, starts at 0.003 s
        ("big_buck_bunny_opening_2s.mp4", 2, (720, 1280)),
    ],
)
def test_one_frame_per_second_from_every_shared_video(name, frames, size):
    got = list(extract_frames(VIDEOS / name))
    assert len(got) == frames
    assert all(f.image.shape == (*size, 3) for f in got)
    start = got[0].timestamp_s
    assert [round(f.timestamp_s - start, 3) for f in got] == [float(i) for i in range(frames)]


@pytest.mark.shared_data
def test_two_frames_per_second():
    got = list(extract_frames(VIDEOS / "big_buck_bunny_opening_2s.mp4", fps=2.0))
    assert [f.timestamp_s for f in got] == [0.0, 0.5, 1.0, 1.5]


def test_a_file_that_is_not_a_video_is_unreadable(tmp_path):
    bad = tmp_path / "episode.mp4"
    bad.write_bytes(b"this is not a video at all" * 100)
    with pytest.raises(VideoError) as err:
        list(extract_frames(bad))
    assert err.value.reason == "video_unreadable"


@pytest.mark.shared_data
def test_a_truncated_video_gives_its_first_frames_then_a_decode_error(tmp_path):
    for name, total in [("timecode_test_card_16s.mp4", 16), ("big_buck_bunny_0_30s.webm", 30)]:
        data = (VIDEOS / name).read_bytes()
        half = tmp_path / f"half-{name}"
        half.write_bytes(data[: len(data) // 2])
        frames = []
        with pytest.raises(VideoError) as err:
            for f in extract_frames(half):
                frames.append(f)
        assert err.value.reason == "video_decode_error"
        assert 3 <= len(frames) < total  # the readable part came through before the error


@pytest.mark.shared_data
def test_probe_reports_size_and_duration():
    info = probe(VIDEOS / "sintel_trailer_720p_16s.mp4")
    assert (info.width, info.height, info.codec) == (1280, 720, "h264")
    assert info.duration_s == pytest.approx(16.11, abs=0.01)


@pytest.mark.shared_data
def test_a_video_whose_name_is_not_utf8_gives_the_same_frames(tmp_path):
    # os.listdir hands such a name back with surrogates, which ffmpeg-python's graph cannot hash
    odd = Path(os.fsdecode(os.fsencode(tmp_path) + b"/ep\xff\xfe.mp4"))
    shutil.copy(VIDEOS / "big_buck_bunny_opening_2s.mp4", odd)
    assert probe(odd).duration_s == probe(VIDEOS / "big_buck_bunny_opening_2s.mp4").duration_s
    got, expected = list(extract_frames(odd)), list(extract_frames(VIDEOS / "big_buck_bunny_opening_2s.mp4"))
    assert [f.timestamp_s for f in got] == [f.timestamp_s for f in expected] == [0.0, 1.0]
    assert all(np.array_equal(a.image, b.image) for a, b in zip(got, expected))
