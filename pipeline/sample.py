"""Offline sample media library for tests and demos.

Everything here is *generated* (drawn with OpenCV, encoded with ffmpeg), so the
pipeline can be exercised without network access or licensed artwork.  The
faces are drawn in a deliberately "classic anime" style because they must be
found by the real ``animeface`` (nvxs) detector, which keys on a skin-coloured
face framed by hair of a distinct colour, two large dark eyes with highlights,
a small mouth and a chin.  Changing the proportions in ``_draw_face`` can
silently drop the detection rate, so re-measure after any edit.  The default
detector (this project's RetinaNet, trained on real cartoon frames) finds them too:
tests/flows/test_ingest.py checks it on every run.
"""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import yaml

__all__ = ["make_sample_library", "ALBUMS"]

AA = cv2.LINE_AA

# (id, name, region, episode container).  One album per container so the
# pipeline sees both H.264/MP4 and VP8/WebM input.
ALBUMS = (("sunny_school", "Sunny School", "JP", "mp4"), ("moon_patrol", "Moon Patrol", "US", "webm"))
EPISODES_PER_ALBUM = 3
STILLS_PER_ALBUM = 6
# Each album has a fixed cast that recurs across its episodes and stills, as characters do, so the
# reference images of the named ones pre-label their other appearances. One cast member per album
# is left without a typical image: its faces are what annotators name by hand.
CAST_PER_ALBUM = 3
NAMED_CHARACTERS = {"sunny_school": ("Hana", "Kai")}
VIDEO_W, VIDEO_H, FPS = 640, 360, 12
VIDEO_SECONDS = 5.5
# The album that also receives the two intentionally unreadable files.
BROKEN_ALBUM = "sunny_school"

# Colours are BGR (OpenCV order).  Hair colours are saturated and far from the
# skin tones; the detector relies on that contrast to place the face box.
HAIR_COLOURS = (
    (40, 40, 200),  # red
    (200, 90, 30),  # blue
    (60, 150, 40),  # green
    (160, 60, 150),  # purple
    (30, 60, 110),  # brown
    (40, 170, 230),  # blonde/orange
    (170, 50, 220),  # pink
    (50, 50, 50),  # black
)
EYE_COLOURS = (
    (150, 60, 20),  # blue
    (40, 110, 30),  # green
    (30, 60, 120),  # brown
    (120, 40, 120),  # violet
    (40, 40, 170),  # red
)
SKIN_TONES = ((200, 225, 250), (190, 215, 245), (180, 205, 240))
SHIRT_COLOURS = ((240, 240, 240), (120, 70, 40), (60, 60, 160), (90, 140, 90), (200, 170, 120))


@dataclass
class FaceSpec:
    """One face: centre of the face ellipse, its width ``size`` and colours."""

    cx: float
    cy: float
    size: float
    hair: tuple[int, int, int]
    eye: tuple[int, int, int]
    skin: tuple[int, int, int]
    shirt: tuple[int, int, int]
    long_hair: bool
    mouth_open: float = 0.0  # 0 = closed smile, 1 = fully open


def _random_face(rng: np.random.Generator, cx: float, cy: float, size: float, hair: int) -> FaceSpec:
    return FaceSpec(
        cx=cx,
        cy=cy,
        size=size,
        hair=HAIR_COLOURS[hair],
        eye=EYE_COLOURS[rng.integers(len(EYE_COLOURS))],
        skin=SKIN_TONES[rng.integers(len(SKIN_TONES))],
        shirt=SHIRT_COLOURS[rng.integers(len(SHIRT_COLOURS))],
        long_hair=bool(rng.integers(2)),
    )


def _draw_face(img: np.ndarray, f: FaceSpec) -> None:
    """Draw an anime-style head in place.  All geometry scales with f.size."""
    s = f.size
    cx, cy = int(round(f.cx)), int(round(f.cy))

    def p(v: float) -> int:
        return max(1, int(round(v * s)))

    # Back hair first so the face sits inside a hair "frame"; the detector
    # samples hair colour around and above the face.
    cv2.ellipse(img, (cx, cy - p(0.1)), (p(0.62), p(0.7)), 0, 0, 360, f.hair, -1, AA)
    if f.long_hair:
        cv2.rectangle(img, (cx - p(0.62), cy - p(0.1)), (cx + p(0.62), cy + p(0.85)), f.hair, -1, AA)
    # Shoulders and neck, so the chin has something below it.
    cv2.ellipse(img, (cx, cy + p(1.05)), (p(0.55), p(0.25)), 0, 180, 360, f.shirt, -1, AA)
    cv2.rectangle(img, (cx - p(0.12), cy + p(0.4)), (cx + p(0.12), cy + p(0.9)), f.skin, -1, AA)
    cv2.ellipse(img, (cx, cy + p(0.88)), (p(0.12), p(0.06)), 0, 0, 180, f.skin, -1, AA)
    cv2.line(img, (cx - p(0.12), cy + p(0.55)), (cx - p(0.12), cy + p(0.85)), (110, 130, 170), 1, AA)
    cv2.line(img, (cx + p(0.12), cy + p(0.55)), (cx + p(0.12), cy + p(0.85)), (110, 130, 170), 1, AA)

    # Face: round top, pointed chin.
    cv2.ellipse(img, (cx, cy), (p(0.5), p(0.5)), 0, 0, 360, f.skin, -1, AA)
    chin = np.array([[cx - p(0.48), cy + p(0.1)], [cx, cy + p(0.62)], [cx + p(0.48), cy + p(0.1)]], np.int32)
    cv2.fillPoly(img, [chin], f.skin, AA)

    # Fringe: a cap plus jagged bangs down to just above the brows.
    cv2.ellipse(img, (cx, cy - p(0.3)), (p(0.56), p(0.32)), 0, 180, 360, f.hair, -1, AA)
    for i in range(4):
        x0 = cx - p(0.5) + int(round(i * 0.25 * s))
        tri = np.array(
            [[x0 - p(0.05), cy - p(0.32)], [x0 + p(0.125), cy - p(0.05)], [x0 + p(0.3), cy - p(0.32)]], np.int32
        )
        cv2.fillPoly(img, [tri], f.hair, AA)

    # Big eyes: white, iris, pupil, highlight, lash line, brow.
    ink = (25, 20, 20)
    for sgn in (-1, 1):
        ex, ey = cx + sgn * p(0.22), cy + p(0.08)
        ew, eh = p(0.11), p(0.16)
        cv2.ellipse(img, (ex, ey), (ew, eh), 0, 0, 360, (255, 255, 255), -1, AA)
        cv2.ellipse(img, (ex, ey + p(0.02)), (int(ew * 0.85), int(eh * 0.85)), 0, 0, 360, f.eye, -1, AA)
        cv2.ellipse(img, (ex, ey + p(0.03)), (int(ew * 0.45), int(eh * 0.5)), 0, 0, 360, ink, -1, AA)
        cv2.circle(img, (ex - int(ew * 0.35), ey - int(eh * 0.3)), p(0.03), (255, 255, 255), -1, AA)
        cv2.ellipse(img, (ex, ey), (ew + 2, eh + 2), 0, 200, 340, ink, p(0.025), AA)
        cv2.ellipse(img, (ex, ey - p(0.2)), (p(0.1), p(0.04)), 0, 200, 340, (30, 30, 60), p(0.015), AA)

    # Small mouth; optionally open for "talking" animation in videos.
    my = cy + p(0.38)
    if f.mouth_open > 0.05:
        cv2.ellipse(img, (cx, my), (p(0.05), max(2, p(0.05 * f.mouth_open))), 0, 0, 360, (60, 50, 150), -1, AA)
    else:
        cv2.ellipse(img, (cx, my), (p(0.06), p(0.03)), 0, 0, 180, (60, 60, 160), p(0.015), AA)


def _background(rng: np.random.Generator, w: int, h: int) -> np.ndarray:
    """Vertical two-colour gradient plus a few hard-edged shapes."""
    top = rng.integers(150, 256, 3)
    bottom = rng.integers(120, 230, 3)
    t = np.linspace(0.0, 1.0, h, dtype=np.float32)[:, None, None]
    img = np.broadcast_to(top * (1 - t) + bottom * t, (h, w, 3)).astype(np.uint8).copy()
    for _ in range(int(rng.integers(3, 7))):
        # Muted colours so no shape reads as skin or hair.
        colour = tuple(int(c) for c in rng.integers(90, 200, 3))
        x, y = int(rng.integers(0, w)), int(rng.integers(0, h))
        r = int(rng.integers(h // 16, h // 6))
        if rng.integers(2):
            cv2.circle(img, (x, y), r, colour, -1, AA)
        else:
            cv2.rectangle(img, (x - r, y - r), (x + r, y + r // 2), colour, -1, AA)
    return img


def _head_extent(size: float) -> tuple[float, float, float]:
    """Half width, height above centre and below centre of a drawn head."""
    return 0.65 * size, 0.85 * size, 1.1 * size


def _make_cast(rng: np.random.Generator, n: int) -> list[FaceSpec]:
    """n characters (colours and hair style; placed later), each with its own hair colour."""
    hair = rng.permutation(len(HAIR_COLOURS))
    return [_random_face(rng, 0.0, 0.0, 0.0, int(hair[i])) for i in range(n)]


def _place_faces(
    rng: np.random.Generator, w: int, h: int, n: int, cast: list[FaceSpec] | None = None
) -> list[FaceSpec]:
    """Place n non-overlapping heads that fit fully inside a w x h frame: distinct members of ``cast``,
    or new random faces without one."""
    faces: list[FaceSpec] = []
    # Distinct hair per face, so two characters in one frame look different.
    hair = rng.permutation(len(HAIR_COLOURS))
    who = rng.permutation(len(cast)) if cast else None
    n = min(n, len(cast)) if cast else n
    # Sizes from the requested 120-220 px range, capped so n heads fit.
    max_size = min(220.0, h / 2.0, w / (1.4 * n))
    for _ in range(n):
        for _attempt in range(50):
            size = float(rng.uniform(min(120.0, max_size), max_size))
            hw, up, down = _head_extent(size)
            if w - 2 * hw < 1 or h - up - down < 1:
                continue
            cx = float(rng.uniform(hw, w - hw))
            cy = float(rng.uniform(up, max(up + 1, h - down)))
            if all(abs(cx - o.cx) > hw + _head_extent(o.size)[0] for o in faces):
                if cast:
                    faces.append(dataclasses.replace(cast[int(who[len(faces)])], cx=cx, cy=cy, size=size))
                else:
                    faces.append(_random_face(rng, cx, cy, size, int(hair[len(faces)])))
                break
    return faces


def _make_still(rng: np.random.Generator, cast: list[FaceSpec] | None = None, faces: int = 0) -> np.ndarray:
    """A still of 1-2 faces (``faces`` to fix the number), from ``cast`` when given."""
    w, h = int(rng.integers(480, 801)), int(rng.integers(480, 801))
    img = _background(rng, w, h)
    for f in _place_faces(rng, w, h, faces or int(rng.integers(1, 3)), cast):
        _draw_face(img, f)
    return img


def _ffmpeg() -> str:
    exe = shutil.which("ffmpeg")
    if exe is None:
        raise RuntimeError("ffmpeg not found on PATH; it is required to encode sample episodes")
    return exe


def _codec_args(container: str) -> list[str]:
    # Single-threaded encoders so the bytes do not depend on the host's core
    # count; at 66 small frames the cost is negligible.
    if container == "mp4":
        return [
            "-c:v",
            "libx264",
            "-preset",
            "veryfast",
            "-crf",
            "20",
            "-pix_fmt",
            "yuv420p",
            "-threads",
            "1",
            "-movflags",
            "+faststart",
        ]
    # VP8 rather than VP9 (much faster to encode).  Not "-deadline realtime":
    # it adapts to how fast frames arrive on the pipe, so output is not
    # reproducible.
    return [
        "-c:v",
        "libvpx",
        "-deadline",
        "good",
        "-cpu-used",
        "5",
        "-b:v",
        "1500k",
        "-pix_fmt",
        "yuv420p",
        "-threads",
        "1",
    ]


def _write_episode(rng: np.random.Generator, path: Path, container: str, cast: list[FaceSpec]) -> None:
    """Render frames in memory and pipe them as raw BGR to ffmpeg."""
    n_frames = int(round(VIDEO_SECONDS * FPS))
    bg = _background(rng, VIDEO_W, VIDEO_H)
    # Sizes stay in the lower part of the range so heads fit the 360 px frame.
    n = int(rng.integers(1, 3))
    faces = _place_faces(rng, VIDEO_W, VIDEO_H, n, cast)
    for f in faces:
        f.size = min(f.size, 150.0)
    # Each face drifts on its own slow sinusoid and "talks".
    motion = [
        (rng.uniform(20, 60), rng.uniform(5, 20), rng.uniform(0.1, 0.3), rng.uniform(0, 2 * np.pi)) for _ in faces
    ]
    base = [(f.cx, f.cy) for f in faces]

    cmd = [
        _ffmpeg(),
        "-hide_banner",
        "-loglevel",
        "error",
        "-y",
        "-f",
        "rawvideo",
        "-pix_fmt",
        "bgr24",
        "-s",
        f"{VIDEO_W}x{VIDEO_H}",
        "-r",
        str(FPS),
        "-i",
        "pipe:0",
        *_codec_args(container),
        "-fflags",
        "+bitexact",
        "-map_metadata",
        "-1",
        str(path),
    ]
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        for i in range(n_frames):
            t = i / FPS
            frame = bg.copy()
            for f, (bx, by), (ax, ay, freq, phase) in zip(faces, base, motion):
                hw, up, down = _head_extent(f.size)
                # Clamp so heads never leave the frame (a cut-off head is not a
                # detectable face).
                f.cx = float(np.clip(bx + ax * np.sin(2 * np.pi * freq * t + phase), hw, VIDEO_W - hw))
                f.cy = float(np.clip(by + ay * np.cos(2 * np.pi * freq * t + phase), up, VIDEO_H - down * 0.6))
                f.mouth_open = max(0.0, float(np.sin(2 * np.pi * 1.5 * t + phase)))
                _draw_face(frame, f)
            proc.stdin.write(frame.tobytes())
        proc.stdin.close()
    except BrokenPipeError:
        pass  # ffmpeg died; its stderr is reported below.
    err = proc.stderr.read().decode(errors="replace")
    if proc.wait() != 0:
        raise RuntimeError(f"ffmpeg failed encoding {path}: {err.strip()}")


def _write_broken_files(rng: np.random.Generator, stills_dir: Path) -> None:
    ok, buf = cv2.imencode(".jpg", _make_still(rng), [cv2.IMWRITE_JPEG_QUALITY, 90])
    assert ok
    data = buf.tobytes()
    (stills_dir / "broken.jpg").write_bytes(data[: len(data) // 2])
    (stills_dir / "not_an_image.png").write_text("This is a text file, not a PNG.\n")


def make_sample_library(out_dir: str | Path, seed: int = 0) -> Path:
    """Generate the sample library under ``out_dir`` and return ``albums.yaml``.

    Two albums, each with 3 short episodes and 6 stills drawn from a cast of
    CAST_PER_ALBUM characters; one album also has a truncated ``broken.jpg``, a
    text file named ``not_an_image.png`` and a typical image (``characters/``) of
    each of its NAMED_CHARACTERS.  The output depends only on ``seed``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    # Independent stream per album so changing one album's content does not
    # reshuffle the other.
    album_seeds = np.random.SeedSequence(seed).spawn(len(ALBUMS))

    entries = []
    for (album_id, name, region, container), ss in zip(ALBUMS, album_seeds):
        rng = np.random.default_rng(ss)
        episodes = out / album_id / "episodes"
        stills = out / album_id / "stills"
        episodes.mkdir(parents=True, exist_ok=True)
        stills.mkdir(parents=True, exist_ok=True)

        cast = _make_cast(rng, CAST_PER_ALBUM)
        for e in range(1, EPISODES_PER_ALBUM + 1):
            _write_episode(rng, episodes / f"ep{e:02d}.{container}", container, cast)
        for k in range(1, STILLS_PER_ALBUM + 1):
            img = _make_still(rng, cast)
            # Alternate formats so both decoders get exercised.
            if k % 2:
                cv2.imwrite(str(stills / f"still_{k:02d}.jpg"), img, [cv2.IMWRITE_JPEG_QUALITY, 92])
            else:
                cv2.imwrite(str(stills / f"still_{k:02d}.png"), img)
        if album_id == BROKEN_ALBUM:
            _write_broken_files(rng, stills)

        entry = {
            "id": album_id,
            "name": name,
            "region": region,
            "episodes": episodes.relative_to(out).as_posix(),
            "stills": stills.relative_to(out).as_posix(),
        }
        if album_id in NAMED_CHARACTERS:
            # Named cast members with a typical image each (that character alone): the reference set
            # that pre-labels their faces in the episodes and stills (and feeds the verification page).
            entry["characters"] = []
            for name, member in zip(NAMED_CHARACTERS[album_id], cast):
                typical = out / album_id / "characters" / f"{name.lower()}.png"
                typical.parent.mkdir(parents=True, exist_ok=True)
                cv2.imwrite(str(typical), _make_still(rng, [member], faces=1))
                entry["characters"].append({"name": name, "images": [typical.relative_to(out).as_posix()]})
        entries.append(entry)

    albums_file = out / "albums.yaml"
    albums_file.write_text(yaml.safe_dump({"albums": entries}, sort_keys=False))
    return albums_file


def make_still_image(seed: int) -> np.ndarray:
    """One drawn still (BGR) with one or two cartoon faces, for tests and local demo servers."""
    return _make_still(np.random.default_rng(seed))
