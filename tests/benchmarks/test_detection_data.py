"""The detection data rebuild: public repositories' box formats into one boxes.csv per source, from a
real git repository at a commit, with pictures of another source dropped."""

from __future__ import annotations

import csv
import importlib
import json
import subprocess

import numpy as np
import pytest

from models.det_data import parse_source
from tests.conftest import CAVA_DEXTER

rebuild = importlib.import_module("benchmarks.detection_data.rebuild")

VOC = """<annotation><filename>{name}</filename><size><width>480</width><height>360</height></size>
<object><name>anime face</name><bndbox><xmin>10</xmin><ymin>20</ymin><xmax>110</xmax><ymax>140</ymax></bndbox></object>
<object><name>body</name><bndbox><xmin>0</xmin><ymin>0</ymin><xmax>300</xmax><ymax>300</ymax></bndbox></object>
</annotation>"""


def dexter_val(n):
    with (CAVA_DEXTER / "boxes.csv").open(newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["split"] == "val"]
    names = sorted({r["image"] for r in rows})[:n]
    return [(CAVA_DEXTER / name, [r for r in rows if r["image"] == name]) for name in names]


def git_repo(root, files: dict) -> str:
    """A real git repository holding ``files`` (path -> bytes); returns the commit."""
    root.mkdir(parents=True)
    for path, data in files.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_bytes(data)
    git = ["git", "-C", str(root), "-c", "user.name=t", "-c", "user.email=t@example.org"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-qm", "data"], check=True)
    return subprocess.run([*git, "rev-parse", "HEAD"], check=True, capture_output=True, text=True).stdout.strip()


@pytest.mark.shared_data
def test_three_formats_become_one_boxes_csv_the_trainer_reads(tmp_path):
    (a, a_rows), (b, _), (c, _), (d, _) = dexter_val(4)
    landmarks = "\n".join(f"{x} {y}" for x, y in [(100, 100), (160, 100), (130, 190)])
    files = {
        "cava/a.jpg": a.read_bytes(),
        "cava/b.jpg": b.read_bytes(),  # no line: a frame without faces, left out and counted
        "cava_annotations.txt": "".join(
            f"a.jpg {r['x1']} {r['y1']} {r['x2']} {r['y2']} {r['identity']}\r\n" for r in a_rows
        ).encode(),
        "voc/img/c.jpg": c.read_bytes(),
        "voc/ann/c.xml": VOC.format(name="c.jpg").encode(),
        "lm/d.jpg": d.read_bytes(),
        "lm/d.txt": landmarks.encode(),
    }
    commit = git_repo(tmp_path / "mirror" / "someone+toons" / "repo", files)
    entry = {
        "name": "toons",
        "role": "test",
        "repo": "someone/toons",
        "commit": commit,
        "specs": {"eval": "cava:{cache}:test"},
        "parts": [
            {
                "format": "cava_txt",
                "split": "test",
                "root": "cava",
                "annotations": "cava_annotations.txt",
                "prefix": "x_",
            },
            {"format": "voc", "split": "test", "root": "voc/img", "annotations": "voc/ann", "classes": ["anime face"]},
            {"format": "landmarks", "split": "test", "root": "lm", "forehead": 0.3},
        ],
    }
    summary = rebuild.rebuild_one(entry, tmp_path / "mirror", tmp_path / "cache", rebuild.SeenPictures())
    assert summary["splits"] == {"test": {"images": 3, "boxes": len(a_rows) + 2}}
    assert summary["excluded"] == {"images without a face box": 1}
    items = {it.path.name: it for it in parse_source(f"cava:{tmp_path / 'cache' / 'toons'}:test")}
    assert set(items) == {"x_a.jpg", "c.jpg", "d.jpg"}
    assert items["c.jpg"].boxes == ((10, 20, 110, 140),)  # the body box is not a face
    assert items["d.jpg"].boxes == ((100, 100 - 0.3 * 90, 160, 190),)  # landmarks' extent plus a forehead
    first = a_rows[0]
    assert items["x_a.jpg"].boxes[0] == tuple(float(first[k]) for k in ("x1", "y1", "x2", "y2"))
    assert json.loads((tmp_path / "cache" / "toons" / "summary.json").read_text()) == summary


@pytest.mark.shared_data
def test_a_picture_already_in_another_source_is_dropped(tmp_path):
    (a, a_rows), (b, b_rows) = dexter_val(2)
    seen = rebuild.SeenPictures()
    assert not seen.seen_before(a, "test_show")
    line = "{} 10 10 90 90 face\n"
    files = {
        "f/a.jpg": a.read_bytes(),
        "f/b.jpg": b.read_bytes(),
        "ann.txt": (line.format("a.jpg") + line.format("b.jpg")).encode(),
    }
    commit = git_repo(tmp_path / "mirror" / "other+copies" / "repo", files)
    entry = {
        "name": "copies",
        "role": "train",
        "repo": "other/copies",
        "commit": commit,
        "parts": [{"format": "cava_txt", "split": "train", "root": "f", "annotations": "ann.txt"}],
    }
    summary = rebuild.rebuild_one(entry, tmp_path / "mirror", tmp_path / "cache", seen)
    assert summary["splits"] == {"train": {"images": 1, "boxes": 1}}
    assert summary["excluded"] == {"pictures repeating one of another source": 1}
    assert not (tmp_path / "cache" / "copies" / "images" / "train" / "a.jpg").exists()


def test_every_listed_source_has_a_role_a_licence_and_an_eval_or_train_spec():
    entries = rebuild.sources()
    assert len({e["name"] for e in entries}) == len(entries)
    for e in entries:
        assert e["role"] in ("train", "tune", "test") and e["licence"] and e["style"]
        assert set(e["specs"]) <= {"train", "eval"} and e["specs"]
        assert e.get("shared") or (len(e["commit"]) == 40 and e["parts"])
    rebuild.check_split(images=False)
    assert np.all([e["role"] != "train" or "train" in e["specs"] for e in entries])


@pytest.mark.shared_data
def test_the_per_source_benchmark_scores_each_source_of_a_role(capsys):
    bench = importlib.import_module("benchmarks.bench_detector_sources")
    assert bench.main(["--role", "train", "--source", "dexters_laboratory", "--limit", "4", "--size", "256"]) == 0
    report = json.loads(capsys.readouterr().out.splitlines()[-1])
    (row,) = report["rows"]
    assert row["source"] == "dexters_laboratory" and row["images"] == 4 and row["faces"] > 0
    assert 0 <= row["gate_ap50"] <= 1 and row["model_id"].startswith("retinanet-")
    assert bench.main(["--role", "train", "--source", "no_such_show"]) == 2  # said, not an empty table
