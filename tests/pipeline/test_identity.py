"""The identity stage with the shipped embedder on real cartoon crops: references, conflicts,
near-duplicates of re-encoded copies, pre-labels."""
import dataclasses
import shutil

import cv2
import numpy as np
import pandas as pd
import pytest

from models.embedder import REFERENCE_VIEWS_ID
from pipeline.dedup import PublishedIndex
from pipeline.identity import (DEFAULT_WEIGHTS, PRELABEL_COLUMNS, Published, album_mean_faces, album_means,
                               embed_crops, load, nearest_identities, prelabel_crops, prelabel_quality, run_identity_stage,
                               subtract_mean)
from pipeline.store import ContentStore
from tests.conftest import SHARED

HOLO = SHARED / "data" / "anime_identities" / "hololive_danbooru"
pytestmark = pytest.mark.skipif(not DEFAULT_WEIGHTS.exists(), reason="no shipped embedder weights")


def crops_of(identity, n, start=0):
    return sorted((HOLO / identity).glob("*.jpg"))[start:start + n]


class Run:
    """Faces and assets rows of one run, with their crops in a real content store."""

    def __init__(self, root, name="f"):
        self.root, self.name = root, name  # name: face and asset ids of different runs must differ
        self.store = ContentStore(root / "store")
        self.faces, self.assets = [], []

    def add(self, image, album="holo", character=None, kind="still", sharpness=100.0):
        data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 95])[1].tobytes()
        sha = self.store.put(data, ".jpg")
        face_id = f"{self.name}{len(self.faces)}"
        asset_id = f"{self.name}-a{len(self.assets)}"
        self.assets.append({"asset_id": asset_id, "kind": kind, "character": character, "album_id": album})
        self.faces.append({"face_id": face_id, "asset_id": asset_id, "album_id": album, "crop_sha": sha,
                           "status": "kept", "drop_reason": None, "sharpness": sharpness,
                           "crop_w": image.shape[1], "crop_h": image.shape[0]})
        return face_id

    def identity(self, published=None, run_id="run", **kw):
        return run_identity_stage(pd.DataFrame(self.faces), pd.DataFrame(self.assets), published or Published.nothing(),
                                  "default", self.root, kw.get("dedup", 0.95), kw.get("prelabel", 0.6), run_id)

    def publish(self, outcome, published=None, version=0):
        """What a manifest version would make of the outcome: the index gets its vectors, its faces
        and references become the published state of the next run."""
        published = published or Published.nothing()
        PublishedIndex(self.root, outcome.faces["embedder"].iloc[0]).commit(outcome.new_vectors, outcome.new_ids, version)
        faces = outcome.faces
        refs = faces.merge(pd.DataFrame(self.assets).query("kind == 'reference'")[["asset_id", "character"]],
                           on="asset_id")
        prelabels = pd.concat([published.prelabels, faces[["face_id", *PRELABEL_COLUMNS, "embedder"]],
                               pd.DataFrame(outcome.prelabels)], ignore_index=True).drop_duplicates("face_id", keep="last")
        return Published(pd.concat([published.references, refs[published.references.columns]], ignore_index=True),
                         published.face_ids | set(faces["face_id"]), prelabels[["face_id", *PRELABEL_COLUMNS, "embedder"]],
                         outcome.calibration["reference_set"], published.labels,
                         pd.concat([published.crops, faces.loc[faces["face_id"].isin(outcome.new_ids), ["face_id", "crop_sha", "album_id"]]],
                                   ignore_index=True), version)


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


def test_views_take_view_0_from_the_plain_embedding_and_embed_only_the_centred_crops(tmp_path, monkeypatch):
    from models.embedder import REFERENCE_VIEW_SCALES, Embedder

    embedded = []  # how many images reach the network, call by call
    real_embed = Embedder.embed
    monkeypatch.setattr(Embedder, "embed", lambda self, images, **kw: embedded.append(len(images)) or real_embed(self, images, **kw))
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


def test_published_faces_are_prelabelled_again_when_their_reference_arrives(tmp_path):
    run = Run(tmp_path)
    truth = {}
    for name in ("ame", "gura"):
        for path in crops_of(name, 4, start=20):
            truth[run.add(cv2.imread(str(path)))] = f"holo/{name}"
    first = run.identity(dedup=0.98)
    assert first.faces["prelabel"].isna().all() and first.prelabels == []   # no reference yet
    published = run.publish(first)

    # The next night the characters' typical images arrive; nothing else is new.
    later = Run(tmp_path, "later")
    for name in ("ame", "gura"):
        later.add(cv2.imread(str(crops_of(name, 1)[0])), character=name, kind="reference")
    second = later.identity(published, run_id="run-2", dedup=0.98)
    rows = {r["face_id"]: r for r in second.prelabels}
    assert set(rows) <= set(truth) and len(rows) >= len(first.new_ids) - 1
    right = sum(rows[f]["prelabel"] == truth[f] for f in rows)
    assert right >= len(rows) * 3 // 4
    assert all(r["run_id"] == "run-2" and r["reference_set"] == second.calibration["reference_set"] for r in rows.values())
    assert second.calibration["prelabels_updated"] == len(rows)
    # Matched again as a new candidate would be (by the views of its crop): the scores of one run that
    # meets the same faces and typical images together.
    together = Run(tmp_path / "together", "together")  # its own root: no published index
    for name in ("ame", "gura"):
        together.add(cv2.imread(str(crops_of(name, 1)[0])), character=name, kind="reference")
    sha_of = {f["face_id"]: f["crop_sha"] for f in run.faces}
    fresh = {f["crop_sha"]: f["face_id"] for f in (together.add(cv2.imread(str(p))) and together.faces[-1]
                                                    for name in ("ame", "gura") for p in crops_of(name, 4, start=20))}
    once = together.identity(dedup=0.98).faces.set_index("face_id")
    for face_id, row in rows.items():
        assert row["prelabel_score"] == pytest.approx(once.loc[fresh[sha_of[face_id]], "prelabel_score"], abs=1e-5)

    # Another run with the same reference set changes nothing and writes nothing.
    published = later.publish(second, published, version=1)
    third_run = Run(tmp_path, "third")
    third_run.add(cv2.imread(str(crops_of("kiara", 1)[0])))
    third = third_run.identity(published, run_id="run-3", dedup=0.98)
    assert third.prelabels == [] and third.calibration["reference_set"] == second.calibration["reference_set"]


def test_published_crops_missing_from_the_index_are_embedded_before_dedup(tmp_path):
    """Crops published without this embedder (another model, or `embedder=none`) are not in its index:
    the stage embeds them first, so a copy of one of them is still caught."""
    night1 = Run(tmp_path)
    original = cv2.imread(str(crops_of("gura", 1)[0]))
    published_ids = [night1.add(original, sharpness=300.0), night1.add(cv2.imread(str(crops_of("ame", 1)[0])))]
    published = Published.nothing()
    published = Published(published.references, set(published_ids), published.prelabels, None, published.labels,
                          pd.DataFrame(night1.faces)[["face_id", "crop_sha"]], 0)  # version 0, nothing indexed

    night2 = Run(tmp_path, "night2")
    copy = cv2.resize(original, (200, 200))
    night2.faces.append(dict(night1.faces[0], face_id="copy", sharpness=900.0))  # sharper, yet published first
    night2.faces[-1]["crop_sha"] = night2.store.put(cv2.imencode(".jpg", copy)[1].tobytes(), ".jpg")
    night2.assets.append(night1.assets[0])
    out = night2.identity(published, run_id="night-2")
    assert out.published_crops_indexed == 2
    assert sorted(PublishedIndex(tmp_path, out.faces["embedder"].iloc[0]).load()[1]) == sorted(published_ids)
    face = out.faces.set_index("face_id").loc["copy"]
    assert face["drop_reason"] == "near_duplicate" and face["duplicate_of"] == published_ids[0]

    # Indexed once: the next run finds them there.
    assert night2.identity(published, run_id="night-3").published_crops_indexed == 0


def test_verified_faces_join_the_references_and_prelabel_more_faces_right(tmp_path):
    names = ["ame", "gura", "kiara", "mumei", "irys", "sana"]
    verified = Run(tmp_path, "verified")  # faces people verified on an earlier night: 3 per identity
    rows = []
    for name in names:
        for path in crops_of(name, 3, start=5):
            rows.append({"face_id": verified.add(cv2.imread(str(path))), "crop_sha": verified.faces[-1]["crop_sha"],
                         "album_id": "holo", "identity": f"holo/{name}"})
    published = dataclasses.replace(Published.nothing(), verified=pd.DataFrame(rows))

    tonight = Run(tmp_path, "tonight")  # one typical image per character, 8 new faces each
    for name in names:
        tonight.add(cv2.imread(str(crops_of(name, 1)[0])), character=name, kind="reference")
    truth = {tonight.add(cv2.imread(str(path))): f"holo/{name}" for name in names for path in crops_of(name, 8, start=30)}

    def right_and_wrong(verified_references):
        # The album mean is off so that only the verified references differ between the two runs
        # (the mean is tested on its own below).
        out = run_identity_stage(pd.DataFrame(tonight.faces), pd.DataFrame(tonight.assets), published, "default",
                                 tmp_path, 0.98, 0.6, "tonight", verified_references=verified_references, subtract_album_mean=False)
        labels = out.faces.set_index("face_id")["prelabel"]
        given = [(labels[f], truth[f]) for f in truth if labels[f] is not None]
        return out, sum(a == b for a, b in given), sum(a != b for a, b in given)

    typical_only, right_before, wrong_before = right_and_wrong(False)
    with_verified, right_after, wrong_after = right_and_wrong(True)
    assert typical_only.calibration["references"] == 6 and typical_only.calibration["verified_references"] == 0
    assert with_verified.calibration["references"] == 24 and with_verified.calibration["verified_references"] == 18
    assert all(row["references"] == 4 for row in with_verified.identities)
    assert right_after > right_before and wrong_after <= wrong_before, (right_before, right_after, wrong_before, wrong_after)


def close_up(image):
    """The same face seen closer: its centre 70%, at the same size."""
    h, w = image.shape[:2]
    return cv2.resize(image[round(h * 0.15):round(h * 0.85), round(w * 0.15):round(w * 0.85)], (w, h))


def framing_run(root, close_up_reference: bool):
    """Four characters, each with a typical image and one face that is the same drawing framed
    differently (the close-up of the other), plus 5 other faces each: (run, framed faces, others)."""
    run = Run(root)
    names = ["ame", "gura", "kiara", "mumei"]
    framed = {}
    for name in names:
        image = cv2.imread(str(crops_of(name, 1)[0]))
        typical, found = (close_up(image), image) if close_up_reference else (image, close_up(image))
        run.add(typical, character=name, kind="reference")
        framed[run.add(found)] = f"holo/{name}"
    others = {run.add(cv2.imread(str(p))): f"holo/{name}" for name in names for p in crops_of(name, 5, start=10)}
    return run, framed, others


def stage_faces(run, **settings):
    out = run_identity_stage(pd.DataFrame(run.faces), pd.DataFrame(run.assets), Published.nothing(), "default",
                             run.root, 0.98, 0.6, "run", **settings)
    return out, out.faces.set_index("face_id")


def assert_views_cached_beside_plain_embeddings(root, outcome):
    cached = sorted(p.name for p in (root / "cache" / "embeddings").iterdir())
    assert cached == [outcome.calibration["embedder"], f"{outcome.calibration['embedder']}-views-0.85-0.7-0.55"]
    plain_dir, views_dir = (root / "cache" / "embeddings" / name for name in cached)
    view_files = sorted(views_dir.glob("*/*.npy"))
    assert view_files
    for path in view_files:  # view 0 is the crop itself: its plain embedding, not computed again
        np.testing.assert_array_equal(np.load(path)[0], np.load(plain_dir / path.parent.name / path.name))


def test_reference_views_match_a_face_framed_tighter_than_its_typical_image(tmp_path):
    run, tighter, others = framing_run(tmp_path, close_up_reference=False)
    crop_only, before = stage_faces(run, reference_views=False, candidate_views=False)
    views, after = stage_faces(run, reference_views=True, candidate_views=False)
    assert crop_only.calibration["reference_views"] == 0 and views.calibration["reference_views"] == 4 * 4
    assert crop_only.calibration["reference_set"] != views.calibration["reference_set"]  # published faces get matched again
    assert (before.loc[list(tighter), "prelabel_score"] < 0.99).all()  # one view: the framing costs similarity
    assert (after.loc[list(tighter), "prelabel_score"] > 0.99).all()   # the 70% view is that framing
    assert after.loc[list(tighter), "prelabel"].tolist() == list(tighter.values())
    for faces in (before, after):  # the other faces are labelled as well either way
        labels = faces.loc[list(others), "prelabel"]
        assert sum(labels[f] == others[f] for f in others) >= 18 and sum(
            labels[f] not in (None, others[f]) for f in others) <= 2
    assert_views_cached_beside_plain_embeddings(tmp_path, views)


def test_candidate_views_match_a_face_framed_wider_than_its_typical_image(tmp_path):
    run, wider, others = framing_run(tmp_path, close_up_reference=True)
    crop_only, before = stage_faces(run, candidate_views=False)
    views, after = stage_faces(run, candidate_views=True)
    assert not crop_only.calibration["candidate_views"] and views.calibration["candidate_views"]
    assert crop_only.calibration["reference_set"] != views.calibration["reference_set"]  # published faces get matched again
    # The reference's views are closer still, so only the candidate's own 70% view meets the close-up.
    gain = after.loc[list(wider), "prelabel_score"] - before.loc[list(wider), "prelabel_score"]
    assert (gain > 0.01).all(), gain
    assert after.loc[list(wider), "prelabel"].tolist() == list(wider.values())
    labels = after.loc[list(others), "prelabel"]
    assert sum(labels[f] == others[f] for f in others) >= 16 and sum(labels[f] not in (None, others[f]) for f in others) <= 2
    assert_views_cached_beside_plain_embeddings(tmp_path, views)  # candidates' views share the references' cache


def test_nearest_identities_with_views_averages_each_views_best_match():
    refs = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    names = ["a", "a", "b"]
    views = np.array([[[0.6, 0.8, 0.0], [1.0, 0.0, 0.0]],    # a: (0.8 + 1.0) / 2 = 0.9; b: 0
                      [[0.0, 0.6, 0.8], [0.0, 0.0, 1.0]]])   # b: (0.8 + 1.0) / 2 = 0.9; a: (0.6 + 0) / 2 = 0.3
    out = nearest_identities(views, refs, names, threshold=0.6)
    assert out["prelabel"].tolist() == ["a", "b"]
    assert out["prelabel_score"].round(4).tolist() == [0.9, 0.9]
    assert out["runner_up_score"].round(4).tolist() == [0.0, 0.3]
    # One view is the plain rule; memory chunks (here one row of views at a time) change nothing.
    pd.testing.assert_frame_equal(nearest_identities(views[:, :1], refs, names, 0.6),
                                  nearest_identities(views[:, 0], refs, names, 0.6))
    pd.testing.assert_frame_equal(nearest_identities(views, refs, names, 0.6, chunk=2), out)


def test_prelabel_crops_in_chunks_equals_one_pass(tmp_path):
    rng = np.random.default_rng(0)
    plain = rng.normal(size=(7, 8))
    plain /= np.linalg.norm(plain, axis=1, keepdims=True)
    refs, names = plain[[0, 3]], ["a", "b"]
    shas = [f"{i:064x}" for i in range(7)]
    whole = nearest_identities(plain, refs, names, 0.1)
    for chunk in (1, 3, 100):
        pd.testing.assert_frame_equal(
            prelabel_crops(shas, plain, "default", tmp_path, False, refs, names, 0.1, 0.0, chunk=chunk), whole)
    assert len(prelabel_crops([], plain[:0], "default", tmp_path, False, refs, names, 0.1, 0.0)) == 0


def test_prelabel_crops_within_album_matches_only_that_albums_references(tmp_path):
    """Album b has no reference for the face that looks like album a's character: matched within its
    album it stays unlabelled instead of taking a/X. A face with no album is matched against all."""
    refs = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    names, ref_albums = ["a/X", "b/Y"], ["a", "b"]
    faces = np.array([[0.98, 0.2, 0.0], [0.98, 0.2, 0.0], [0.1, 0.99, 0.0], [0.98, 0.2, 0.0], [0.2, 0.98, 0.0]])
    faces /= np.linalg.norm(faces, axis=1, keepdims=True)
    albums = ["a", "b", "b", None, "a"]
    shas = [f"{i:064x}" for i in range(len(faces))]
    pooled = prelabel_crops(shas, faces, "default", tmp_path, False, refs, names, 0.6, 0.0)
    assert pooled["prelabel"].tolist() == ["a/X", "a/X", "b/Y", "a/X", "b/Y"]
    for chunk in (2, 100):  # chunks that split an album give the same rows, in the same order
        own = prelabel_crops(shas, faces, "default", tmp_path, False, refs, names, 0.6, 0.0, chunk=chunk,
                             albums=albums, ref_albums=ref_albums)
        assert own["prelabel"].tolist() == ["a/X", None, "b/Y", "a/X", None]
        # Each album has one reference, so only the face matched against both has a runner-up.
        assert own["runner_up"].tolist() == [None, None, None, "b/Y", None]
        np.testing.assert_allclose(own["prelabel_score"], [faces[0] @ refs[0], faces[1] @ refs[1], faces[2] @ refs[1],
                                                           faces[3] @ refs[0], faces[4] @ refs[0]])


def test_nearest_identities_hand_computed():
    refs = np.array([[1.0, 0.0, 0.0], [0.8, 0.6, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    names = ["a", "a", "b", "c"]
    probes = np.array([[0.6, 0.8, 0.0],     # a (via its 2nd reference) 0.96, b 0.8
                       [0.0, 0.6, 0.8],     # c 0.8, b 0.6
                       [0.5, 0.5, 0.70710678]])  # c 0.707 < 0.75: no pre-label; a 0.7 runner-up
    out = nearest_identities(probes, refs, names, threshold=0.75, chunk=2)
    assert out["prelabel"].tolist() == ["a", "c", None]
    assert out["prelabel_score"].round(4).tolist() == [0.96, 0.8, 0.7071]
    assert out["runner_up"].tolist() == ["b", "b", "a"]
    assert out["prelabel_margin"].round(4).tolist() == [0.16, 0.2, 0.0071]
    # with a minimum margin over the runner-up, the close call (0.96 against 0.8) stays unlabelled
    strict = nearest_identities(probes, refs, names, threshold=0.75, min_margin=0.18)
    assert strict["prelabel"].tolist() == [None, "c", None]
    assert strict["prelabel_score"].equals(out["prelabel_score"])


def test_prelabel_quality_against_verified_labels():
    current = pd.DataFrame({"face_id": ["f1", "f2", "f3", "f4", "f5"],
                            "prelabel": ["x/a", "x/a", "x/b", None, "x/b"],
                            "prelabel_score": [0.9, 0.65, 0.75, 0.5, 0.95]})
    labels = pd.DataFrame({
        "face_id": ["f1", "f2", "f2", "f3", "f4"], "identity": ["x/a", "x/b", "x/a", "x/b", "x/a"],
        "verdict": ["verified", "verified", "rejected", "rejected", "verified"],
        "decided_at": pd.to_datetime(["2026-01-01"] * 5, utc=True), "decision_id": ["d1", "d2", "d3", "d4", "d5"]})
    q = prelabel_quality(current, labels, 0.6)
    # f1 right; f2 wrong (verified as b); f3 wrong (rejected); f4 verified but not pre-labelled; f5 unjudged
    assert q["verified_faces"] == 3 and q["judged"] == 3
    assert q["precision"] == pytest.approx(1 / 3, abs=1e-4) and q["recall"] == pytest.approx(1 / 3, abs=1e-4)
    at_07 = next(s for s in q["sweep"] if s["threshold"] == 0.7)
    assert at_07["judged"] == 2 and at_07["precision"] == 0.5             # f2 (0.65) is no longer pre-labelled
    assert prelabel_quality(current, labels.iloc[0:0], 0.6)["sweep"] == []


def test_prelabel_quality_sweeps_margins_per_album_and_suggests_a_setting():
    # 60 faces of show "a" right with margins 0.02..0.40, 10 wrong with margins 0.03..0.12; show "b": 5 wrong.
    rng = np.random.default_rng(0)
    right_m = np.linspace(0.02, 0.40, 60)
    faces = ([(f"r{i}", "a/x", 0.8, m, "a/x") for i, m in enumerate(right_m)]
             + [(f"w{i}", "a/x", 0.8, 0.03 + 0.01 * i, "a/y") for i in range(10)]
             + [(f"b{i}", "b/z", 0.9, 0.5, "b/q") for i in range(5)])
    order = rng.permutation(len(faces))
    faces = [faces[i] for i in order]
    current = pd.DataFrame({"face_id": [f[0] for f in faces], "prelabel": [f[1] for f in faces],
                            "prelabel_score": [f[2] for f in faces], "prelabel_margin": [f[3] for f in faces]})
    labels = pd.DataFrame({"face_id": [f[0] for f in faces], "identity": [f[4] for f in faces],
                           "verdict": "verified", "decided_at": pd.Timestamp("2026-01-01", tz="UTC"),
                           "decision_id": [f"d{i}" for i in range(len(faces))]})
    q = prelabel_quality(current, labels, 0.6, min_margin=0.0)
    assert (q["judged"], q["precision"]) == (75, round(60 / 75, 4))
    assert q["by_album"] == {"a": {"judged": 70, "right": 60, "precision": round(60 / 70, 4)},
                             "b": {"judged": 5, "right": 0, "precision": 0.0}}
    grid = {(r["threshold"], r["min_margin"]): r for r in q["sweep"]}
    assert len(grid) == 4 * 5 and q["sweep"][0]["min_margin"] == 0.0
    # margin 0.15: the wrong "a" faces (margins <= 0.12) drop out; "b"'s five stay wrong
    assert grid[(0.6, 0.15)]["right"] == int((right_m >= 0.15).sum()) and grid[(0.6, 0.15)]["judged"] == grid[(0.6, 0.15)]["right"] + 5
    # at 0.8 (scores are not above it) only "b" is labelled: nothing reaches the target precision
    assert grid[(0.8, 0.0)]["judged"] == 5 and grid[(0.8, 0.0)]["precision"] == 0.0
    assert q["suggested"] is None           # b's wrong faces keep every setting under 0.95

    # without show b, margin 0.15 is the loosest to pass (0.1 keeps three wrong faces: 0.94)
    show_a = current[~current["face_id"].str.startswith("b")]
    q = prelabel_quality(show_a, labels, 0.6, 0.0, random_sample=set(show_a["face_id"]))
    assert q["suggested"] == {"threshold": 0.6, "min_margin": 0.15, "precision": 1.0,
                              "judged": int((right_m >= 0.15).sum()), "right": int((right_m >= 0.15).sum())}
    assert (q["sample"]["judged"], q["sample"]["right"], q["sample"]["recall"]) == (70, 60, round(60 / 70, 4))
    # the suggestion speaks only from faces judged in random order: none, no suggestion ...
    assert prelabel_quality(show_a, labels, 0.6, 0.0)["suggested"] is None
    # ... and a sample of the surest faces (all right) would keep the setting in force
    surest = {f for f in show_a["face_id"] if f.startswith("r")}
    assert prelabel_quality(show_a, labels, 0.6, 0.0, random_sample=surest)["suggested"] == {
        "threshold": 0.6, "min_margin": 0.0, "precision": 1.0, "judged": 60, "right": 60}
    # a stricter setting in force is the sweep's start: looser margins cannot be judged
    assert {r["min_margin"] for r in prelabel_quality(current, labels, 0.6, 0.1)["sweep"]} == {0.1, 0.15, 0.2}


def test_album_mean_is_taken_over_a_power_of_two_of_its_first_faces():
    assert [album_mean_faces(n) for n in (0, 15, 16, 31, 32, 100, 1023, 1024, 50_000)] == \
        [0, 0, 16, 16, 32, 64, 512, 1024, 1024]


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

    means, counts = album_means(["show"] * len(album), [None] * len(album), album.astype(np.float32), "default",
                                ".", views=False)
    assert counts == {"show": 32} and np.allclose(means["show"], album[:32].mean(axis=0), atol=1e-6)
    centred = nearest_identities(subtract_mean(album, [means["show"]] * len(album)),
                                 subtract_mean(refs, [means["show"]] * 2), names, threshold=0.6)
    assert centred["prelabel"][2::3].isna().all()
    assert (centred["prelabel"][0::3] == "show/A").all() and (centred["prelabel"][1::3] == "show/B").all()


def test_album_mean_on_real_crops_stays_until_the_album_doubles(tmp_path):
    """The mean of an album is fixed by its first 16, 32, ... faces: a night that adds a few faces
    leaves it (and every published pre-label) alone; the night the album reaches 32 faces its mean
    is taken again and the published faces are matched again with it."""
    names = ["ame", "gura", "kiara", "mumei"]
    night1 = Run(tmp_path, "n1")
    for name in names:
        night1.add(cv2.imread(str(crops_of(name, 1)[0])), character=name, kind="reference")
    for name in names:
        for path in crops_of(name, 5, start=10):
            night1.add(cv2.imread(str(path)))
    first = night1.identity(dedup=0.98)
    kept = len(first.new_ids)
    assert 16 <= kept < 24, kept
    assert first.calibration["album_mean_faces"] == {"holo": 16}
    plain = run_identity_stage(pd.DataFrame(night1.faces), pd.DataFrame(night1.assets), Published.nothing(), "default",
                               tmp_path, 0.98, 0.6, "run", subtract_album_mean=False)
    assert plain.calibration["album_mean_faces"] is None
    assert plain.calibration["reference_set"] != first.calibration["reference_set"]
    scores = first.faces.set_index("face_id")["prelabel_score"]
    assert not np.allclose(scores.dropna(), plain.faces.set_index("face_id")["prelabel_score"].dropna())
    published = night1.publish(first)

    night2 = Run(tmp_path, "n2")  # a few more faces: still under 32, the same mean
    for path in crops_of("sana", 3, start=10):
        night2.add(cv2.imread(str(path)))
    second = night2.identity(published, run_id="run-2", dedup=0.98)
    assert second.calibration["album_mean_faces"] == {"holo": 16}
    assert second.calibration["reference_set"] == first.calibration["reference_set"] and second.prelabels == []
    published = night2.publish(second, published, version=1)

    night3 = Run(tmp_path, "n3")  # enough to reach 32: a new mean, and the published faces matched again
    for name in names:
        for path in crops_of(name, 4, start=30):
            night3.add(cv2.imread(str(path)))
    third = night3.identity(published, run_id="run-3", dedup=0.98)
    assert third.calibration["album_mean_faces"] == {"holo": 32}
    assert third.calibration["reference_set"] != second.calibration["reference_set"]
    assert third.prelabels and {r["face_id"] for r in third.prelabels} <= set(first.new_ids + second.new_ids)


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
    assert len(entries) == 1

    model_id = load("default")[1]["model_id"]
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


def test_faces_take_only_identities_of_their_own_album(tmp_path):
    """Album b shows ame but has no typical image of her: its ame faces stay unlabelled (or take b's
    own gura), never album a's ame, unless within_album is switched off."""
    run = Run(tmp_path)
    run.add(cv2.imread(str(crops_of("ame", 1)[0])), album="a", character="ame", kind="reference")
    run.add(cv2.imread(str(crops_of("gura", 1)[0])), album="b", character="gura", kind="reference")
    b_faces = [run.add(cv2.imread(str(p)), album="b") for p in crops_of("ame", 6, start=10) + crops_of("gura", 4, start=10)]
    for path in crops_of("ame", 4, start=30):
        run.add(cv2.imread(str(path)), album="a")
    own = run.identity(dedup=0.98)
    labels = own.faces.set_index("face_id")["prelabel"]
    assert own.calibration["within_album"] is True
    assert not labels[b_faces].fillna("").str.startswith("a/").any()
    assert (labels[b_faces[6:]] == "b/gura").sum() >= 3
    pooled = run_identity_stage(pd.DataFrame(run.faces), pd.DataFrame(run.assets), Published.nothing(), "default",
                                tmp_path, 0.98, 0.6, "run", within_album=False)
    pooled_labels = pooled.faces.set_index("face_id")["prelabel"]
    assert (pooled_labels[b_faces[:6]] == "a/ame").sum() >= 3
    assert pooled.calibration["reference_set"] != own.calibration["reference_set"]
