"""Extract frames from a video with ffmpeg: the first frame of every second (by default).

ffmpeg's `select` filter keeps the first frame whose time since the start is at least k/fps for
k = 0, 1, 2, ...; `showinfo` reports each kept frame's real presentation time, which is what we
record (a player seeking to that time shows the same picture). Raw BGR frames stream through a
pipe, so memory holds one frame at a time whatever the episode's length.
"""

from __future__ import annotations

import dataclasses
import queue
import re
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import ffmpeg
import numpy as np

VIDEO_EXTENSIONS = {".mp4", ".mkv", ".webm", ".avi", ".mov", ".m4v", ".ts", ".mpg", ".mpeg", ".flv", ".wmv", ".ogv"}
_PTS_TIME = re.compile(r"\bn:\s*(\d+).*?\bpts_time:\s*(-?[0-9.]+)")


class VideoError(Exception):
    """A video that cannot be read (reason `video_unreadable`) or breaks off part way
    (`video_decode_error`; the frames before the break were delivered)."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclasses.dataclass
class VideoInfo:
    width: int
    height: int
    duration_s: float
    codec: str
    container: str


@dataclasses.dataclass
class Frame:
    index: int
    timestamp_s: float
    image: np.ndarray  # BGR uint8


def probe(path: str | Path) -> VideoInfo:
    try:
        info = ffmpeg.probe(str(path))
    except ffmpeg.Error as exc:
        tail = exc.stderr.decode(errors="replace").strip().splitlines()[-1:] if exc.stderr else []
        raise VideoError("video_unreadable", " ".join(tail) or "ffprobe failed") from None
    streams = [
        s
        for s in info.get("streams", [])
        if s.get("codec_type") == "video" and s.get("disposition", {}).get("attached_pic", 0) == 0
    ]
    if not streams:
        raise VideoError("video_unreadable", "no video stream")
    s = streams[0]
    width, height = int(s.get("width", 0)), int(s.get("height", 0))
    if width <= 0 or height <= 0:
        raise VideoError("video_unreadable", "video stream has no size")
    # ffmpeg applies rotation metadata when decoding, so the frames come out turned.
    rotation = 0
    for side in s.get("side_data_list", []):
        rotation = int(float(side.get("rotation", 0) or 0))
    rotation = int(s.get("tags", {}).get("rotate", rotation) or 0)
    if abs(rotation) % 180 == 90:
        width, height = height, width
    duration = float(info.get("format", {}).get("duration") or s.get("duration") or 0.0)
    return VideoInfo(width, height, duration, s.get("codec_name", "?"), info.get("format", {}).get("format_name", "?"))


def _ffmpeg_command(path: str | Path, fps: float) -> list[str]:
    """ffmpeg writing one raw BGR frame per 1/fps seconds to stdout, and each frame's time (showinfo) to stderr.
    Built by hand, not with ffmpeg.input(): ffmpeg-python hashes the file name as UTF-8, which a Linux
    name with bytes that are not UTF-8 (a str with surrogates) cannot be; Popen passes it as is."""
    select = f"[0:v]select=gte(t-start_t\\,selected_n/{fps!r}),showinfo[out]"
    command = ["ffmpeg", "-hide_banner", "-nostats", "-nostdin", "-loglevel", "info", "-i", str(path)]
    command += ["-filter_complex", select, "-map", "[out]", "-f", "rawvideo", "-fps_mode", "passthrough"]
    return command + ["-pix_fmt", "bgr24", "pipe:"]


def extract_frames(path: str | Path, fps: float = 1.0, timeout_s: float = 60.0) -> Iterator[Frame]:
    """Yield one frame per 1/fps seconds. Raises VideoError (after the frames it got) on failure."""
    info = probe(path)
    frame_bytes = info.width * info.height * 3
    cmd = _ffmpeg_command(path, fps)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, bufsize=frame_bytes)
    timestamps: queue.Queue[float] = queue.Queue()
    stderr_tail: list[str] = []

    def read_stderr() -> None:
        for raw in proc.stderr:
            line = raw.decode(errors="replace")
            if "showinfo" in line and (m := _PTS_TIME.search(line)):
                timestamps.put(float(m.group(2)))
            else:
                stderr_tail.append(line.rstrip())
                del stderr_tail[:-20]

    reader = threading.Thread(target=read_stderr, daemon=True)
    reader.start()
    index = 0
    try:
        while True:
            buf = proc.stdout.read(frame_bytes)
            if len(buf) < frame_bytes:
                break
            try:
                ts = timestamps.get(timeout=timeout_s)
            except queue.Empty:
                raise VideoError("video_decode_error", "no timestamp from ffmpeg for a decoded frame") from None
            image = np.frombuffer(buf, np.uint8).reshape(info.height, info.width, 3)
            yield Frame(index, round(ts, 6), image)
            index += 1
    finally:
        if proc.poll() is None and index >= 0:
            proc.stdout.close()
        returncode = proc.wait()
        reader.join(timeout=5)
    if returncode != 0:
        detail = " | ".join(line for line in stderr_tail if line)[-500:]
        raise VideoError(
            "video_decode_error" if index else "video_unreadable",
            f"ffmpeg exit {returncode} after {index} frames: {detail}",
        )
    # A cut file often decodes "successfully" up to the cut: compare with the declared duration.
    expected = int(info.duration_s * fps)
    if info.duration_s > 0 and index < expected - 1:
        raise VideoError(
            "video_decode_error" if index else "video_unreadable",
            f"stream ended after {index} of ~{expected} frames ({info.duration_s:.1f} s declared)",
        )
