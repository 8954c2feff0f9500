"""Shard guards: an unexpected error costs its inputs a row each; a fault of the run itself fails it."""

import errno

import pytest

from data_manifest import Manifest
from pipeline.config import IngestConfig
from pipeline.episodes import EpisodeShard
from pipeline.faults import guarded, is_run_fault
from pipeline.runner import RunContext
from pipeline.sources.library import Album
from pipeline.stills import StillsShard
from pipeline.web_crawl import record_crawl_failure
from pipeline.web_images import ImageJob, WebShard


def broken_stage(shard, ctx):
    return [][1]  # an IndexError, as a bug in a stage would raise


def test_a_stills_shard_that_raises_gives_each_still_an_internal_error_row(tmp_path):
    ctx = RunContext(str(tmp_path), "run-1", IngestConfig())
    shard = StillsShard("toon", 0, (("/lib/toon/a.jpg", "toon/a.jpg"), ("/lib/toon/b.jpg", "toon/b.jpg")))
    counts = guarded(broken_stage, shard, ctx)
    assert counts["internal_errors"] == 2 and counts["drop.image.internal_error"] == 2
    rows = Manifest(tmp_path).staging("run-1").read("assets").to_pandas()
    assert sorted(rows["source"]) == ["toon/a.jpg", "toon/b.jpg"]
    assert set(rows["drop_reason"]) == {"internal_error"} and set(rows["status"]) == {"dropped"}
    assert rows["detail"].str.startswith("IndexError: list index out of range").all()


def test_an_episode_shard_that_raises_gives_the_episode_an_internal_error_row(tmp_path):
    ctx = RunContext(str(tmp_path), "run-1", IngestConfig())
    shard = EpisodeShard("toon", "/lib/toon/episodes/e1.mp4", "e1.mp4", 0)
    assert guarded(broken_stage, shard, ctx)["drop.episode.internal_error"] == 1
    (row,) = Manifest(tmp_path).staging("run-1").read("episodes").to_pylist()
    assert row["episode_path"] == "e1.mp4" and row["drop_reason"] == "internal_error"


def test_a_full_disk_or_an_unreadable_manifest_still_fails_the_run(tmp_path):
    ctx = RunContext(str(tmp_path), "run-1", IngestConfig())
    shard = StillsShard("toon", 0, (("/lib/a.jpg", "a.jpg"),))

    def disk_full(shard, ctx):
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(OSError, match="No space left"):
        guarded(disk_full, shard, ctx)
    assert is_run_fault(MemoryError()) and not is_run_fault(FileNotFoundError(errno.ENOENT, "gone"))


def test_a_web_shard_or_a_crawl_that_raises_leaves_rows_for_its_urls(tmp_path):
    ctx = RunContext(str(tmp_path), "run-1", IngestConfig())
    jobs = (
        ImageJob("http://a.test/1.jpg", "toon", "Kai", "Kai Toon"),
        ImageJob("http://a.test/2.jpg", "toon", None, None),
    )
    counts = guarded(broken_stage, WebShard("toon", 0, jobs), ctx)
    assert counts["internal_errors"] == 2 and counts["drop.image.internal_error"] == 2
    assets = Manifest(tmp_path).staging("run-1").read("assets").to_pandas().set_index("source")
    assert assets.loc["http://a.test/1.jpg", "character"] == "Kai" and set(assets["kind"]) == {"web"}

    album = Album("toon", "Toon Town", encyclopedia=("http://wiki.test/Characters",))
    jobs, counts = guarded(broken_stage, album, ctx, on_failure=record_crawl_failure)
    assert jobs == [] and counts == {"drop.crawl.internal_error": 1, "internal_errors": 1}
    (row,) = Manifest(tmp_path).staging("run-1").read("downloads").to_pylist()
    assert row["url"] == "http://wiki.test/Characters" and row["reason"] == "internal_error" and not row["ok"]
    assert row["detail"].startswith("IndexError")
