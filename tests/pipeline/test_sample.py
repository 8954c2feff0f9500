"""Checks that the generated sample library is usable by the real pipeline tools."""

import json
import shutil
import subprocess
from pathlib import Path

import animeface
import pytest
import yaml
from PIL import Image

from pipeline.sample import make_sample_library

INVALID_STILLS = {"broken.jpg", "not_an_image.png"}

pytestmark = pytest.mark.skipif(
    shutil.which("ffmpeg") is None or shutil.which("ffprobe") is None, reason="ffmpeg/ffprobe not installed"
)


def _duration(path: Path) -> float:
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-show_entries", "format=duration", "-of", "json", str(path)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return float(json.loads(out)["format"]["duration"])


@pytest.fixture(scope="module")
def library(tmp_path_factory) -> Path:
    # Generated once per module: both tests only read it.
    return make_sample_library(tmp_path_factory.mktemp("sample"), seed=0)


def test_make_sample_library(library):
    root = library.parent
    assert library.name == "albums.yaml"

    albums = yaml.safe_load(library.read_text())["albums"]
    assert len(albums) == 2
    assert len({a["id"] for a in albums}) == 2

    valid_stills: list[Path] = []
    invalid_seen: set[str] = set()
    for album in albums:
        assert {"id", "name", "region", "episodes", "stills"} <= album.keys()
        episodes = root / album["episodes"]
        stills = root / album["stills"]
        assert episodes.is_dir() and stills.is_dir()

        videos = sorted(episodes.iterdir())
        assert len(videos) == 3
        for video in videos:
            assert _duration(video) >= 5.0, video

        for still in sorted(stills.iterdir()):
            if still.name in INVALID_STILLS:
                invalid_seen.add(still.name)
            else:
                valid_stills.append(still)

    assert invalid_seen == INVALID_STILLS
    assert len(valid_stills) >= 10

    # The whole point of the library: the real detector must find the faces.
    detected = 0
    for still in valid_stills:
        with Image.open(still) as im:
            detected += bool(animeface.detect(im.convert("RGB")))
    assert detected / len(valid_stills) >= 0.8, f"{detected}/{len(valid_stills)} stills with a face"


def test_invalid_stills_are_unreadable(library):
    broken = next(library.parent.glob("*/stills/broken.jpg"))
    text = next(library.parent.glob("*/stills/not_an_image.png"))
    assert broken.read_bytes()[:2] == b"\xff\xd8"  # starts like a JPEG...
    with pytest.raises(OSError):
        with Image.open(broken) as im:
            im.load()  # ...but cannot be fully decoded
    with pytest.raises(OSError):  # PIL.UnidentifiedImageError is an OSError
        Image.open(text)


def _hair_colours(path: Path) -> set[tuple[int, int, int]]:
    """The hair colours drawn in a lossless image (each covers many exact pixels)."""
    import cv2
    import numpy as np

    from pipeline.sample import HAIR_COLOURS

    img = cv2.imread(str(path))
    return {c for c in HAIR_COLOURS if np.all(img == np.array(c, np.uint8), axis=2).sum() > 300}


def test_a_recurring_cast_and_a_typical_image_of_each_named_character(library):
    from pipeline.sample import CAST_PER_ALBUM

    root = library.parent
    sunny = next(a for a in yaml.safe_load(library.read_text())["albums"] if a["id"] == "sunny_school")
    typical = {c["name"]: root / c["images"][0] for c in sunny["characters"]}
    assert sorted(typical) == ["Hana", "Kai"]
    hair = {}
    for name, path in typical.items():
        with Image.open(path) as im:
            assert len(animeface.detect(im.convert("RGB"))) == 1, name  # that character alone
        (hair[name],) = _hair_colours(path)
    assert hair["Hana"] != hair["Kai"]
    # the lossless stills draw only the album's cast, and the named characters come back in them
    seen = set().union(*(_hair_colours(p) for p in (root / sunny["stills"]).glob("still_*.png")))
    assert len(seen | set(hair.values())) <= CAST_PER_ALBUM and seen & set(hair.values())
