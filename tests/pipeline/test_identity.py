"""The identity stage with the shipped embedder on real cartoon crops: references, conflicts,
near-duplicates of re-encoded copies, pre-labels."""
import cv2
import numpy as np
import pandas as pd
import pytest

from pipeline.identity import DEFAULT_WEIGHTS, embed_crops, run_identity_stage
from pipeline.store import ContentStore
from tests.conftest import SHARED

HOLO = SHARED / "data" / "anime_identities" / "hololive_danbooru"
pytestmark = pytest.mark.skipif(not DEFAULT_WEIGHTS.exists(), reason="no shipped embedder weights")


def crops_of(identity, n, start=0):
    return sorted((HOLO / identity).glob("*.jpg"))[start:start + n]


class Run:
    """Faces and assets rows of one run, with their crops in a real content store."""

    def __init__(self, root):
        self.root = root
        self.store = ContentStore(root / "store")
        self.faces, self.assets = [], []

    def add(self, image, album="holo", character=None, kind="still", sharpness=100.0):
        data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 95])[1].tobytes()
        sha = self.store.put(data, ".jpg")
        face_id = f"f{len(self.faces)}"
        asset_id = f"a{len(self.assets)}"
        self.assets.append({"asset_id": asset_id, "kind": kind, "character": character, "album_id": album})
        self.faces.append({"face_id": face_id, "asset_id": asset_id, "album_id": album, "crop_sha": sha,
                           "status": "kept", "drop_reason": None, "sharpness": sharpness,
                           "crop_w": image.shape[1], "crop_h": image.shape[0]})
        return face_id

    def identity(self, published_refs=None, **kw):
        refs = published_refs if published_refs is not None else pd.DataFrame(
            columns=["face_id", "asset_id", "crop_sha", "album_id", "character", "crop_w", "crop_h"])
        return run_identity_stage(pd.DataFrame(self.faces), pd.DataFrame(self.assets), refs, "default",
                                  self.root, kw.get("dedup", 0.95), kw.get("prelabel", 0.6), "run")


def test_prelabels_real_crops_with_their_reference_identity(tmp_path):
    run = Run(tmp_path)
    names = ["ame", "gura", "kiara", "mumei"]
    for name in names:
        run.add(cv2.imread(str(crops_of(name, 1)[0])), character=name, kind="reference")
    probes = {}
    for name in names:
        for path in crops_of(name, 5, start=10):
            probes[run.add(cv2.imread(str(path)))] = f"holo/{name}"
    out = run.identity(dedup=0.98)  # the shipped model's calibrated duplicate threshold
    faces = out.faces.set_index("face_id")
    survivors = [f for f in probes if faces.loc[f, "status"] == "kept"]
    assert len(survivors) >= len(probes) - 2
    labelled = faces.loc[survivors, "prelabel"]
    correct = sum(labelled[f] == probes[f] for f in survivors)
    assert sorted(r["identity"] for r in out.identities) == [f"holo/{n}" for n in names]
    assert correct >= len(survivors) // 2
    assert faces.loc[survivors, "runner_up"].notna().all()
    wrong = [(f, labelled[f]) for f in survivors if labelled[f] is not None and labelled[f] != probes[f]]
    assert len(wrong) <= 3, wrong


def test_reencoded_resized_copies_are_near_duplicates_of_the_sharper_original(tmp_path):
    run = Run(tmp_path)
    original = cv2.imread(str(crops_of("gura", 1)[0]))
    a = run.add(original, sharpness=300.0)
    b = run.add(cv2.resize(original, (200, 200)), sharpness=200.0)
    other = run.add(cv2.imread(str(crops_of("ame", 1)[0])), sharpness=50.0)
    faces = run.identity().faces.set_index("face_id")
    assert faces.loc[a, "status"] == "kept" and faces.loc[other, "status"] == "kept"
    assert faces.loc[b, "drop_reason"] == "near_duplicate" and faces.loc[b, "duplicate_of"] == a
    assert faces.loc[b, "duplicate_similarity"] > 0.95


def test_two_names_with_the_same_looking_reference_are_a_conflict_not_a_merge(tmp_path):
    run = Run(tmp_path)
    image = cv2.imread(str(crops_of("irys", 1)[0]))
    run.add(image, character="Irys", kind="reference")
    run.add(cv2.flip(cv2.flip(image, 1), 1), album="holo", character="IRyS (alt name)", kind="reference")
    out = run.identity()
    rows = {r["identity"]: r for r in out.identities}
    assert set(rows) == {"holo/Irys", "holo/IRyS (alt name)"}
    assert "holo/IRyS (alt name)" in rows["holo/Irys"]["conflicts"]


def test_embeddings_are_cached_per_crop(tmp_path):
    run = Run(tmp_path)
    run.add(cv2.imread(str(crops_of("sana", 1)[0])))
    sha = run.faces[0]["crop_sha"]
    first = embed_crops([sha], "default", tmp_path)
    assert np.isclose(np.linalg.norm(first[sha]), 1.0, atol=1e-3)
    cached = list((tmp_path / "cache" / "embeddings").rglob("*.npy"))
    assert len(cached) == 1
    assert np.array_equal(embed_crops([sha], "default", tmp_path)[sha], first[sha])
