"""The pre-label rule on embeddings alone (pure numpy: no model, no files)."""

import numpy as np
import pandas as pd

from pipeline.identity.matching import (
    album_mean_faces,
    nearest_identities,
    prelabels_changed,
    reference_matrix,
    subtract_mean,
)


def test_nearest_identities_hand_computed():
    refs = np.array([[1.0, 0.0, 0.0], [0.8, 0.6, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    names = ["a", "a", "b", "c"]
    probes = np.array(
        [
            [0.6, 0.8, 0.0],  # a (via its 2nd reference) 0.96, b 0.8
            [0.0, 0.6, 0.8],  # c 0.8, b 0.6
            [0.5, 0.5, 0.70710678],
        ]
    )  # c 0.707 < 0.75: no pre-label; a 0.7 runner-up
    out = nearest_identities(probes, refs, names, threshold=0.75, chunk=2)
    assert out["prelabel"].tolist() == ["a", "c", None]
    assert out["prelabel_score"].round(4).tolist() == [0.96, 0.8, 0.7071]
    assert out["runner_up"].tolist() == ["b", "b", "a"]
    assert out["prelabel_margin"].round(4).tolist() == [0.16, 0.2, 0.0071]
    # with a minimum margin over the runner-up, the close call (0.96 against 0.8) stays unlabelled
    strict = nearest_identities(probes, refs, names, threshold=0.75, min_margin=0.18)
    assert strict["prelabel"].tolist() == [None, "c", None]
    assert strict["prelabel_score"].equals(out["prelabel_score"])


def test_nearest_identities_with_views_averages_each_views_best_match():
    refs = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    names = ["a", "a", "b"]
    views = np.array(
        [
            [[0.6, 0.8, 0.0], [1.0, 0.0, 0.0]],  # a: (0.8 + 1.0) / 2 = 0.9; b: 0
            [[0.0, 0.6, 0.8], [0.0, 0.0, 1.0]],
        ]
    )  # b: (0.8 + 1.0) / 2 = 0.9; a: (0.6 + 0) / 2 = 0.3
    out = nearest_identities(views, refs, names, threshold=0.6)
    assert out["prelabel"].tolist() == ["a", "b"]
    assert out["prelabel_score"].round(4).tolist() == [0.9, 0.9]
    assert out["runner_up_score"].round(4).tolist() == [0.0, 0.3]
    # One view is the plain rule; memory chunks (here one row of views at a time) change nothing.
    pd.testing.assert_frame_equal(
        nearest_identities(views[:, :1], refs, names, 0.6), nearest_identities(views[:, 0], refs, names, 0.6)
    )
    pd.testing.assert_frame_equal(nearest_identities(views, refs, names, 0.6, chunk=2), out)


def test_album_mean_is_taken_over_a_power_of_two_of_its_first_faces():
    assert [album_mean_faces(n) for n in (0, 15, 16, 31, 32, 100, 1023, 1024, 50_000)] == [
        0,
        0,
        16,
        16,
        32,
        64,
        512,
        1024,
        1024,
    ]


def test_subtract_mean_renormalises_and_leaves_rows_without_a_mean_alone():
    rng = np.random.default_rng(0)
    rows = rng.normal(size=(3, 2, 8)).astype(np.float32)
    rows /= np.linalg.norm(rows, axis=-1, keepdims=True)
    mean = rows.reshape(-1, 8).mean(axis=0)
    out = subtract_mean(rows, [mean, None, mean])
    expected = (rows[0] - mean) / np.linalg.norm(rows[0] - mean, axis=-1, keepdims=True)
    assert np.allclose(out[0], expected, atol=1e-6) and np.array_equal(out[1], rows[1])
    assert np.allclose(np.linalg.norm(out, axis=-1), 1, atol=1e-6)
    assert np.allclose(subtract_mean(rows[:, 0], [mean, None, mean]), out[:, 0], atol=1e-6)  # (N, dim) as (N, V, dim)


def test_reference_matrix_gives_every_view_of_each_reference_with_its_albums_mean_taken_away():
    refs = pd.DataFrame(
        {"crop_sha": ["s1", "s2", "s3"], "identity": ["a/x", "a/y", "b/z"], "album_id": ["a", "a", "b"]}
    )
    vectors = {s: v for s, v in zip(["s1", "s2", "s3"], np.eye(3, dtype=np.float32))}
    views = {"s1": np.stack([vectors["s1"], np.array([0.6, 0.8, 0.0], np.float32)])}  # s2, s3: no views
    mean = np.array([0.0, 0.0, 0.5], np.float32)
    matrix, names, albums = reference_matrix(refs, vectors, views, {"b": mean})
    assert names.tolist() == ["a/x", "a/x", "a/y", "b/z"] and albums.tolist() == ["a", "a", "a", "b"]
    np.testing.assert_allclose(matrix[:3], [[1, 0, 0], [0.6, 0.8, 0], [0, 1, 0]])
    np.testing.assert_allclose(matrix[3], subtract_mean(vectors["s3"][None], [mean])[0])
    empty, no_names, no_albums = reference_matrix(refs.iloc[:0], vectors)
    assert empty.shape == (0, 1) and len(no_names) == len(no_albums) == 0


def test_prelabels_changed_ignores_float_noise_but_not_a_new_name_or_score():
    old = pd.DataFrame(
        {
            "prelabel": ["a", None, "a", "a"],
            "runner_up": ["b", None, "b", "b"],
            "prelabel_score": [0.8, np.nan, 0.8, 0.8],
            "runner_up_score": [0.5, np.nan, 0.5, 0.5],
        }
    )
    new = old.assign(prelabel=["a", None, "c", "a"], prelabel_score=[0.8 + 1e-7, np.nan, 0.8, 0.81])
    assert prelabels_changed(old, new).tolist() == [False, False, True, True]
