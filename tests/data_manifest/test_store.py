"""The versioned store on real Delta tables: versions, time travel, diff, crashes, two writers."""

import datetime as dt
import json
import os
import subprocess
import sys
import time

import pytest
from deltalake import DeltaTable

from data_manifest import Manifest, ManifestError

PROJECT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def album(album_id, name="A"):
    return {"album_id": album_id, "name": name, "region": "JP", "episodes_dir": "", "stills_dir": "", "run_id": None}


def asset(sha, source, status="ok"):
    return {
        "asset_id": sha,
        "source": source,
        "kind": "still",
        "album_id": "a",
        "size_bytes": 1,
        "format": "jpeg",
        "width": 10,
        "height": 10,
        "status": status,
        "faces": 0,
    }


def publish(manifest, run_id, albums=(), assets=(), **info):
    staging = manifest.staging(run_id)
    staging.write("albums", "part", [dict(a, run_id=run_id) for a in albums])
    staging.write("assets", "part", [dict(a, run_id=run_id) for a in assets])
    return manifest.publish(
        staging, {"config_hash": "c0", "model_ids": {"det": "m1"}, "counts": {"stills": len(assets)}, **info}
    )


def test_each_publish_is_a_version_with_its_metadata(tmp_path):
    m = Manifest(tmp_path)
    assert publish(m, "r0", [album("a")], [asset("s1", "a/1.jpg"), asset("s2", "a/2.jpg")], flow_run_id="f0") == 0
    assert publish(m, "r1", [album("a")], [asset("s2", "a/2.jpg"), asset("s3", "a/3.jpg")]) == 1
    hist = m.history()
    assert list(hist["run_id"]) == ["r0", "r1"]
    assert json.loads(hist["rows_added"][1])["assets"] == 1  # s2 was published already
    assert len(m.read("assets", version=0)) == 2 and len(m.read("assets")) == 3
    commit = DeltaTable(str(m.table_path("assets"))).history()[0]
    assert commit["toonface.run_id"] == "r1" and json.loads(commit["toonface.model_ids"]) == {"det": "m1"}
    assert DeltaTable(str(m.table_path("assets"))).transaction_version("toonface") == 1


def test_time_travel_by_date(tmp_path):
    m = Manifest(tmp_path)
    publish(m, "r0", [album("a")], [asset("s1", "a/1.jpg")])
    between = dt.datetime.now(dt.UTC)
    time.sleep(0.05)
    publish(m, "r1", [], [asset("s2", "a/2.jpg")])
    assert set(m.read("assets", as_of=between)["asset_id"]) == {"s1"}
    assert set(m.read("assets", as_of=dt.datetime.now(dt.UTC))["asset_id"]) == {"s1", "s2"}
    with pytest.raises(ManifestError, match="no manifest version was published"):
        m.read("assets", as_of="2001-01-01")
    with pytest.raises(ManifestError, match="no manifest version 7"):
        m.read("assets", version=7)


def test_diff_lists_added_and_changed_rows(tmp_path):
    m = Manifest(tmp_path)
    publish(m, "r0", [album("a", "Old name")], [asset("s1", "a/1.jpg")])
    publish(m, "r1", [album("b")], [asset("s2", "a/2.jpg")])
    d = m.diff("assets", 0, 1)
    assert d[["asset_id", "change"]].values.tolist() == [["s2", "added"]]
    assert m.diff("assets", 1, 0)[["asset_id", "change"]].values.tolist() == [["s2", "removed"]]
    assert m.diff("albums", 0, 1)["album_id"].tolist() == ["b"]


def test_an_unchanged_rerun_adds_no_rows_and_no_table_commits(tmp_path):
    m = Manifest(tmp_path)
    publish(m, "r0", [album("a")], [asset("s1", "a/1.jpg")])
    before = DeltaTable(str(m.table_path("assets"))).version()
    publish(m, "r1", [album("a")], [asset("s1", "a/1.jpg")])
    assert DeltaTable(str(m.table_path("assets"))).version() == before
    assert set(json.loads(m.history()["rows_added"][1]).values()) == {0}


def _publish_in_subprocess(data_root, run_id, n, env=None):
    code = f"""
import sys; sys.path.insert(0, {PROJECT!r})
from tests.data_manifest.test_store import publish, album, asset
from data_manifest import Manifest
publish(Manifest({str(data_root)!r}), {run_id!r}, [album('a')], [asset('{run_id}-'+str(i), 'a/'+str(i)) for i in range({n})])
"""
    return subprocess.Popen([sys.executable, "-c", code], env={**os.environ, **(env or {})})


def test_a_publisher_killed_midway_leaves_no_partial_version_and_is_rolled_forward(tmp_path):
    m = Manifest(tmp_path)
    publish(m, "r0", [album("a")], [asset("s1", "a/1.jpg")])
    # SIGKILL right after the assets table got this run's commit, before the runs row.
    proc = _publish_in_subprocess(tmp_path, "killed", 3, {"TOONFACE_FAULT_KILL_AFTER_COMMIT": "assets"})
    assert proc.wait(60) == -9
    assert len(DeltaTable(str(m.table_path("assets"))).to_pandas()) == 4  # rows are on disk ...
    assert m.latest_version() == 0 and len(m.read("assets")) == 1  # ... but not visible
    # The next publisher rolls the killed run forward first, then publishes its own.
    assert publish(m, "r2", [], [asset("s9", "a/9.jpg")]) == 2
    hist = m.history()
    assert list(hist["run_id"]) == ["r0", "killed", "r2"]
    assets = m.read("assets")
    assert len(assets) == 5 and not assets.duplicated(["asset_id", "source"]).any()
    assert len(m.read("assets", version=1)) == 4


@pytest.mark.parametrize("point", ["marker", "albums", "assets", "runs"])
def test_a_publish_killed_at_any_point_with_a_start_time_is_rolled_forward(tmp_path, point):
    # The runs row carries started_at; the marker it is rebuilt from must give it back as a time.
    m = Manifest(tmp_path)
    publish(m, "r0", [album("a")], [asset("s1", "a/1.jpg")])
    started = "2026-12-05T01:02:03+00:00"
    code = f"""
import datetime as dt, sys; sys.path.insert(0, {PROJECT!r})
from tests.data_manifest.test_store import publish, album, asset
from data_manifest import Manifest
publish(Manifest({str(tmp_path)!r}), 'killed', [album('b')], [asset('k'+str(i), 'b/'+str(i)) for i in range(3)],
        started_at=dt.datetime.fromisoformat({started!r}))
"""
    proc = subprocess.run([sys.executable, "-c", code], env={**os.environ, "TOONFACE_FAULT_KILL_AFTER_COMMIT": point})
    assert proc.returncode == -9
    assert publish(m, "r2", [], [asset("s9", "a/9.jpg")]) == 2
    hist = m.history()
    assert list(hist["run_id"]) == ["r0", "killed", "r2"]
    assert hist["started_at"][1] == dt.datetime.fromisoformat(started)
    assert sorted(m.read("assets", version=1)["asset_id"]) == ["k0", "k1", "k2", "s1"]
    assert sorted(m.read("albums")["album_id"]) == ["a", "b"]
    assert not (m.root / "staging").exists() or not any((m.root / "staging").iterdir())


def test_a_run_after_a_half_published_run_whose_staging_was_deleted_keeps_its_own_rows(tmp_path):
    m = Manifest(tmp_path)
    publish(m, "r0", [album("a")], [asset("s1", "a/1.jpg")])
    proc = _publish_in_subprocess(tmp_path, "killed", 3, {"TOONFACE_FAULT_KILL_AFTER_COMMIT": "assets"})
    assert proc.wait(60) == -9
    import shutil

    shutil.rmtree(m.root / "staging" / "killed")  # what a user did by hand to unblock the root
    # r2 gets the manifest version the killed run had reached: its own commits must still be made.
    assert publish(m, "r2", [album("c")], [asset("s9", "a/9.jpg")]) == 1
    assert "s9" in set(m.read("assets")["asset_id"]) and "c" in set(m.read("albums")["album_id"])


def test_two_writers_at_once_both_land_intact(tmp_path):
    procs = [_publish_in_subprocess(tmp_path, f"w{i}", 200) for i in range(2)]
    assert [p.wait(120) for p in procs] == [0, 0]
    m = Manifest(tmp_path)
    assert sorted(m.history()["manifest_version"]) == [0, 1]
    assets = m.read("assets")
    assert len(assets) == 400 and not assets.duplicated(["asset_id", "source"]).any()
    assert len(m.read("albums")) == 1


def test_abandoned_staging_is_removed_but_a_live_one_is_kept(tmp_path):
    from data_manifest.store import file_lock

    m = Manifest(tmp_path)
    dead, live = m.staging("dead"), m.staging("live")
    dead.write("assets", "p", [asset("x", "a/x")])
    live.write("assets", "p", [asset("y", "a/y")])
    with file_lock(live.dir / ".active"):
        assert m.remove_abandoned_staging() == ["dead"]
    assert live.dir.exists() and not dead.dir.exists()


def test_reading_before_any_publish_is_a_clear_error(tmp_path):
    with pytest.raises(ManifestError, match="no manifest published yet"):
        Manifest(tmp_path).read("faces")
    with pytest.raises(ManifestError, match="unknown table"):
        Manifest(tmp_path).table_path("nope")


def test_a_short_process_that_reads_the_manifest_exits_cleanly(tmp_path):
    # deltalake's own scanner made about half of such processes abort at exit (exit 134, "terminate
    # called without an active exception"): a scheduler saw a failed command after a good merge.
    m = Manifest(tmp_path)
    publish(m, "r0", [album("a")], [asset("s1", "a/1.jpg")])
    code = f"""
import sys; sys.path.insert(0, {PROJECT!r})
from data_manifest import Manifest
m = Manifest({str(tmp_path)!r})
assert len(m.read("assets")) == 1 and len(m.read("labels")) == 0 and m.existing_keys("assets")
"""
    codes = [subprocess.run([sys.executable, "-c", code]).returncode for _ in range(8)]
    assert codes == [0] * 8
