"""Recognition protocols (identification / verification / pre-labelling) on synthetic embeddings with
known structure, cross-checked against scikit-learn and brute force; plus a small real-data run."""
from __future__ import annotations

import csv
import json
from collections import Counter, defaultdict

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score
from sklearn.metrics import roc_curve as sk_roc_curve

from models.embedder import Embedder, save_embedder
from models.eval_embedder import (MARGIN_SWEEP, SWEEP_THRESHOLDS, accuracy_at, auc, best_threshold, evaluate, identification, main,
                                  prelabel_over_reference_draws, prelabel_precision_recall, public, reference_rows,
                                  reference_split, roc_curve, tar_at_far, verification)
from models.train_embedder import identity_folders
from tests.conftest import SHARED

MOE_TEST = SHARED / "data" / "anime_identities" / "moeimouto" / "test"
SCOOBY = SHARED / "data" / "cava" / "scooby_doo"


def clusters(n_id: int, per: int, noise: float, dim: int = 32, seed: int = 0, prefix: str = "id"):
    """Unit embeddings: a random unit centre per identity plus Gaussian noise (re-normalised)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_id, dim))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    emb = np.repeat(centres, per, axis=0) + noise * rng.normal(size=(n_id * per, dim))
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    labels = [f"{prefix}{i:03d}" for i in range(n_id) for _ in range(per)]
    return emb.astype(np.float32), labels


def brute_best_accuracy(scores, y) -> float:
    s = np.unique(scores)
    cuts = np.r_[s[0] - 1.0, (s[1:] + s[:-1]) / 2, s[-1] + 1.0]
    return max(np.mean((scores >= t) == y.astype(bool)) for t in cuts)


# ------------------------------------------------------------------------------------ identification

def test_identification_perfectly_separated_with_distractors():
    emb, labels = clusters(30, 9, noise=0.02)
    d_emb, _ = clusters(40, 1, noise=0.0, seed=7)
    emb = np.vstack([emb, d_emb])
    labels = labels + ["unknown"] * len(d_emb)
    r = identification(emb, labels, seed=3, distractor_labels=["unknown"])
    assert r["rank1"] == r["rank5"] == r["rank10"] == 1.0
    assert r["cmc"] == [1.0] * 10
    assert r["identities"] == 30 and r["distractors"] == 40 and r["gallery"] == 70
    assert 30 * 3 <= r["probes"] <= 30 * 7
    # Deterministic for a seed; another seed draws other probes.
    r2 = identification(emb, labels, seed=3, distractor_labels=["unknown"])
    assert np.array_equal(r["_probe_index"], r2["_probe_index"])
    r3 = identification(emb, labels, seed=4, distractor_labels=["unknown"])
    assert not np.array_equal(r["_probe_index"], r3["_probe_index"])
    assert json.loads(json.dumps(public(r))) == public(r)


def test_identification_overlapping_and_brute_force_ranks():
    emb, labels = clusters(60, 8, noise=0.2, dim=16)
    r = identification(emb, labels, seed=0)
    assert 0.0 < r["rank1"] < 1.0
    assert r["rank1"] <= r["rank5"] <= r["rank10"] <= 1.0
    assert all(a <= b for a, b in zip(r["cmc"], r["cmc"][1:]))
    assert r["cmc"][0] == r["rank1"] and r["cmc"][4] == r["rank5"]
    # Brute force: rank of each probe's own gallery template in a full sort of the gallery.
    lab = np.asarray(labels)
    g = r["_gallery_index"]
    for p, rank in zip(r["_probe_index"], r["_ranks"]):
        order = np.argsort(-(emb[g] @ emb[p]))
        assert np.flatnonzero(lab[g][order] == lab[p])[0] + 1 == rank
    assert r["rank1"] == pytest.approx(np.mean(r["_ranks"] == 1))


def test_identification_protocol_structure():
    rng = np.random.default_rng(1)
    sizes = {"a": 2, "b": 3, "c": 5, "d": 12, "e": 1, "f": 20}
    labels = [k for k, n in sizes.items() for _ in range(n)] + ["unknown"] * 6 + ["extra"] * 4
    emb = rng.normal(size=(len(labels), 8))
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    r = identification(emb, labels, seed=0, distractor_labels={"unknown", "extra"})
    lab = np.asarray(labels)
    g, p = r["_gallery_index"], r["_probe_index"]
    assert not set(g) & set(p)
    probe_counts = Counter(lab[p])
    assert probe_counts["a"] == 1 and probe_counts["b"] == 2  # as available
    assert 3 <= probe_counts["c"] <= 4 and 3 <= probe_counts["d"] <= 7 and 3 <= probe_counts["f"] <= 7
    assert "unknown" not in probe_counts and "extra" not in probe_counts and "e" not in probe_counts
    gallery_counts = Counter(lab[g])
    for ident in "abcdf":
        assert gallery_counts[ident] == 1  # exactly one template per probed identity
    assert gallery_counts["unknown"] == 6 and gallery_counts["extra"] == 4 and gallery_counts["e"] == 1
    assert r["distractors"] == 11 and r["single_image_identities"] == 1 and r["identities"] == 5


def test_identification_ties_count_against_the_probe():
    emb = np.tile([[1.0, 0.0]], (20, 1))  # a collapsed model: every image embeds the same
    labels = [f"id{i // 5}" for i in range(20)]
    r = identification(emb, labels, seed=0)
    assert r["rank1"] == 0.0 and r["gallery"] == 4 and r["cmc"][3] == 1.0


# -------------------------------------------------------------------------------------- verification

def test_roc_auc_match_sklearn_including_ties():
    rng = np.random.default_rng(5)
    y = rng.integers(0, 2, 500)
    scores = np.round(rng.normal(size=500) + 0.8 * y, 1)  # rounding makes many ties across classes
    for drop in (False, True):
        fpr, tpr, thr = roc_curve(scores, y, drop_intermediate=drop)
        sk_fpr, sk_tpr, sk_thr = sk_roc_curve(y, scores, drop_intermediate=drop)
        np.testing.assert_allclose(fpr, sk_fpr, rtol=0, atol=1e-12)
        np.testing.assert_allclose(tpr, sk_tpr, rtol=0, atol=1e-12)
        np.testing.assert_array_equal(thr[1:], sk_thr[1:])
        assert abs(auc(fpr, tpr) - roc_auc_score(y, scores)) < 1e-9
    # All scores tied: the chance diagonal.
    fpr, tpr, _ = roc_curve(np.zeros(10), [0, 1] * 5)
    assert auc(fpr, tpr) == 0.5


def test_verification_matches_sklearn_and_direct_accuracy():
    emb, labels = clusters(40, 10, noise=0.17, dim=24)
    v = verification(emb, labels, seed=2)
    s, y = v["_scores"], v["_labels"]
    assert v["positive_pairs"] == v["negative_pairs"] == int(y.sum()) == int((1 - y).sum())
    assert abs(v["auc"] - roc_auc_score(y, s)) < 1e-9
    sk_fpr, sk_tpr, _ = sk_roc_curve(y, s)
    np.testing.assert_allclose(v["roc"]["fpr"], sk_fpr, atol=1e-12)
    np.testing.assert_allclose(v["roc"]["tpr"], sk_tpr, atol=1e-12)
    assert 0.5 < v["auc"] < 1.0  # overlapping data: hard, not hopeless
    # Best accuracy over all cuts, and at the returned threshold, by direct computation.
    assert v["best_accuracy"] == pytest.approx(brute_best_accuracy(s, y), abs=1e-12)
    assert v["best_accuracy"] == pytest.approx(np.mean((s >= v["threshold"]) == y.astype(bool)), abs=1e-12)
    # 10-fold: each fold's threshold is best on the other 9 folds; accuracy is on the held-out fold.
    folds = v["_folds"]
    assert v["folds"] == 10 and sorted(Counter(folds).values())[0] >= len(s) // 10
    direct = []
    for f, t in enumerate(v["fold_thresholds"]):
        tr = folds != f
        assert np.mean((s[tr] >= t) == y[tr].astype(bool)) == pytest.approx(brute_best_accuracy(s[tr], y[tr]),
                                                                            abs=1e-12)
        direct.append(np.mean((s[~tr] >= t) == y[~tr].astype(bool)))
    assert v["accuracy"] == pytest.approx(np.mean(direct), abs=1e-12)
    assert v["accuracy_std"] == pytest.approx(np.std(direct), abs=1e-12)
    assert v["fold_accuracies"] == pytest.approx(direct, abs=1e-12)
    # Pair scores are the cosine similarities of the listed pairs.
    pairs = v["_pairs"]
    np.testing.assert_allclose(s, np.sum(emb[pairs[:, 0]].astype(np.float64) * emb[pairs[:, 1]], axis=1),
                               atol=1e-6)
    lab = np.asarray(labels)
    assert np.array_equal(lab[pairs[:, 0]] == lab[pairs[:, 1]], y.astype(bool))
    assert len({tuple(p) for p in pairs}) == len(pairs)
    assert set(v["tar_at_far"]) == {"0.01", "0.001"} and v["tar_at_far"]["0.001"] is None  # 400 negatives
    assert 0.0 <= v["tar_at_far"]["0.01"] <= 1.0
    assert "_scores" not in public(v) and json.dumps(public(v))


def test_hard_negatives_are_nearest_other_identity_and_harder_than_random():
    emb, labels = clusters(30, 10, noise=0.2, dim=16, seed=3)
    hard = verification(emb, labels, seed=0)
    rand = verification(emb, labels, seed=0, negatives="random")
    assert hard["mean_negative_score"] > rand["mean_negative_score"] + 0.1
    assert hard["auc"] < rand["auc"]
    lab = np.asarray(labels)
    e = emb.astype(np.float64)
    for i, j in hard["_pairs"][hard["_labels"] == 0]:
        def nearest_other(a):
            sims = e @ e[a]
            sims[lab == lab[a]] = -np.inf
            return int(np.argmax(sims))
        assert nearest_other(i) == j or nearest_other(j) == i
    # Positive pairs: same identity, both variants; hard positives are less similar than random ones.
    hard_pos = verification(emb, labels, seed=0, positives="hard")
    assert hard_pos["mean_positive_score"] < hard["mean_positive_score"]


def test_verification_perfect_separation_and_ignored_labels():
    emb, labels = clusters(20, 6, noise=0.02)
    junk, _ = clusters(5, 1, noise=0.0, seed=9)
    v = verification(np.vstack([emb, junk]), labels + ["unknown"] * 5, seed=0, ignore_labels=["unknown"])
    assert v["accuracy"] == 1.0 and v["auc"] == 1.0 and v["best_accuracy"] == 1.0
    assert v["_pairs"].max() < len(emb)  # unknown faces take no part
    assert verification(emb, labels, seed=0, pairs=25)["positive_pairs"] == 25


def test_best_threshold_accuracy_at_and_tar_hand_made():
    s = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4])
    y = np.array([1, 1, 0, 1, 0, 0])
    t, acc = best_threshold(s, y)
    # Cuts at 0.55 and 0.75 are both 5/6 accurate: the lowest wins.
    assert acc == pytest.approx(5 / 6) and t == pytest.approx(0.55) and accuracy_at(s, y, t) == acc
    assert accuracy_at(s, y, 0.75) == acc and accuracy_at(s, y, 0.65) == pytest.approx(4 / 6)
    fpr, tpr, thr = roc_curve(s, y)
    assert list(fpr) == pytest.approx([0, 0, 0, 1 / 3, 1 / 3, 2 / 3, 1])
    assert list(tpr) == pytest.approx([0, 1 / 3, 2 / 3, 2 / 3, 1, 1, 1])
    assert tar_at_far(fpr, tpr, 0.0) == pytest.approx(2 / 3) and tar_at_far(fpr, tpr, 0.34) == 1.0
    assert auc(fpr, tpr) == pytest.approx(8 / 9)


# ------------------------------------------------------------------------------------------ pre-label

def _unit(a, b):
    return [a, b, float(np.sqrt(max(0.0, 1.0 - a * a - b * b)))]


def test_prelabel_hand_made_example():
    ref = np.array([[1.0, 0, 0], [0, 1.0, 0]])
    probes = np.array([_unit(0.9, 0.0),    # A -> A (0.90)  correct
                       _unit(0.6, 0.8),    # A -> B (0.80)  wrong label on a known identity
                       _unit(0.0, 0.5),    # B -> B (0.50)  unlabelled at 0.6
                       _unit(0.7, 0.0),    # C (no reference) -> A (0.70): false label on an unknown
                       _unit(0.0, 0.55),   # C -> B (0.55)  unlabelled at 0.6 (right)
                       _unit(0.0, 0.95)])  # B -> B (0.95)  correct
    r = prelabel_precision_recall(ref, ["A", "B"], probes, ["A", "A", "B", "C", "C", "B"], threshold=0.6)
    assert (r["labelled"], r["correct"], r["wrong_labels_on_known"], r["false_labels_on_unknowns"]) == (4, 2, 1, 1)
    assert r["precision"] == 0.5 and r["recall"] == 0.5
    assert (r["probes"], r["known_probes"], r["unknown_probes"], r["references"]) == (6, 4, 2, 2)
    # Without a threshold the nearest identity is right for 3 of the 4 probes with a reference (A -> B is not).
    assert r["nearest_accuracy"] == 0.75
    sweep = {row["threshold"]: row for row in r["sweep"]}
    assert sorted(sweep) == list(SWEEP_THRESHOLDS) and min(sweep) == 0.3 and max(sweep) == 0.95
    assert (sweep[0.3]["labelled"], sweep[0.3]["correct"], sweep[0.3]["false_labels_on_unknowns"]) == (6, 3, 2)
    assert sweep[0.3]["precision"] == 0.5 and sweep[0.3]["recall"] == 0.75
    assert sweep[0.85]["precision"] == 1.0 and sweep[0.85]["recall"] == 0.5
    assert sweep[0.85]["false_labels_on_unknowns"] == 0
    # "greater than" the threshold: 0.95 exactly is not enough.
    assert sweep[0.95]["labelled"] == 0 and sweep[0.95]["precision"] is None and sweep[0.95]["recall"] == 0.0
    assert sweep[0.6] == {k: r[k] for k in sweep[0.6]}
    # A margin over the runner-up identity: the wrong A -> B (0.80 against A's 0.60, margin 0.2) goes.
    margins = {row["min_margin"]: row for row in r["margin_sweep"]}
    assert margins[0.0] == sweep[0.6] | {"min_margin": 0.0}
    assert (margins[0.3]["labelled"], margins[0.3]["correct"], margins[0.3]["false_labels_on_unknowns"]) == (3, 2, 1)
    strict = prelabel_precision_recall(ref, ["A", "B"], probes, ["A", "A", "B", "C", "C", "B"], threshold=0.6,
                                       min_margin=0.3)
    assert strict["precision"] == 2 / 3 and strict["recall"] == 0.5


def test_reference_views_match_a_probe_that_only_one_view_resembles():
    emb = np.eye(4)  # references A and B, then a probe of A and a probe of B, all unrelated
    labels = np.array(["A", "B", "A", "B"], dtype=object)
    views = np.stack([emb, emb], axis=1)  # (N, V, dim); view 0 is the image's own vector
    views[0, 1] = [np.sqrt(1 - 0.9 ** 2), 0, 0.9, 0]  # A zoomed in looks like A's probe (0.9)
    refs, probes = np.array([0, 1]), np.array([2, 3])
    rows, names = reference_rows(emb, labels, refs)
    assert rows.shape == (2, 4) and names.tolist() == ["A", "B"]
    rows, names = reference_rows(emb, labels, refs, views)
    assert rows.shape == (4, 4) and names.tolist() == ["A", "A", "B", "B"]
    one = prelabel_precision_recall(emb[refs], labels[refs], emb[probes], labels[probes], threshold=0.6)
    assert one["labelled"] == 0
    both = prelabel_precision_recall(rows, names, emb[probes], labels[probes], threshold=0.6)
    assert (both["labelled"], both["correct"], both["references"]) == (1, 1, 4)


def test_candidate_views_average_each_probe_views_best_match():
    emb = np.eye(3)  # references A and B; a probe whose crop is unlike both
    views = np.array([[1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0]])[:, None, :].repeat(2, axis=1)
    views[2, 1] = [0.9, np.sqrt(1 - 0.9 ** 2), 0]  # its second view resembles A: (0 + 0.9) / 2 = 0.45 for A
    labels = np.array(["A", "B", "A"], dtype=object)
    crop_only = prelabel_precision_recall(emb[:2], labels[:2], emb[2:], labels[2:], threshold=0.4)
    assert crop_only["labelled"] == 0
    by_views = prelabel_precision_recall(emb[:2], labels[:2], views[2:], labels[2:], threshold=0.4)
    assert (by_views["labelled"], by_views["correct"]) == (1, 1)
    assert by_views["_similarity"][0] == pytest.approx(0.45)
    with pytest.raises(ValueError, match="views"):
        prelabel_precision_recall(emb[:2], labels[:2], views[2:, :, :, None], labels[2:])


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
    by_hand = evaluate((emb - mean) / np.linalg.norm(emb - mean, axis=1, keepdims=True), labels,
                       unknown_labels=["unknown"], seed=0)
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


def test_reference_split():
    labels = ["a", "a", "a", "b", "b", "unknown", "c"]
    refs, probes = reference_split(labels, "first", no_reference=["unknown"])
    assert refs.tolist() == [0, 3, 6] and probes.tolist() == [1, 2, 4, 5]
    refs_r, probes_r = reference_split(labels, "random", seed=1, no_reference=["unknown"])
    assert sorted(np.asarray(labels)[refs_r]) == ["a", "b", "c"] and 5 in probes_r
    assert np.array_equal(refs_r, reference_split(labels, "random", seed=1, no_reference=["unknown"])[0])
    # more references per identity (as verified faces add them), never the last probe of an identity
    refs3, probes3 = reference_split(labels, "first", seed=2, no_reference=["unknown"], per_identity=3)
    assert {0, 3, 6} <= set(refs3.tolist())
    assert sorted(np.asarray(labels)[refs3]) == ["a", "a", "b", "c"] and 5 in probes3 and 4 in probes3
    assert sorted(refs3.tolist() + probes3.tolist()) == list(range(7))
    with pytest.raises(ValueError):
        reference_split(labels, per_identity=0)


def test_prelabel_over_reference_draws_depends_on_which_image_is_the_reference():
    # Identity A: two images on the x axis and an odd one that looks like B; identity B: three images on y.
    # As a probe the odd image is mislabelled B; as A's reference it labels no other A image.
    emb = np.array([[1.0, 0, 0], [1.0, 0, 0], _unit(0.3, 0.95), [0, 1.0, 0], [0, 1.0, 0], [0, 1.0, 0]])
    labels = ["A", "A", "A", "B", "B", "B"]
    draws = prelabel_over_reference_draws(emb, labels, 30, seed=0, threshold=0.6)
    per_draw, nearest = [], []
    for seed in range(30):  # the same draws, one at a time
        refs, probes = reference_split(labels, "random", seed)
        r = prelabel_precision_recall(emb[refs], np.array(labels)[refs], emb[probes], np.array(labels)[probes], 0.6)
        per_draw.append((r["precision"], r["recall"]))
        nearest.append(r["nearest_accuracy"])
    p, r = np.array(per_draw).T
    assert draws["draws"] == 30 and draws["seeds"] == [0, 29]
    assert draws["nearest_accuracy_mean"] == pytest.approx(np.mean(nearest)) and draws["nearest_accuracy_std"] > 0
    assert draws["precision_mean"] == pytest.approx(p.mean()) and draws["recall_mean"] == pytest.approx(r.mean())
    assert draws["precision_min"] == p.min() < 1.0 == p.max() and r.min() < r.max()
    assert draws["precision_std"] > 0 and draws["recall_std"] > 0
    assert [m["min_margin"] for m in draws["margin_sweep"]] == list(MARGIN_SWEEP)
    assert draws["margin_sweep"][0] | {"min_margin": 0.0} == {k: v for k, v in draws.items()
                                                             if k in draws["margin_sweep"][0]}
    # Perfectly separated identities: every draw is perfect.
    clean = prelabel_over_reference_draws(np.array([[1.0, 0], [1.0, 0], [0, 1.0], [0, 1.0]]), ["A", "A", "B", "B"], 5)
    assert (clean["precision_mean"], clean["precision_std"], clean["recall_min"]) == (1.0, 0.0, 1.0)
    assert clean["nearest_accuracy_mean"] == 1.0


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
    args = ["--weights", str(weights), "--data", str(data), "--cava", str(cava), "--cava-split", "val",
            "--out", str(out), "--batch-size", "16"]
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
    assert probed["prelabel"]["references"] == excluded["prelabel"]["references"] and excluded["prelabel"]["candidate_views"] == 1
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
