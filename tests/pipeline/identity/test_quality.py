"""Pre-label quality against the verification labels, and the calibration histograms."""

import numpy as np
import pandas as pd
import pytest

from pipeline.identity.quality import HIST_BINS, histogram, prelabel_quality


def test_prelabel_quality_against_verified_labels():
    current = pd.DataFrame(
        {
            "face_id": ["f1", "f2", "f3", "f4", "f5"],
            "prelabel": ["x/a", "x/a", "x/b", None, "x/b"],
            "prelabel_score": [0.9, 0.65, 0.75, 0.5, 0.95],
        }
    )
    labels = pd.DataFrame(
        {
            "face_id": ["f1", "f2", "f2", "f3", "f4"],
            "identity": ["x/a", "x/b", "x/a", "x/b", "x/a"],
            "verdict": ["verified", "verified", "rejected", "rejected", "verified"],
            "decided_at": pd.to_datetime(["2026-01-01"] * 5, utc=True),
            "decision_id": ["d1", "d2", "d3", "d4", "d5"],
        }
    )
    q = prelabel_quality(current, labels, 0.6)
    # f1 right; f2 wrong (verified as b); f3 wrong (rejected); f4 verified but not pre-labelled; f5 unjudged
    assert q["verified_faces"] == 3 and q["judged"] == 3
    assert q["precision"] == pytest.approx(1 / 3, abs=1e-4) and q["recall"] == pytest.approx(1 / 3, abs=1e-4)
    at_07 = next(s for s in q["sweep"] if s["threshold"] == 0.7)
    assert at_07["judged"] == 2 and at_07["precision"] == 0.5  # f2 (0.65) is no longer pre-labelled
    assert prelabel_quality(current, labels.iloc[0:0], 0.6)["sweep"] == []


def test_prelabel_quality_sweeps_margins_per_album_and_suggests_a_setting():
    # 60 faces of show "a" right with margins 0.02..0.40, 10 wrong with margins 0.03..0.12; show "b": 5 wrong.
    rng = np.random.default_rng(0)
    right_m = np.linspace(0.02, 0.40, 60)
    faces = (
        [(f"r{i}", "a/x", 0.8, m, "a/x") for i, m in enumerate(right_m)]
        + [(f"w{i}", "a/x", 0.8, 0.03 + 0.01 * i, "a/y") for i in range(10)]
        + [(f"b{i}", "b/z", 0.9, 0.5, "b/q") for i in range(5)]
    )
    order = rng.permutation(len(faces))
    faces = [faces[i] for i in order]
    current = pd.DataFrame(
        {
            "face_id": [f[0] for f in faces],
            "prelabel": [f[1] for f in faces],
            "prelabel_score": [f[2] for f in faces],
            "prelabel_margin": [f[3] for f in faces],
        }
    )
    labels = pd.DataFrame(
        {
            "face_id": [f[0] for f in faces],
            "identity": [f[4] for f in faces],
            "verdict": "verified",
            "decided_at": pd.Timestamp("2026-01-01", tz="UTC"),
            "decision_id": [f"d{i}" for i in range(len(faces))],
        }
    )
    q = prelabel_quality(current, labels, 0.6, min_margin=0.0)
    assert (q["judged"], q["precision"]) == (75, round(60 / 75, 4))
    assert q["by_album"] == {
        "a": {"judged": 70, "right": 60, "precision": round(60 / 70, 4)},
        "b": {"judged": 5, "right": 0, "precision": 0.0},
    }
    grid = {(r["threshold"], r["min_margin"]): r for r in q["sweep"]}
    assert len(grid) == 4 * 5 and q["sweep"][0]["min_margin"] == 0.0
    # margin 0.15: the wrong "a" faces (margins <= 0.12) drop out; "b"'s five stay wrong
    assert (
        grid[(0.6, 0.15)]["right"] == int((right_m >= 0.15).sum())
        and grid[(0.6, 0.15)]["judged"] == grid[(0.6, 0.15)]["right"] + 5
    )
    # at 0.8 (scores are not above it) only "b" is labelled: nothing reaches the target precision
    assert grid[(0.8, 0.0)]["judged"] == 5 and grid[(0.8, 0.0)]["precision"] == 0.0
    assert q["suggested"] is None  # b's wrong faces keep every setting under 0.95

    # without show b, margin 0.15 is the loosest to pass (0.1 keeps three wrong faces: 0.94)
    show_a = current[~current["face_id"].str.startswith("b")]
    q = prelabel_quality(show_a, labels, 0.6, 0.0, random_sample=set(show_a["face_id"]))
    assert q["suggested"] == {
        "threshold": 0.6,
        "min_margin": 0.15,
        "precision": 1.0,
        "judged": int((right_m >= 0.15).sum()),
        "right": int((right_m >= 0.15).sum()),
    }
    assert (q["sample"]["judged"], q["sample"]["right"], q["sample"]["recall"]) == (70, 60, round(60 / 70, 4))
    # the suggestion speaks only from faces judged in random order: none, no suggestion ...
    assert prelabel_quality(show_a, labels, 0.6, 0.0)["suggested"] is None
    # ... and a sample of the surest faces (all right) would keep the setting in force
    surest = {f for f in show_a["face_id"] if f.startswith("r")}
    assert prelabel_quality(show_a, labels, 0.6, 0.0, random_sample=surest)["suggested"] == {
        "threshold": 0.6,
        "min_margin": 0.0,
        "precision": 1.0,
        "judged": 60,
        "right": 60,
    }
    # a stricter setting in force is the sweep's start: looser margins cannot be judged
    assert {r["min_margin"] for r in prelabel_quality(current, labels, 0.6, 0.1)["sweep"]} == {0.1, 0.15, 0.2}


def test_histogram_counts_values_in_twenty_bins_leaving_out_nan():
    out = histogram([0.01, 0.5, 0.52, np.nan, 1.0])
    assert out["bins"] == HIST_BINS.tolist() and len(out["counts"]) == 20
    assert out["n"] == 4 and out["counts"][0] == 1 and out["counts"][10] == 2 and out["counts"][-1] == 1
