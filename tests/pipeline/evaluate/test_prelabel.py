"""The pre-labelling protocol (the pipeline's matching rule) on hand-made embeddings."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.evaluate.prelabel import (
    MARGIN_SWEEP,
    SWEEP_THRESHOLDS,
    prelabel_over_reference_draws,
    prelabel_precision_recall,
    reference_rows,
    reference_split,
)

# ------------------------------------------------------------------------------------------ pre-label


def _unit(a, b):
    return [a, b, float(np.sqrt(max(0.0, 1.0 - a * a - b * b)))]


def test_prelabel_hand_made_example():
    ref = np.array([[1.0, 0, 0], [0, 1.0, 0]])
    probes = np.array(
        [
            _unit(0.9, 0.0),  # A -> A (0.90)  correct
            _unit(0.6, 0.8),  # A -> B (0.80)  wrong label on a known identity
            _unit(0.0, 0.5),  # B -> B (0.50)  unlabelled at 0.6
            _unit(0.7, 0.0),  # C (no reference) -> A (0.70): false label on an unknown
            _unit(0.0, 0.55),  # C -> B (0.55)  unlabelled at 0.6 (right)
            _unit(0.0, 0.95),
        ]
    )  # B -> B (0.95)  correct
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
    strict = prelabel_precision_recall(
        ref, ["A", "B"], probes, ["A", "A", "B", "C", "C", "B"], threshold=0.6, min_margin=0.3
    )
    assert strict["precision"] == 2 / 3 and strict["recall"] == 0.5


def test_reference_views_match_a_probe_that_only_one_view_resembles():
    emb = np.eye(4)  # references A and B, then a probe of A and a probe of B, all unrelated
    labels = np.array(["A", "B", "A", "B"], dtype=object)
    views = np.stack([emb, emb], axis=1)  # (N, V, dim); view 0 is the image's own vector
    views[0, 1] = [np.sqrt(1 - 0.9**2), 0, 0.9, 0]  # A zoomed in looks like A's probe (0.9)
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
    views[2, 1] = [0.9, np.sqrt(1 - 0.9**2), 0]  # its second view resembles A: (0 + 0.9) / 2 = 0.45 for A
    labels = np.array(["A", "B", "A"], dtype=object)
    crop_only = prelabel_precision_recall(emb[:2], labels[:2], emb[2:], labels[2:], threshold=0.4)
    assert crop_only["labelled"] == 0
    by_views = prelabel_precision_recall(emb[:2], labels[:2], views[2:], labels[2:], threshold=0.4)
    assert (by_views["labelled"], by_views["correct"]) == (1, 1)
    assert by_views["_similarity"][0] == pytest.approx(0.45)
    with pytest.raises(ValueError, match="views"):
        prelabel_precision_recall(emb[:2], labels[:2], views[2:, :, :, None], labels[2:])


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
    assert draws["margin_sweep"][0] | {"min_margin": 0.0} == {
        k: v for k, v in draws.items() if k in draws["margin_sweep"][0]
    }
    # Perfectly separated identities: every draw is perfect.
    clean = prelabel_over_reference_draws(np.array([[1.0, 0], [1.0, 0], [0, 1.0], [0, 1.0]]), ["A", "A", "B", "B"], 5)
    assert (clean["precision_mean"], clean["precision_std"], clean["recall_min"]) == (1.0, 0.0, 1.0)
    assert clean["nearest_accuracy_mean"] == 1.0
