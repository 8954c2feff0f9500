import numpy as np
import pytest
import torch

from pipeline.dedup import PublishedIndex, greedy_dedup, range_neighbours, torch_range_neighbours


def unit(*rows):
    v = np.asarray(rows, dtype=np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def at_angle(degrees):
    """2-d unit vectors at these angles: cos(angle difference) is their similarity."""
    r = np.radians(degrees)
    return np.stack([np.cos(r), np.sin(r)], axis=1).astype(np.float32)


def test_greedy_keep_without_chaining():
    # A at 0°, B at 15°, C at 30°: cos 15° = 0.966 > 0.95, cos 30° = 0.866 < 0.95.
    vectors = at_angle([0, 15, 30])
    result = greedy_dedup(vectors, ["A", "B", "C"], quality=np.array([3.0, 2.0, 1.0]))
    assert result.kept.tolist() == [True, False, True]  # A and C both stay: no chain through B
    assert result.duplicate_of == [None, "A", None]
    assert abs(result.similarity[1] - np.cos(np.radians(15))) < 1e-5


def test_the_best_quality_crop_of_a_group_is_kept():
    vectors = at_angle([0, 5, 10])
    result = greedy_dedup(vectors, ["a", "b", "c"], quality=np.array([1.0, 9.0, 2.0]))
    assert result.kept.tolist() == [False, True, False]
    assert result.duplicate_of == ["b", None, "b"]


def test_threshold_is_strict():
    vectors = unit([1, 0], [0.95, np.sqrt(1 - 0.95**2)])
    [(idx, sims)] = range_neighbours(vectors[:1], vectors[1:], 0.95)
    assert len(idx) == 0 or sims[0] > 0.95


def test_incremental_dedup_against_published_crops(tmp_path):
    index = PublishedIndex(tmp_path, "emb-test")
    first = greedy_dedup(at_angle([0, 90]), ["r1a", "r1b"], quality=np.ones(2))
    index.commit(at_angle([0, 90])[first.kept], ["r1a", "r1b"], version=0)
    published, ids = index.load()
    assert ids == ["r1a", "r1b"]
    # Run 2: one near copy of r1a, one new face.
    second = greedy_dedup(at_angle([3, 45]), ["r2a", "r2b"], quality=np.ones(2), published=published, published_ids=ids)
    assert second.kept.tolist() == [False, True] and second.duplicate_of == ["r1a", None]
    index.commit(at_angle([45]), ["r2b"], version=1)
    assert index.load()[1] == ["r1a", "r1b", "r2b"]
    files = (tmp_path / "index" / "emb-test").iterdir()
    assert sorted(p.name for p in files if not p.name.startswith(".")) == ["CURRENT", "v000001.json", "v000001.npy"]


def test_many_random_vectors_match_brute_force():
    rng = np.random.default_rng(0)
    base = rng.normal(size=(300, 64)).astype(np.float32)
    noisy = base[:100] + 0.05 * rng.normal(size=(100, 64)).astype(np.float32)
    vectors = np.concatenate([base, noisy])
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    result = greedy_dedup(vectors, [str(i) for i in range(400)], quality=np.r_[np.ones(300), np.zeros(100)])
    sims = vectors @ vectors.T
    for i in range(300, 400):  # each noisy copy goes, pointing at its original
        assert not result.kept[i] and result.duplicate_of[i] == str(i - 300)
        assert abs(result.similarity[i] - sims[i, i - 300]) < 1e-4
    assert result.kept[:300].all()


def near_threshold_vectors(n=600, dim=128, seed=0):
    """Unit vectors with many pairs just above and just below 0.95 (and far ones)."""
    rng = np.random.default_rng(seed)
    base = rng.normal(size=(n, dim))
    base /= np.linalg.norm(base, axis=1, keepdims=True)
    noise = rng.normal(size=(n, dim))
    noise -= (noise * base).sum(1, keepdims=True) * base  # orthogonal to its base vector
    noise /= np.linalg.norm(noise, axis=1, keepdims=True)
    target = rng.uniform(0.93, 0.97, size=(n, 1))  # the copy's similarity to its base vector
    copies = target * base + np.sqrt(1 - target**2) * noise
    return np.concatenate([base, copies]).astype(np.float32)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_torch_range_search_equals_faiss_exactly(dtype):
    # The GPU path (torch matrix products) run here on the CPU: low-precision candidates plus the fp32
    # check give exactly Faiss's pairs, including the many pairs within 0.02 of the threshold.
    vectors = near_threshold_vectors()
    by_faiss = range_neighbours(vectors, vectors, 0.95, device="cpu")
    by_torch = torch_range_neighbours(vectors, vectors, 0.95, device="cpu", dtype=dtype, max_elements=50_000)
    near = sum(int(((s > 0.95) & (s < 0.97)).sum()) for _, s in by_faiss)
    assert near >= 200  # the test really has pairs at the edge
    assert len(by_torch) == len(by_faiss)
    for (i_f, s_f), (i_t, s_t) in zip(by_faiss, by_torch):
        assert i_t.tolist() == i_f.tolist()
        np.testing.assert_allclose(s_t, s_f, atol=1e-5)
    # bf16 alone would be wrong at the edge: the fp32 check is what makes it exact.
    approx = torch.from_numpy(vectors).bfloat16() @ torch.from_numpy(vectors).bfloat16().T
    exact = vectors @ vectors.T
    assert ((approx.float().numpy() > 0.95) != (exact > 0.95)).any()


def test_greedy_keep_equals_the_rule_written_out_on_brute_force_similarities():
    """Crops with no neighbour are decided in bulk; the outcome must be the plain rule's: best quality
    first, removed when above the threshold to a crop already kept."""
    vectors = near_threshold_vectors(n=400, seed=3)  # about half the crops alone, half in near pairs
    quality = np.random.default_rng(3).random(len(vectors))
    result = greedy_dedup(vectors, [str(i) for i in range(len(vectors))], quality, 0.95)
    sims = vectors.astype(np.float64) @ vectors.T.astype(np.float64)
    kept: list[int] = []
    expected = {}
    for i in np.argsort(-quality, kind="stable"):
        blocking = [k for k in kept if sims[i, k] > 0.95]
        if blocking:
            expected[i] = str(max(blocking, key=lambda k: sims[i, k]))
        else:
            kept.append(i)
            expected[i] = None
    assert 50 < len(vectors) - len(kept) < 400  # both outcomes are common here
    assert result.duplicate_of == [expected[i] for i in range(len(vectors))]


def test_two_runs_publishing_the_same_crops_index_each_crop_once(tmp_path):
    # Two runs over one library both stage the same 40 crops; the index must hold 40 ids, not 80.
    vectors = np.random.default_rng(0).normal(size=(40, 8)).astype(np.float32)
    ids = [f"face-{i}" for i in range(40)]
    index = PublishedIndex(tmp_path, "emb-test")
    index.stage("run-a", vectors, ids)
    index.stage("run-b", vectors[::-1], ids[::-1])
    assert index.promote({"run-a": 0, "run-b": 1}) == ["run-a", "run-b"]
    loaded, loaded_ids = index.load()
    assert sorted(loaded_ids) == sorted(ids) and loaded.shape == (40, 8)
    np.testing.assert_array_equal(loaded[loaded_ids.index("face-7")], vectors[7])


def test_a_confirm_check_decides_among_the_most_similar_kept_neighbours():
    # Visited by quality: A, C, B. C is asked about A (no), B about C first (its most similar kept crop: yes).
    vectors = at_angle([0, 10, 14])
    asked = []

    def confirm(i, j):
        asked.append((i, j))
        return j == 2

    result = greedy_dedup(vectors, ["A", "B", "C"], np.array([3.0, 1.0, 2.0]), threshold=0.9, confirm=confirm)
    assert result.kept.tolist() == [True, False, True]
    assert result.duplicate_of == [None, "C", None]
    assert asked == [(2, 0), (1, 2)]
