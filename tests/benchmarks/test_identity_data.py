"""The identity data rebuild: a public repository's folder-per-character tree copied from a real git
repository at a commit, with repeated bytes and pictures seen before dropped, and the split checked."""

from __future__ import annotations

import importlib

import cv2
import pytest

from tests.benchmarks.test_detection_data import git_repo
from tests.conftest import SHARED

rebuild = importlib.import_module("benchmarks.identity_data.rebuild")
HOLO = SHARED / "data" / "anime_identities" / "hololive_danbooru"


@pytest.mark.shared_data
def test_a_repository_of_character_folders_is_rebuilt_without_repeats(tmp_path):
    gura, ame = (sorted((HOLO / name).glob("*.jpg")) for name in ("gura", "ame"))
    seen_image = cv2.imread(str(ame[0]))
    files = {
        "data/train/gura/1.jpg": gura[0].read_bytes(),
        "data/train/gura/2.jpg": gura[1].read_bytes(),
        "data/test/gura/3.jpg": gura[0].read_bytes(),  # the same bytes again
        "data/train/ame/1.jpg": ame[1].read_bytes(),
        "data/train/ame/2.jpg": cv2.imencode(".jpg", cv2.resize(seen_image, (100, 100)))[1].tobytes(),
        "data/README.md": b"not an image",
    }
    commit = git_repo(tmp_path / "mirror" / "someone+toons" / "repo", files)
    entry = {"name": "toons", "role": "test", "repo": "someone/toons", "commit": commit, "paths": ["data"]}
    seen = rebuild.SeenPictures()
    assert seen.add(ame[0], "other source")  # seen before: its smaller re-encoded copy is dropped
    summary = rebuild.rebuild_one(entry, tmp_path / "mirror", tmp_path / "cache", seen)
    assert summary["per_identity"] == {"ame": 1, "gura": 2}
    assert summary["excluded"] == {
        "files that are not images": 1,  # the README
        "same bytes as another image of the source": 1,
        "picture repeating one seen before": 1,
    }
    found = rebuild.images_by_identity(tmp_path / "cache" / "toons")
    assert sorted(p.read_bytes() for p in found["gura"]) == sorted(p.read_bytes() for p in gura[:2])


def test_every_source_names_a_role_and_the_split_has_no_repository_in_two_roles():
    for entry in rebuild.sources():
        assert entry["role"] in ("train", "tune", "test")
        assert entry["faces"] in ("faces", "detect", "cava")
        copied = not entry.get("shared") and "cava" not in entry
        assert not copied or (entry["repo"] and len(entry["commit"]) == 40 and entry["paths"])
    rebuild.check_split(images=False)
