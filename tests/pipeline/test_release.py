"""`toonface release`: tags a manifest version and exports its verified faces, split by identity."""

import csv
import json

from data_manifest import Manifest
from pipeline.annotate.catalogue import read_releases
from pipeline.annotate.merge import merge_decisions
from pipeline.annotate.service import AnnotationService, Settings
from pipeline.release import slugify, split_identities
from pipeline.store import ContentStore
from tests.pipeline.annotate.fakedata import build_data_root
from toonface.cli import main

VERIFIED = {
    "p0": "toon/alice",
    "p4": "toon/alice",
    "p1": "toon/bob",
    "p2": "toon/bob",
    "k0": "toon/dan",
    "k1": "toon/dan",
    "g0": "toon/carol",
    "g2": "toon/carol",
    "g3": "toon/carol",
    "g5": "toon/carol",
}


def label_some(root):
    svc = AnnotationService(root, Settings(gold_rate=0))
    for face in ("p0", "p4", "p1", "k0", "k1"):
        svc.decide("ann", face, svc.catalogue.proposal(face)[0], "same")
    svc.decide("ann", "p2", "toon/alice", "relabel", "toon/bob")
    svc.decide("ann", "p5", "toon/bob", "different")
    svc.confirm_grid("ann", "toon/carol", [f"g{i}" for i in range(6)], ["g1", "g4"])
    svc.close()
    return merge_decisions(root)


def test_release_exports_identity_disjoint_splits_with_a_card(tmp_path, capsys):
    root, out = tmp_path / "data", tmp_path / "out"
    info = build_data_root(root)
    assert label_some(root) == 1
    assert main(["release", "v1", "--data-root", str(root), "--out", str(out), "--test-fraction", "0.25"]) == 0
    assert "release v1: manifest version 1, 10 faces of 4 identities" in capsys.readouterr().out
    rel = out / "v1"
    expected = [
        "DATASET_CARD.md",
        "PROTOCOL.md",
        "distractors",
        "labels.csv",
        "protocol",
        "release.json",
        "test",
        "train",
    ]
    assert sorted(p.name for p in rel.iterdir()) == expected

    rows = list(csv.DictReader(open(rel / "labels.csv", encoding="utf-8")))
    assert {r["face_id"]: r["identity"] for r in rows} == VERIFIED  # rejected faces are not exported
    store = ContentStore(root / "store")
    for r in rows:
        path = rel / r["file"]
        assert r["file"] == f"{r['split']}/{slugify(r['identity'])}/{r['face_id']}.jpg"
        assert path.read_bytes() == store.get(info["faces"][r["face_id"]])
        assert r["annotators"] == '["ann"]' and r["embedder"] == "emb-test-0001" and r["detector"] == "animeface"
    on_disk = {(p.parent.parent.name, p.parent.name, p.stem) for p in rel.glob("*/*/*.jpg")}
    assert on_disk == {(r["split"], r["slug"], r["face_id"]) for r in rows}
    train = {r["identity"] for r in rows if r["split"] == "train"}
    test = {r["identity"] for r in rows if r["split"] == "test"}
    assert len(test) == 1 and len(train) == 3 and not train & test  # identity-disjoint
    assert test == split_identities(sorted(set(VERIFIED.values())), 0.25, 0)  # seeded, reproducible
    assert {p.name for p in (rel / "train").iterdir()}.isdisjoint({p.name for p in (rel / "test").iterdir()})

    card = (rel / "DATASET_CARD.md").read_text()
    for needle in (
        "| manifest version | 1",
        "animeface (animeface-2.0.3)",
        "emb-test-0001",
        "| prelabel_threshold | 0.6 |",
        "| dedup_threshold | 0.95 |",
        "| min_sharpness | 30.0 |",
        "| reference_views | True |",
        "| toon/carol | `toon__carol` | ",
        "| toon | Toon Town | 10 |",
        "Annotators (verified faces exported): ann (10)",
        "by identity",
    ):
        assert needle in card, needle
    tags = read_releases(root)
    assert [(t["name"], t["manifest_version"], t["faces"]) for t in tags] == [("v1", 1, 10)]
    assert json.loads((rel / "release.json").read_text()) == tags[0]


def test_tags_are_append_only_and_released_labels_become_gold(tmp_path):
    root, out = tmp_path / "data", tmp_path / "out"
    build_data_root(root)
    assert main(["release", "empty", "--data-root", str(root), "--out", str(out)]) == 2  # nothing verified yet
    label_some(root)
    args = ["--data-root", str(root), "--out", str(out), "--seed", "3"]
    assert main(["release", "v1", *args]) == 0
    before = (root / "manifest" / "releases.json").read_text()
    assert main(["release", "v1", *args]) == 2  # a name is used once
    assert main(["release", "../evil", *args]) == 2
    assert (root / "manifest" / "releases.json").read_text() == before
    assert main(["release", "old", "--version", "0", *args]) == 2  # version 0 has no labels

    # faces verified in a release are gold items of the next verification round
    svc = AnnotationService(root, Settings(gold_rate=0.5))
    assert svc.catalogue.gold == VERIFIED
    q = svc.queue("bea", 4)
    assert [i["face_id"] in VERIFIED for i in q] == [False, True, False, True]
    svc.decide("bea", "p3", "toon/bob", "same")
    svc.close()
    assert merge_decisions(root) == 2
    assert main(["release", "v2", *args]) == 0
    tags = read_releases(root)
    assert [t["name"] for t in tags] == ["v1", "v2"] and tags[0] == json.loads(before)
    assert (root / "manifest" / "releases.json").read_text().startswith(before)  # appended, never rewritten
    assert tags[1]["manifest_version"] == 2 and tags[1]["faces"] == 11
    assert not list(out.glob(".*tmp*"))  # no half-written exports
    assert len(Manifest(root).read("labels", version=2)) == len(Manifest(root).read("labels", version=1)) + 1
