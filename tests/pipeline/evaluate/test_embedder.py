"""All protocols together (``evaluate``: album means, matching within albums) on synthetic embeddings;
plus a small real-data run, through the ``toonface eval-embedder`` CLI."""

from __future__ import annotations

import csv
import json
from collections import defaultdict

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from models.embedder import Embedder, save_embedder
from models.identity_data import identity_folders
from pipeline.evaluate.embedder import evaluate, main, public
from pipeline.evaluate.prelabel import prelabel_precision_recall, reference_split
from pipeline.evaluate.recognition import identification, verification
from tests.conftest import SHARED

MOE_TEST = SHARED / "data" / "anime_identities" / "moeimouto" / "test"
SCOOBY = SHARED / "data" / "cava" / "scooby_doo"


# ------------------------------------------------------------------------------------------- evaluate


def test_album_mean_is_subtracted_from_what_pre_labels_match_only():
    """One show's style lifts every face toward every other: faces of a character with no reference
    ('unknown') look 0.8 like the references of the other two and take their names. Subtracting the
    set's mean takes the style out of the pre-label's similarities; identification and verification
    still compare the plain embeddings."""
    rng = np.random.default_rng(2)
    style, a, b, u = np.eye(32)[:4]
    emb = np.stack([2 * style + x + 0.05 * rng.normal(size=32) for x in [a, b, u] for _ in range(10)])
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    labels = ["A"] * 10 + ["B"] * 10 + ["unknown"] * 10
    plain = evaluate(emb, labels, unknown_labels=["unknown"], seed=0, reference_draws=5)
    centred = evaluate(emb, labels, unknown_labels=["unknown"], seed=0, reference_draws=5, album_mean=True)
    assert centred["prelabel"]["album_mean"] and not plain["prelabel"]["album_mean"]
    assert plain["prelabel"]["false_labels_on_unknowns"] == 10 and centred["prelabel"]["false_labels_on_unknowns"] == 0
    assert centred["prelabel"]["precision"] == 1.0 and centred["prelabel"]["recall"] == 1.0
    assert centred["prelabel"]["over_reference_draws"]["precision_mean"] == 1.0
    assert plain["prelabel"]["over_reference_draws"]["precision_mean"] < 0.7
    assert public(centred)["identification"] == public(plain)["identification"]
    assert centred["verification"]["auc"] == plain["verification"]["auc"]
    # The same as subtracting the mean by hand and evaluating the plain way.
    mean = emb.mean(axis=0)
    by_hand = evaluate(
        (emb - mean) / np.linalg.norm(emb - mean, axis=1, keepdims=True), labels, unknown_labels=["unknown"], seed=0
    )
    assert by_hand["prelabel"]["_similarity"] == pytest.approx(centred["prelabel"]["_similarity"], abs=1e-6)


def test_within_album_keeps_another_albums_characters_out_of_pre_labels():
    """Two albums: x has A, y has B and C, and C (no reference) looks like x's A. Matched against every
    album's references C's faces take A's name; matched within their album they stay unlabelled. Each
    album's own mean is what --album-mean subtracts."""
    rng = np.random.default_rng(3)
    a, b, c, far = np.eye(16)[:4]
    emb = np.stack([x + 0.5 * far * (x is b) + 0.05 * rng.normal(size=16) for x in [a, b, c] for _ in range(8)])
    emb[16:] = a + 0.3 * c + 0.05 * rng.normal(size=(8, 16))  # C: like A, in the other album
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    labels = ["A"] * 8 + ["B"] * 8 + ["C"] * 8
    albums = ["x"] * 8 + ["y"] * 16
    pooled = evaluate(emb, labels, unknown_labels=["C"], seed=0, reference_draws=3, albums=albums)
    own = evaluate(emb, labels, unknown_labels=["C"], seed=0, reference_draws=3, albums=albums, within_album=True)
    assert own["prelabel"]["within_album"] and not pooled["prelabel"]["within_album"]
    assert pooled["prelabel"]["false_labels_on_unknowns"] == 8 and own["prelabel"]["false_labels_on_unknowns"] == 0
    assert own["prelabel"]["precision"] == 1.0 and own["prelabel"]["recall"] == 1.0
    assert own["prelabel"]["over_reference_draws"]["precision_mean"] == 1.0
    assert pooled["prelabel"]["over_reference_draws"]["precision_mean"] < 0.8
    assert public(own)["identification"] == public(pooled)["identification"]
    with pytest.raises(ValueError, match="album"):
        evaluate(emb, labels, within_album=True)
    # --album-mean: each album's own mean, the same as subtracting it by hand.
    centred = evaluate(emb, labels, unknown_labels=["C"], seed=0, albums=albums, album_mean=True)
    by_hand = np.concatenate([emb[:8] - emb[:8].mean(0), emb[8:] - emb[8:].mean(0)])
    plain = evaluate(by_hand / np.linalg.norm(by_hand, axis=1, keepdims=True), labels, unknown_labels=["C"], seed=0)
    assert plain["prelabel"]["_similarity"] == pytest.approx(centred["prelabel"]["_similarity"], abs=1e-6)


# ------------------------------------------------------------------------------------------ real data


@pytest.fixture(scope="module")
def tiny_model():
    threads = torch.get_num_threads()
    torch.set_num_threads(min(threads, 2))
    torch.manual_seed(0)
    yield Embedder(backbone="resnet18", dim=64, input_size=64).eval()
    torch.set_num_threads(threads)


def moeimouto_samples(n_id: int = 4, per: int = 10):
    by = defaultdict(list)
    for s in identity_folders(MOE_TEST):
        by[s.identity].append(s)
    chosen = [k for k in sorted(by) if len(by[k]) >= per][:n_id]
    return [s for k in chosen for s in by[k][:per]]


@pytest.mark.shared_data
def test_untrained_embedder_on_real_crops_end_to_end(tiny_model):
    samples = moeimouto_samples()
    assert len(samples) == 40 and len({s.identity for s in samples}) == 4
    emb = tiny_model.embed([s.load() for s in samples], batch_size=20)
    labels = [s.identity for s in samples]
    assert emb.shape == (40, 64) and np.allclose(np.linalg.norm(emb, axis=1), 1, atol=1e-5)
    ident = identification(emb, labels, seed=0)
    assert ident["gallery"] == 4 and 12 <= ident["probes"] <= 28
    assert all(0.0 <= ident[k] <= 1.0 for k in ("rank1", "rank5", "rank10")) and ident["rank5"] == 1.0
    ver = verification(emb, labels, seed=0)
    assert ver["positive_pairs"] == ver["negative_pairs"] > 0
    for k in ("accuracy", "best_accuracy", "auc"):
        assert 0.0 <= ver[k] <= 1.0
    assert abs(ver["auc"] - roc_auc_score(ver["_labels"], ver["_scores"])) < 1e-9
    refs, probes = reference_split(labels)
    pre = prelabel_precision_recall(emb[refs], np.asarray(labels)[refs], emb[probes], np.asarray(labels)[probes])
    assert pre["probes"] == 36 and pre["references"] == 4
    assert pre["recall"] is not None and 0.0 <= pre["recall"] <= 1.0


@pytest.mark.shared_data
def test_cli_on_folders_and_cava_unknown_distractors(tiny_model, tmp_path, capsys):
    weights = save_embedder(tiny_model, tmp_path / "tiny.safetensors")
    data = tmp_path / "folders"
    for s in moeimouto_samples(3, 6):  # links, not copies, of the shared crops
        (data / s.identity).mkdir(parents=True, exist_ok=True)
        (data / s.identity / s.path.rsplit("/", 1)[-1]).symlink_to(s.path)
    cava = tmp_path / "scooby_doo"  # a small boxes.csv that points at the shared frames
    cava.mkdir()
    with open(SCOOBY / "boxes.csv", newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r["split"] == "val"][:24]
    with open(cava / "boxes.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        for r in rows:
            w.writerow({**r, "image": str(SCOOBY / r["image"])})
    n_unknown = sum(r["identity"] == "unknown" for r in rows)
    assert n_unknown > 0
    out = tmp_path / "eval.json"
    args = [
        "--weights",
        str(weights),
        "--data",
        str(data),
        "--cava",
        str(cava),
        "--cava-split",
        "val",
        "--out",
        str(out),
        "--batch-size",
        "16",
    ]
    assert main(args) == 0
    printed = json.loads(capsys.readouterr().out)
    report = json.loads(out.read_text())
    assert printed == report
    assert report["model_id"].startswith("embedder-resnet18-")
    assert report["images"] == 18 + len(rows) and report["unknown_images"] == n_unknown
    assert report["identities"] == 3 + len({r["identity"] for r in rows} - {"unknown"})
    assert report["identification"]["distractors"] >= n_unknown
    assert "_scores" not in report["verification"] and "roc" in report["verification"]
    assert report["prelabel"]["unknown_probes"] == n_unknown and len(report["prelabel"]["sweep"]) == 14
    assert main(args[:-4] + ["--exclude-unknown"]) == 0
    excluded = json.loads(capsys.readouterr().out)
    assert excluded["unknown_images"] == 0 and excluded["images"] == 18 + len(rows) - n_unknown
    # Every reference matched by its 4 views; everything but the pre-label is the same.
    assert main(args[:-4] + ["--exclude-unknown", "--reference-views"]) == 0
    viewed = json.loads(capsys.readouterr().out)
    assert viewed["prelabel"]["reference_views"] == 4 and excluded["prelabel"]["reference_views"] == 1
    assert viewed["prelabel"]["references"] == 4 * excluded["prelabel"]["references"]
    assert viewed["identification"] == excluded["identification"]
    # Every probe matched by its 4 views (the references by their crop alone).
    assert main(args[:-4] + ["--exclude-unknown", "--candidate-views"]) == 0
    probed = json.loads(capsys.readouterr().out)
    assert (probed["prelabel"]["candidate_views"], probed["prelabel"]["reference_views"]) == (4, 1)
    assert (
        probed["prelabel"]["references"] == excluded["prelabel"]["references"]
        and excluded["prelabel"]["candidate_views"] == 1
    )
    assert probed["identification"] == excluded["identification"]
    assert probed["prelabel"]["over_reference_draws"] != excluded["prelabel"]["over_reference_draws"]
    # With the set's mean subtracted (the pipeline's subtract_album_mean): only the pre-label moves.
    assert main(args[:-4] + ["--exclude-unknown", "--candidate-views", "--album-mean"]) == 0
    centred = json.loads(capsys.readouterr().out)
    assert centred["prelabel"]["album_mean"] and not probed["prelabel"]["album_mean"]
    assert centred["identification"] == probed["identification"]
    assert centred["prelabel"]["over_reference_draws"] != probed["prelabel"]["over_reference_draws"]
    # Within its album (here: --data and --cava are two albums), a probe is matched only against its
    # own album's references.
    assert main(args[:-4] + ["--exclude-unknown", "--within-album"]) == 0
    within = json.loads(capsys.readouterr().out)
    assert within["prelabel"]["within_album"] and not excluded["prelabel"]["within_album"]
    assert within["identification"] == excluded["identification"]
    assert within["prelabel"]["labelled"] <= excluded["prelabel"]["labelled"]
