"""The embedder of the identity stage: thresholds, embeddings of real crops and album means, each
computed once and read back from the project's file cache."""

import hashlib
import shutil

import cv2
import numpy as np
import pytest

from models.embedder import REFERENCE_VIEW_SCALES, REFERENCE_VIEWS_ID, Embedder
from pipeline.identity.embedding import DEFAULT_WEIGHTS, LoadedEmbedder, album_means, embed_crops, load
from pipeline.identity.matching import nearest_identities, subtract_mean
from tests.pipeline.identity.crops import Run, crops_of, needs_weights


def test_thresholds_are_the_settings_else_the_embedders_calibrated_ones_else_the_papers():
    calibrated = LoadedEmbedder(model=None, meta={"model_id": "m", "dedup_threshold": 0.98})
    assert calibrated.model_id == "m"
    assert calibrated.thresholds(None, None) == (0.98, 0.6)
    assert calibrated.thresholds(0.9, 0.7) == (0.9, 0.7)
    assert LoadedEmbedder(model=None, meta={"model_id": "m"}).thresholds(None, None) == (0.95, 0.6)


@needs_weights
def test_the_embedder_is_loaded_once_per_process():
    assert load("none") is None
    loaded = load("default")
    assert isinstance(loaded, LoadedEmbedder) and load(str(DEFAULT_WEIGHTS)) is loaded
    assert loaded.precision in ("fp32", "bf16") and loaded.model_id == loaded.meta["model_id"]
    with pytest.raises(FileNotFoundError):
        load(str(DEFAULT_WEIGHTS.with_name("missing.safetensors")))


@needs_weights
@pytest.mark.shared_data
def test_embeddings_are_cached_per_crop(tmp_path):
    run = Run(tmp_path)
    run.add(cv2.imread(str(crops_of("sana", 1)[0])))
    sha = run.faces[0]["crop_sha"]
    first = embed_crops([sha], "default", tmp_path)
    assert np.isclose(np.linalg.norm(first[sha]), 1.0, atol=1e-3)
    cached = list((tmp_path / "cache" / "embeddings").rglob("*.npy"))
    # The layout of every cache made before FileCache: <model id>/<sha[:2]>/<sha>.npy
    assert cached == [tmp_path / "cache" / "embeddings" / load("default").model_id / sha[:2] / f"{sha}.npy"]
    assert np.array_equal(embed_crops([sha], "default", tmp_path)[sha], first[sha])


@needs_weights
@pytest.mark.shared_data
def test_views_take_view_0_from_the_plain_embedding_and_embed_only_the_centred_crops(tmp_path, monkeypatch):
    embedded = []  # how many images reach the network, call by call
    real_embed = Embedder.embed
    monkeypatch.setattr(
        Embedder, "embed", lambda self, images, **kw: embedded.append(len(images)) or real_embed(self, images, **kw)
    )
    run = Run(tmp_path)
    for path in crops_of("sana", 3):
        run.add(cv2.imread(str(path)))
    shas = [f["crop_sha"] for f in run.faces]
    decoded = []  # crops read back from the store
    real_imread = cv2.imread
    monkeypatch.setattr(cv2, "imread", lambda path, *a: decoded.append(path) or real_imread(path, *a))
    views = embed_crops(shas, "default", tmp_path, views=True)
    assert embedded == [3, 3 * len(REFERENCE_VIEW_SCALES)]  # the plain embeddings (cached too), then the crops
    assert len(decoded) == 3  # each crop decoded once for both
    plain = embed_crops(shas, "default", tmp_path)
    assert len(embedded) == 2  # from the cache
    for sha in shas:
        assert views[sha].shape == (1 + len(REFERENCE_VIEW_SCALES), plain[sha].shape[0])
        np.testing.assert_array_equal(views[sha][0], plain[sha])


@needs_weights
def test_album_mean_keeps_a_shows_style_from_labelling_its_other_characters():
    """Every face of one show shares its style (a strong common direction): a face of a character
    with no reference still looks 0.8 like the references of the show's other two characters. With the
    album's mean taken away it looks like neither, and the characters with references keep their labels."""
    rng = np.random.default_rng(1)
    style, a, b, c = np.eye(64)[:4]

    def face(identity):
        v = 2 * style + identity + 0.05 * rng.normal(size=64)
        return v / np.linalg.norm(v)

    album = np.stack([face(x) for x in [a, b, c] * 12])  # 36 faces: 12 of each character
    refs, names = np.stack([face(a), face(b)]), ["show/A", "show/B"]
    plain = nearest_identities(album, refs, names, threshold=0.6)
    assert plain["prelabel"][2::3].notna().all()  # every C face takes A's or B's name

    means, counts = album_means(
        ["show"] * len(album), [None] * len(album), album.astype(np.float32), "default", ".", views=False
    )
    assert counts == {"show": 32} and np.allclose(means["show"], album[:32].mean(axis=0), atol=1e-6)
    centred = nearest_identities(
        subtract_mean(album, [means["show"]] * len(album)),
        subtract_mean(refs, [means["show"]] * 2),
        names,
        threshold=0.6,
    )
    assert centred["prelabel"][2::3].isna().all()
    assert (centred["prelabel"][0::3] == "show/A").all() and (centred["prelabel"][1::3] == "show/B").all()


@needs_weights
@pytest.mark.shared_data
def test_album_mean_is_read_back_while_its_first_faces_stay(tmp_path):
    """A night whose album has the same first faces reads their mean from one cache file, not from
    every face's views: with the crops and their view embeddings gone, the same mean comes back. A
    corrupt entry is taken again; other first faces give another mean."""
    run = Run(tmp_path)
    for path in crops_of("ame", 9) + crops_of("gura", 9):
        run.add(cv2.imread(str(path)))
    shas = [f["crop_sha"] for f in run.faces]
    plain = embed_crops(shas, "default", tmp_path)
    vectors = np.stack([plain[s] for s in shas])
    albums = ["holo"] * len(shas)
    means, counts = album_means(albums, shas, vectors, "default", tmp_path, views=True)
    assert counts == {"holo": 16}
    entries = list((tmp_path / "cache" / "album_means").rglob("*.npy"))
    model_id = load("default").model_id
    # The layout of every cache made before FileCache: <model id>-<views>/<sha256 of the shas>.npy
    key = hashlib.sha256("\n".join(shas[:16]).encode()).hexdigest()
    assert entries == [tmp_path / "cache" / "album_means" / f"{model_id}-{REFERENCE_VIEWS_ID}" / f"{key}.npy"]

    shutil.rmtree(tmp_path / "cache" / "embeddings" / f"{model_id}-{REFERENCE_VIEWS_ID}")
    shutil.rmtree(tmp_path / "store")
    again, _ = album_means(albums, shas, vectors, "default", tmp_path, views=True)
    assert np.array_equal(again["holo"], means["holo"])
    # Without the cache entry the views are gone, so each face counts by its plain embedding only.
    entries[0].write_bytes(b"not an array")
    plain_only, _ = album_means(albums, shas, vectors, "default", tmp_path, views=True)
    assert not np.allclose(plain_only["holo"], means["holo"], atol=1e-3)
    assert np.allclose(plain_only["holo"], vectors[:16].mean(axis=0), atol=1e-5)
    other, _ = album_means(albums[::-1], shas[::-1], vectors[::-1], "default", tmp_path, views=True)
    assert not np.allclose(other["holo"], plain_only["holo"], atol=1e-3)
