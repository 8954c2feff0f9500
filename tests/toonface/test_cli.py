"""`toonface manifest ...` as a user types it, on a real manifest."""

import json
import subprocess
import sys

import pytest

from data_manifest import Manifest
from tests.conftest import PROJECT
from tests.data_manifest.test_store import album, asset, publish


def toonface(*args):
    return subprocess.run([sys.executable, "-m", "toonface.cli", *args], cwd=PROJECT, capture_output=True, text=True)


def test_manifest_history_show_and_diff(tmp_path):
    m = Manifest(tmp_path)
    publish(m, "r0", [album("a")], [asset("s1", "a/1.jpg")])
    publish(m, "r1", [], [asset("s2", "a/2.jpg", status="dropped")])

    history = toonface("manifest", "--data-root", str(tmp_path), "history")
    assert history.returncode == 0 and "r0" in history.stdout and "r1" in history.stdout

    shown = toonface("manifest", "--data-root", str(tmp_path), "--json", "show", "assets", "--version", "0")
    assert [r["asset_id"] for r in json.loads(shown.stdout)] == ["s1"]

    diff = toonface("manifest", "--data-root", str(tmp_path), "--json", "diff", "0", "1", "--table", "assets")
    assert [(r["asset_id"], r["change"], r["status"]) for r in json.loads(diff.stdout)] == [("s2", "added", "dropped")]

    missing = toonface("manifest", "--data-root", str(tmp_path), "show", "faces", "--version", "9")
    assert missing.returncode == 2 and "no manifest version 9" in missing.stderr


def test_ingest_reports_a_bad_albums_file_clearly(tmp_path):
    (tmp_path / "albums.yaml").write_text("albums:\n  - {id: x}\n")
    out = toonface("ingest", "--library", str(tmp_path), "--data-root", str(tmp_path / "data"))
    assert out.returncode != 0 and "`name` is required" in out.stderr


@pytest.mark.shared_data
def test_parse_prints_what_the_parser_sees_on_a_saved_page():
    from tests.conftest import SHARED

    page = SHARED / "fixtures" / "html" / "wikia_rick_and_morty_category_characters_2016.html"
    out = toonface("parse", str(page), "--json")
    assert out.returncode == 0, out.stderr
    records = json.loads(out.stdout)
    assert records[0] == {
        "name": "Rick Sanchez",
        "image_url": "http://vignette3.wikia.nocookie.net/rickandmorty/images/a/a6/Rick_Sanchez.png/revision/latest?cb=20160923150728",
        "source_url": "http://rickandmorty.wikia.com/wiki/Rick_Sanchez",
        "aliases": [],
        "found_by": "category @ div.category-gallery-item",
    }
    wrong = toonface(
        "parse",
        str(SHARED / "fixtures" / "html" / "wikipedia_list_of_films_featuring_time_loops_2024.html"),
        "--kind",
        "mediawiki",
    )
    assert wrong.returncode == 2 and "page shape not recognised" in wrong.stderr


@pytest.mark.shared_data
def test_detect_prints_boxes_per_image_in_argument_order(tmp_path):
    from models.det_data import read_cava
    from tests.conftest import CAVA_DEXTER

    val = read_cava(CAVA_DEXTER / "boxes.csv", split="val")
    images = [str(val[1].path), str(val[0].path)]
    out = toonface("detect", "--json", *images)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert [r["image"] for r in result] == images
    assert sum(len(r["boxes"]) for r in result) >= 1
    for r in result:
        for x1, y1, x2, y2, score in r["boxes"]:
            assert 0 <= x1 < x2 and 0 <= y1 < y2 and 0 < score <= 1

    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8 not really")
    partial = toonface("detect", "--json", str(broken), images[0])
    assert partial.returncode == 1 and "cannot read image" in partial.stderr
    assert [r["image"] for r in json.loads(partial.stdout)] == [images[0]]
    assert toonface("detect", "--detector", "yolo", images[0]).returncode == 2
    bad_size = toonface("detect", "--size", "500", images[0])
    assert bad_size.returncode == 2 and "multiple of 32" in bad_size.stderr
    no_size = toonface("detect", "--detector", "animeface", "--size", "512", images[0])
    assert no_size.returncode == 2 and "applies to retinanet" in no_size.stderr
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a weights file")
    bad_weights = toonface("detect", "--weights", str(junk), images[0])
    assert bad_weights.returncode == 2 and "not a readable safetensors" in bad_weights.stderr


def test_detect_refuses_a_bad_size_before_loading_torch():
    # A typo in --size is answered at once, not after the seconds torch takes to import.
    check = (
        "import sys\nfrom toonface.cli import main\n"
        "try:\n    main(['detect', '--size', SIZE, 'face.jpg'])\nexcept SystemExit as e:\n"
        "    print(e.code, 'torch' in sys.modules)\n"
    )
    for size, message in (("500", "multiple of 32"), ("4096", "between 128 and 2048"), ("big", "whole number")):
        out = subprocess.run(
            [sys.executable, "-c", check.replace("SIZE", repr(size))], cwd=PROJECT, capture_output=True, text=True
        )
        assert out.stdout.split() == ["2", "False"], (size, out.stdout, out.stderr)
        assert message in out.stderr


@pytest.mark.shared_data
def test_embed_writes_one_normalised_vector_per_image_in_argument_order(tmp_path):
    import numpy as np

    from tests.conftest import SHARED

    crops = sorted((SHARED / "data" / "anime_identities" / "moeimouto" / "test").glob("*/*.jpg"))[:3]
    assert len(crops) == 3
    out = tmp_path / "e.npy"
    run = toonface("embed", "--out", str(out), *map(str, crops))
    assert run.returncode == 0, run.stderr
    vectors = np.load(out)
    assert vectors.shape == (3, 512) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    alone = tmp_path / "alone.npy"  # the last image embedded on its own lands in the last row above
    assert toonface("embed", "--out", str(alone), str(crops[2])).returncode == 0
    np.testing.assert_allclose(np.load(alone)[0], vectors[2], atol=1e-5)
    assert float(vectors[0] @ vectors[1]) < 0.9999  # distinct images, distinct vectors

    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG not really")
    unreadable = toonface("embed", "--out", str(tmp_path / "x.npy"), str(crops[0]), str(broken))
    assert unreadable.returncode == 2 and "cannot read image" in unreadable.stderr
    assert not (tmp_path / "x.npy").exists()
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a weights file")
    bad_weights = toonface("embed", "--weights", str(junk), "--out", str(tmp_path / "y.npy"), str(crops[0]))
    assert bad_weights.returncode == 2 and "not a readable safetensors" in bad_weights.stderr


@pytest.mark.shared_data
def test_eval_detector_prints_coco_style_figures(tmp_path):
    import pandas as pd

    from tests.conftest import CAVA_DEXTER

    # 20 of the 200 val frames (their rows of the real boxes.csv): animeface takes ~0.25 s an image here
    boxes = pd.read_csv(CAVA_DEXTER / "boxes.csv").query("split == 'val'")
    boxes = boxes[boxes["image"].isin(sorted(boxes["image"].unique())[::10])]
    boxes.to_csv(tmp_path / "boxes.csv", index=False)
    out = toonface(
        "eval-detector",
        "--images",
        str(CAVA_DEXTER),
        "--boxes",
        str(tmp_path / "boxes.csv"),
        "--split",
        "val",
        "--detector",
        "animeface",
    )
    assert out.returncode == 0, out.stderr
    r = json.loads(out.stdout)
    assert r["images"] == 20 and r["faces"] == len(boxes) > 20 and r["model_id"].startswith("animeface")
    assert 0 <= r["ap"] <= r["ap50"] <= 1 and 0 <= r["recall"] <= 1
    assert set(r["by_area"]) == {"small", "medium", "large", "gate"}
    assert r["precision"] is None  # animeface has no precision to choose
    fp32 = toonface(
        "eval-detector",
        "--images",
        str(CAVA_DEXTER),
        "--boxes",
        str(tmp_path / "boxes.csv"),
        "--split",
        "val",
        "--precision",
        "fp32",
    )
    assert fp32.returncode == 0, fp32.stderr
    r = json.loads(fp32.stdout)
    assert r["precision"] == "fp32" and r["model_id"].startswith("retinanet-") and r["ap50"] > 0.8
    bad = toonface("eval-detector", "--images", str(CAVA_DEXTER), "--boxes", str(CAVA_DEXTER / "nope.csv"))
    assert bad.returncode == 2 and "nope.csv" in bad.stderr
