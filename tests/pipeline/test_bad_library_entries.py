"""No single bad library entry stops a run (issue 37): a name that is not UTF-8, a FIFO, a dangling
or looping link, a 1 GiB still, a cut episode each become rows with reasons, through the functions
the ingest flow calls (discover_albums -> plan_run -> process_stills / process_episode -> publish)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from data_manifest.store import Manifest
from pipeline.config import IngestConfig
from pipeline.episodes import process_episode
from pipeline.plan import plan_run
from pipeline.runner import RunContext, merge_counts
from pipeline.sources.library import discover_albums
from pipeline.stills import process_stills
from pipeline.store import sha256_bytes
from tests.conftest import CAVA_DEXTER, VIDEOS
from tests.pipeline.test_faces import fifo_watch

pytestmark = pytest.mark.shared_data

FRAMES = sorted((CAVA_DEXTER / "images" / "val").glob("*.jpg"))[:2]
CONFIG = IngestConfig.from_dict({"detector_size": 320, "embedder": "none"})


def bytes_name(folder: Path, name: bytes) -> Path:
    """A path whose last part is these raw bytes (os.listdir gives them back as surrogates)."""
    return Path(os.fsdecode(os.fsencode(folder) + b"/" + name))


def make_bad_library(root: Path) -> Path:
    stills, episodes = root / "show" / "stills", root / "show" / "episodes"
    stills.mkdir(parents=True)
    episodes.mkdir(parents=True)
    shutil.copy(FRAMES[0], stills / "good.jpg")
    shutil.copy(FRAMES[1], bytes_name(stills, b"bad\xff\xfe.jpg"))
    with open(stills / "huge.jpg", "wb") as f:
        f.truncate(1 << 30)  # sparse: 1 GiB on paper
    os.mkfifo(stills / "pipe.jpg")
    (stills / "dangling.jpg").symlink_to(root / "gone.jpg")
    (stills / "loop.jpg").symlink_to(stills / "loop.jpg")
    shutil.copy(VIDEOS / "big_buck_bunny_opening_2s.mp4", bytes_name(episodes, b"ep\xff.mp4"))
    webm = (VIDEOS / "big_buck_bunny_0_30s.webm").read_bytes()
    (episodes / "cut.webm").write_bytes(webm[: len(webm) // 3])
    os.mkfifo(episodes / "pipe.mp4")
    (episodes / "dangling.mp4").symlink_to(root / "gone.mp4")
    return root


def run(library: Path, data: Path) -> dict:
    """What flows/ingest.py does with a plan, minus Prefect: stage every row, merge the counts, publish."""
    manifest, run_id = Manifest(data), "run-1"
    plan = plan_run(discover_albums(library), CONFIG.plan, manifest, run_id)
    staging = manifest.staging(run_id)
    staging.write("albums", "plan", plan.album_rows)
    staging.write("episodes", "plan", plan.unselected_episode_rows)
    ctx = RunContext(str(data.resolve()), run_id, CONFIG)
    with (
        fifo_watch(library / "show" / "stills" / "pipe.jpg") as still_fifo,
        fifo_watch(library / "show" / "episodes" / "pipe.mp4") as episode_fifo,
    ):
        parts = [process_episode(s, ctx) for s in plan.episode_shards]
        parts += [process_stills(s, ctx) for s in plan.stills_shards]
    assert not still_fifo and not episode_fifo, "a FIFO was opened"
    counts = merge_counts([*parts, plan.counts])
    manifest.publish(staging, {"counts": counts, "config": CONFIG.to_dict(), "config_hash": CONFIG.hash()})
    return counts


def test_every_bad_entry_becomes_a_row_with_a_reason_and_the_run_publishes(tmp_path):
    library = make_bad_library(tmp_path / "lib")
    counts = run(library, tmp_path / "data")
    m = Manifest(tmp_path / "data")
    assets = m.read("assets").query("kind == 'still'").set_index("source")
    assert dict(zip(assets.index, assets["drop_reason"].fillna(""))) == {
        "show/good.jpg": "",
        "show/bad\\xff\\xfe.jpg": "",
        "show/huge.jpg": "file_too_large",
        "show/pipe.jpg": "not_a_file",
        "show/dangling.jpg": "unreadable",
        "show/loop.jpg": "unreadable",
    }
    # the oddly named still was read through its real path: the same pixels as its source frame
    assert assets.loc["show/bad\\xff\\xfe.jpg", "asset_id"] == sha256_bytes(FRAMES[1].read_bytes())
    # the 1 GiB still was refused by its size, never read (so never hashed)
    assert assets.loc["show/huge.jpg", "asset_id"] == sha256_bytes(b"show/huge.jpg")
    assert assets.loc["show/huge.jpg", "size_bytes"] == 1 << 30
    assert counts["stills"] == 6 and counts["drop.image.not_a_file"] == 1 and counts["drop.image.unreadable"] == 2
    assert counts["episodes"] == 4 and counts["drop.episode.not_a_file"] == counts["drop.episode.unreadable"] == 1

    episodes = m.read("episodes").set_index("episode_path")
    rows = {p: (r["status"], r["drop_reason"]) for p, r in episodes.fillna({"drop_reason": ""}).iterrows()}
    assert rows == {
        "ep\\xff.mp4": ("ok", ""),
        "cut.webm": ("ok", "video_decode_error"),
        "pipe.mp4": ("dropped", "not_a_file"),
        "dangling.mp4": ("dropped", "unreadable"),
    }
    assert episodes.loc["ep\\xff.mp4", "frames"] == 2
    # a cut episode keeps the frames before the cut, and its row says why the rest is missing
    cut = episodes.loc["cut.webm"]
    assert 3 <= cut["frames"] < 30 and "stream ended" in cut["detail"]
    frames = m.read("assets").query("kind == 'frame'")
    assert set(frames["episode_path"]) == {"ep\\xff.mp4", "cut.webm"}
    assert frames["source"].str.startswith("show/ep\\xff.mp4#t=").sum() == 2
