"""A release of real anime faces carries the challenge protocols, and `toonface eval-release` scores a
model on them: its figures equal an independent computation (scikit-learn's ROC AUC, a brute-force CMC)."""

import csv
import datetime as dt
import json
import shutil

import cv2
import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from data_manifest import Manifest
from pipeline.identity.embedding import load
from pipeline.release import make_release
from pipeline.release_protocol import ProtocolSettings
from pipeline.store import ContentStore
from tests.pipeline.identity.crops import HOLO, needs_weights
from toonface.cli import main

pytestmark = [pytest.mark.shared_data, needs_weights]
NAMES = ["ame", "calli", "gura", "irys", "kiara", "fuwawa"]


def publish_verified_faces(root, per_identity=6, unlabelled=4) -> None:
    """Kept faces of six identities, all verified, and a few unlabelled faces of another one."""
    store, faces, labels = ContentStore(root / "store"), [], []
    files = [(name, path) for name in NAMES for path in sorted((HOLO / name).glob("*.jpg"))[:per_identity]]
    files += [(None, path) for path in sorted((HOLO / "gigi").glob("*.jpg"))[:unlabelled]]
    for i, (name, path) in enumerate(files):
        sha = store.put(path.read_bytes(), ".jpg")
        faces.append({"face_id": f"f{i}", "asset_id": sha, "album_id": "holo", "status": "kept", "crop_sha": sha})
        if name:
            labels.append({"face_id": f"f{i}", "identity": f"holo/{name}", "verdict": "verified", "decision_id": f"d{i}",
                           "decided_at": dt.datetime(2026, 12, 1, tzinfo=dt.UTC), "annotators": '["ann"]'})  # fmt: skip
    assets = [{"asset_id": f["asset_id"], "source": f["face_id"], "kind": "still", "album_id": "holo"} for f in faces]
    manifest = Manifest(root)
    staging = manifest.staging("r0")
    for table, rows in (("faces", faces), ("assets", assets), ("labels", labels)):
        staging.write(table, "part", [dict(r, run_id="r0") for r in rows])
    staging.write("albums", "part", [{"album_id": "holo", "name": "Holo", "region": "JP", "run_id": "r0"}])
    manifest.publish(staging, {"config_hash": "c", "model_ids": {}, "counts": {}})


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    publish_verified_faces(root)
    record = make_release(root, "r1", test_fraction=0.5, protocol=ProtocolSettings(pairs=20))
    return root, record


def read(path):
    with open(path, encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_the_protocols_use_only_test_identities_and_release_files(release):
    root, record = release
    folder = root / "releases" / "r1"
    labels = read(folder / "labels.csv")
    train = {r["identity"] for r in labels if r["split"] == "train"}
    identification = read(folder / "protocol" / "identification.csv")
    probed = {r["identity"] for r in identification if r["role"] in ("gallery", "probe")}
    assert len(probed) == 3 and not probed & train
    assert sum(r["role"] == "gallery" for r in identification) == 3 and record["protocols"]["probes"] == 15
    assert sum(r["role"] == "distractor" for r in identification) == 4  # the unlabelled faces
    pairs = read(folder / "protocol" / "verification.csv")
    assert all((folder / p[k]).is_file() for p in pairs for k in ("file_a", "file_b"))
    assert sum(p["same"] == "1" for p in pairs) == sum(p["same"] == "0" for p in pairs) == 20
    assert sorted({int(p["fold"]) for p in pairs}) == list(range(10))
    assert record["protocols"]["mining_embedder"] == load("default").model_id
    assert "rank k" in (folder / "PROTOCOL.md").read_text()


def test_hard_mined_pairs_are_harder_than_random_ones_for_the_mining_model(release):
    root, _ = release
    folder = root / "releases" / "r1"
    test = [r for r in read(folder / "labels.csv") if r["split"] == "test"]
    vectors = load("default").model.embed([cv2.imread(str(folder / r["file"])) for r in test])
    similarity = vectors @ vectors.T
    same = np.array([[a["identity"] == b["identity"] for b in test] for a in test])
    upper = np.triu(np.ones_like(same), 1).astype(bool)
    pairs = read(folder / "protocol" / "verification.csv")
    mined_neg = [float(p["mined_similarity"]) for p in pairs if p["same"] == "0"]
    mined_pos = [float(p["mined_similarity"]) for p in pairs if p["same"] == "1"]
    assert np.mean(mined_neg) > similarity[upper & ~same].mean()  # negatives: more alike than random ones
    assert np.mean(mined_pos) < similarity[upper & same].mean()  # positives: less alike than random ones


def test_eval_release_equals_an_independent_computation(release, tmp_path, capsys):
    root, _ = release
    folder = root / "releases" / "r1"
    identification, pairs = (
        read(folder / "protocol" / "identification.csv"),
        read(folder / "protocol" / "verification.csv"),
    )
    files = sorted({r["file"] for r in identification} | {p[k] for p in pairs for k in ("file_a", "file_b")})
    rng = np.random.default_rng(0)
    matrix = rng.normal(size=(len(files), 16))  # any model: here, random embeddings
    np.save(tmp_path / "x.npy", matrix)
    (tmp_path / "ids.json").write_text(json.dumps(files))
    args = ["eval-release", "r1", "--data-root", str(root), "--embeddings", str(tmp_path / "x.npy")]
    assert main([*args, "--ids", str(tmp_path / "ids.json"), "--out", str(tmp_path / "out.json")]) == 0
    result = json.loads((tmp_path / "out.json").read_text())

    unit = {f: v / np.linalg.norm(v) for f, v in zip(files, matrix)}
    scores = [unit[p["file_a"]] @ unit[p["file_b"]] for p in pairs]
    assert result["verification"]["auc"] == pytest.approx(roc_auc_score([p["same"] == "1" for p in pairs], scores))
    gallery = [r for r in identification if r["role"] != "probe"]
    hits = {1: 0, 5: 0, 10: 0}
    probes = [r for r in identification if r["role"] == "probe"]
    for probe in probes:  # brute force: sort the gallery by similarity, find the own identity's gallery face
        order = sorted(gallery, key=lambda g: -(unit[g["file"]] @ unit[probe["file"]]))
        rank = 1 + next(i for i, g in enumerate(order) if g["role"] == "gallery" and g["identity"] == probe["identity"])
        for k in hits:
            hits[k] += rank <= k
    for k, n in hits.items():
        assert result["identification"][f"rank{k}"] == pytest.approx(n / len(probes))
    assert 0.0 <= result["verification"]["accuracy"] <= 1.0 and len(result["verification"]["fold_accuracies"]) == 10


def test_eval_release_with_weights_and_its_refusals(release, capsys):
    root, _ = release
    assert main(["eval-release", "r1", "--data-root", str(root)]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["model"] == load("default").model_id and result["identification"]["rank1"] is not None
    assert main(["eval-release", "nope", "--data-root", str(root)]) == 2
    assert main(["report", "--data-root", str(root), "--release", "r1", "--out", str(root / "report-r1")]) == 0
    assert json.loads((root / "report-r1" / "figures.json").read_text())["totals"]["verified_faces"] == 36
    shutil.rmtree(root / "releases" / "r1" / "protocol")
    assert main(["eval-release", "r1", "--data-root", str(root)]) == 2
    assert "has no protocols" in capsys.readouterr().err
