"""Identification and verification protocols on synthetic embeddings with known structure, cross-checked
against scikit-learn and brute force."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score
from sklearn.metrics import roc_curve as sk_roc_curve

from pipeline.evaluate.embedder import public
from pipeline.evaluate.recognition import (
    accuracy_at,
    auc,
    best_threshold,
    identification,
    roc_curve,
    tar_at_far,
    verification,
)


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
        assert np.mean((s[tr] >= t) == y[tr].astype(bool)) == pytest.approx(
            brute_best_accuracy(s[tr], y[tr]), abs=1e-12
        )
        direct.append(np.mean((s[~tr] >= t) == y[~tr].astype(bool)))
    assert v["accuracy"] == pytest.approx(np.mean(direct), abs=1e-12)
    assert v["accuracy_std"] == pytest.approx(np.std(direct), abs=1e-12)
    assert v["fold_accuracies"] == pytest.approx(direct, abs=1e-12)
    # Pair scores are the cosine similarities of the listed pairs.
    pairs = v["_pairs"]
    np.testing.assert_allclose(s, np.sum(emb[pairs[:, 0]].astype(np.float64) * emb[pairs[:, 1]], axis=1), atol=1e-6)
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
