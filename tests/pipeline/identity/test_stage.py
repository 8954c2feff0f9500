"""The identity stage with the shipped embedder on real cartoon crops: references, conflicts,
near-duplicates of re-encoded copies, pre-labels, and published faces matched again."""

import dataclasses

import cv2
import numpy as np
import pandas as pd
import pytest

from pipeline.config import IdentitySettings
from pipeline.dedup import PublishedIndex
from pipeline.identity.embedding import load
from pipeline.identity.matching import nearest_identities
from pipeline.identity.published import Published
from pipeline.identity.rule import prelabel_crops, reference_set_id
from pipeline.identity.stage import PICTURE_CHECK_CANDIDATES, run_identity_stage
from tests.pipeline.identity.crops import Run, crops_of, needs_weights


@needs_weights
@pytest.mark.shared_data
def test_prelabels_real_crops_with_their_reference_identity(tmp_path):
    run = Run(tmp_path)
    names = ["ame", "gura", "kiara", "mumei"]
    for name in names:
        run.add(cv2.imread(str(crops_of(name, 1)[0])), character=name, kind="reference")
    probes = {}
    for name in names:
        for path in crops_of(name, 5, start=10):
            probes[run.add(cv2.imread(str(path)))] = f"holo/{name}"
    out = run.identity(dedup_threshold=0.98)  # the shipped model's calibrated duplicate threshold
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


@needs_weights
@pytest.mark.shared_data
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


@needs_weights
@pytest.mark.shared_data
def test_two_names_with_the_same_looking_reference_are_a_conflict_not_a_merge(tmp_path):
    run = Run(tmp_path)
    image = cv2.imread(str(crops_of("irys", 1)[0]))
    run.add(image, character="Irys", kind="reference")
    run.add(cv2.flip(cv2.flip(image, 1), 1), album="holo", character="IRyS (alt name)", kind="reference")
    out = run.identity()
    rows = {r["identity"]: r for r in out.identities}
    assert set(rows) == {"holo/Irys", "holo/IRyS (alt name)"}
    assert "holo/IRyS (alt name)" in rows["holo/Irys"]["conflicts"]


@needs_weights
@pytest.mark.shared_data
def test_published_faces_are_prelabelled_again_when_their_reference_arrives(tmp_path):
    run = Run(tmp_path)
    truth = {}
    for name in ("ame", "gura"):
        for path in crops_of(name, 4, start=20):
            truth[run.add(cv2.imread(str(path)))] = f"holo/{name}"
    first = run.identity(dedup_threshold=0.98)
    assert first.faces["prelabel"].isna().all() and first.prelabels == []  # no reference yet
    published = run.publish(first)

    # The next night the characters' typical images arrive; nothing else is new.
    later = Run(tmp_path, "later")
    for name in ("ame", "gura"):
        later.add(cv2.imread(str(crops_of(name, 1)[0])), character=name, kind="reference")
    second = later.identity(published, run_id="run-2", dedup_threshold=0.98)
    rows = {r["face_id"]: r for r in second.prelabels}
    assert set(rows) <= set(truth) and len(rows) >= len(first.new_ids) - 1
    right = sum(rows[f]["prelabel"] == truth[f] for f in rows)
    assert right >= len(rows) * 3 // 4
    assert all(
        r["run_id"] == "run-2" and r["reference_set"] == second.calibration["reference_set"] for r in rows.values()
    )
    assert second.calibration["prelabels_updated"] == len(rows)
    # Matched again as a new candidate would be (by the views of its crop): the scores of one run that
    # meets the same faces and typical images together.
    together = Run(tmp_path / "together", "together")  # its own root: no published index
    for name in ("ame", "gura"):
        together.add(cv2.imread(str(crops_of(name, 1)[0])), character=name, kind="reference")
    sha_of = {f["face_id"]: f["crop_sha"] for f in run.faces}
    fresh = {
        f["crop_sha"]: f["face_id"]
        for f in (
            together.add(cv2.imread(str(p))) and together.faces[-1]
            for name in ("ame", "gura")
            for p in crops_of(name, 4, start=20)
        )
    }
    once = together.identity(dedup_threshold=0.98).faces.set_index("face_id")
    for face_id, row in rows.items():
        assert row["prelabel_score"] == pytest.approx(once.loc[fresh[sha_of[face_id]], "prelabel_score"], abs=1e-5)

    # Another run with the same reference set changes nothing and writes nothing.
    published = later.publish(second, published, version=1)
    third_run = Run(tmp_path, "third")
    third_run.add(cv2.imread(str(crops_of("kiara", 1)[0])))
    third = third_run.identity(published, run_id="run-3", dedup_threshold=0.98)
    assert third.prelabels == [] and third.calibration["reference_set"] == second.calibration["reference_set"]


@needs_weights
@pytest.mark.shared_data
def test_published_crops_missing_from_the_index_are_embedded_before_dedup(tmp_path):
    """Crops published without this embedder (another model, or `embedder=none`) are not in its index:
    the stage embeds them first, so a copy of one of them is still caught."""
    night1 = Run(tmp_path)
    original = cv2.imread(str(crops_of("gura", 1)[0]))
    published_ids = [night1.add(original, sharpness=300.0), night1.add(cv2.imread(str(crops_of("ame", 1)[0])))]
    published = Published.nothing()
    published = Published(
        published.references,
        set(published_ids),
        published.prelabels,
        None,
        published.labels,
        pd.DataFrame(night1.faces)[["face_id", "crop_sha"]],
        0,
    )  # version 0, nothing indexed

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


@needs_weights
@pytest.mark.shared_data
def test_verified_faces_join_the_references_and_prelabel_more_faces_right(tmp_path):
    names = ["ame", "gura", "kiara", "mumei", "irys", "sana"]
    verified = Run(tmp_path, "verified")  # faces people verified on an earlier night: 3 per identity
    rows = []
    for name in names:
        for path in crops_of(name, 3, start=5):
            rows.append(
                {
                    "face_id": verified.add(cv2.imread(str(path))),
                    "crop_sha": verified.faces[-1]["crop_sha"],
                    "album_id": "holo",
                    "identity": f"holo/{name}",
                }
            )
    published = dataclasses.replace(Published.nothing(), verified=pd.DataFrame(rows))

    tonight = Run(tmp_path, "tonight")  # one typical image per character, 8 new faces each
    for name in names:
        tonight.add(cv2.imread(str(crops_of(name, 1)[0])), character=name, kind="reference")
    truth = {
        tonight.add(cv2.imread(str(path))): f"holo/{name}" for name in names for path in crops_of(name, 8, start=30)
    }

    def right_and_wrong(verified_references):
        # The album mean is off so that only the verified references differ between the two runs
        # (the mean is tested on its own below).
        out = tonight.identity(
            published,
            run_id="tonight",
            dedup_threshold=0.98,
            verified_references=verified_references,
            subtract_album_mean=False,
        )
        labels = out.faces.set_index("face_id")["prelabel"]
        given = [(labels[f], truth[f]) for f in truth if labels[f] is not None]
        return out, sum(a == b for a, b in given), sum(a != b for a, b in given)

    typical_only, right_before, wrong_before = right_and_wrong(False)
    with_verified, right_after, wrong_after = right_and_wrong(True)
    assert typical_only.calibration["references"] == 6 and typical_only.calibration["verified_references"] == 0
    assert with_verified.calibration["references"] == 24 and with_verified.calibration["verified_references"] == 18
    assert all(row["references"] == 4 for row in with_verified.identities)
    assert right_after > right_before and wrong_after <= wrong_before, (
        right_before,
        right_after,
        wrong_before,
        wrong_after,
    )


def close_up(image):
    """The same face seen closer: its centre 70%, at the same size."""
    h, w = image.shape[:2]
    return cv2.resize(image[round(h * 0.15) : round(h * 0.85), round(w * 0.15) : round(w * 0.85)], (w, h))


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
    out = run.identity(dedup_threshold=0.98, **settings)
    return out, out.faces.set_index("face_id")


def assert_views_cached_beside_plain_embeddings(root, outcome):
    cached = sorted(p.name for p in (root / "cache" / "embeddings").iterdir())
    assert cached == [outcome.calibration["embedder"], f"{outcome.calibration['embedder']}-views-0.85-0.7-0.55"]
    plain_dir, views_dir = (root / "cache" / "embeddings" / name for name in cached)
    view_files = sorted(views_dir.glob("*/*.npy"))
    assert view_files
    for path in view_files:  # view 0 is the crop itself: its plain embedding, not computed again
        np.testing.assert_array_equal(np.load(path)[0], np.load(plain_dir / path.parent.name / path.name))


@needs_weights
@pytest.mark.shared_data
def test_reference_views_match_a_face_framed_tighter_than_its_typical_image(tmp_path):
    run, tighter, others = framing_run(tmp_path, close_up_reference=False)
    crop_only, before = stage_faces(run, reference_views=False, candidate_views=False)
    views, after = stage_faces(run, reference_views=True, candidate_views=False)
    assert crop_only.calibration["reference_views"] == 0 and views.calibration["reference_views"] == 4 * 4
    assert (
        crop_only.calibration["reference_set"] != views.calibration["reference_set"]
    )  # published faces get matched again
    assert (before.loc[list(tighter), "prelabel_score"] < 0.99).all()  # one view: the framing costs similarity
    assert (after.loc[list(tighter), "prelabel_score"] > 0.99).all()  # the 70% view is that framing
    assert after.loc[list(tighter), "prelabel"].tolist() == list(tighter.values())
    for faces in (before, after):  # the other faces are labelled as well either way
        labels = faces.loc[list(others), "prelabel"]
        assert (
            sum(labels[f] == others[f] for f in others) >= 18
            and sum(labels[f] not in (None, others[f]) for f in others) <= 2
        )
    assert_views_cached_beside_plain_embeddings(tmp_path, views)


@needs_weights
@pytest.mark.shared_data
def test_candidate_views_match_a_face_framed_wider_than_its_typical_image(tmp_path):
    run, wider, others = framing_run(tmp_path, close_up_reference=True)
    crop_only, before = stage_faces(run, candidate_views=False)
    views, after = stage_faces(run, candidate_views=True)
    assert not crop_only.calibration["candidate_views"] and views.calibration["candidate_views"]
    assert (
        crop_only.calibration["reference_set"] != views.calibration["reference_set"]
    )  # published faces get matched again
    # The reference's views are closer still, so only the candidate's own 70% view meets the close-up.
    gain = after.loc[list(wider), "prelabel_score"] - before.loc[list(wider), "prelabel_score"]
    assert (gain > 0.01).all(), gain
    assert after.loc[list(wider), "prelabel"].tolist() == list(wider.values())
    labels = after.loc[list(others), "prelabel"]
    assert (
        sum(labels[f] == others[f] for f in others) >= 16
        and sum(labels[f] not in (None, others[f]) for f in others) <= 2
    )
    assert_views_cached_beside_plain_embeddings(tmp_path, views)  # candidates' views share the references' cache


def test_prelabel_crops_in_chunks_equals_one_pass(tmp_path):
    rng = np.random.default_rng(0)
    plain = rng.normal(size=(7, 8))
    plain /= np.linalg.norm(plain, axis=1, keepdims=True)
    refs, names = plain[[0, 3]], ["a", "b"]
    shas = [f"{i:064x}" for i in range(7)]
    whole = nearest_identities(plain, refs, names, 0.1)
    for chunk in (1, 3, 100):
        pd.testing.assert_frame_equal(
            prelabel_crops(shas, plain, "default", tmp_path, False, refs, names, 0.1, 0.0, chunk=chunk), whole
        )
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
        own = prelabel_crops(
            shas,
            faces,
            "default",
            tmp_path,
            False,
            refs,
            names,
            0.6,
            0.0,
            chunk=chunk,
            albums=albums,
            ref_albums=ref_albums,
        )
        assert own["prelabel"].tolist() == ["a/X", None, "b/Y", "a/X", None]
        # Each album has one reference, so only the face matched against both has a runner-up.
        assert own["runner_up"].tolist() == [None, None, None, "b/Y", None]
        np.testing.assert_allclose(
            own["prelabel_score"],
            [faces[0] @ refs[0], faces[1] @ refs[1], faces[2] @ refs[1], faces[3] @ refs[0], faces[4] @ refs[0]],
        )


@needs_weights
@pytest.mark.shared_data
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
    first = night1.identity(dedup_threshold=0.98)
    kept = len(first.new_ids)
    assert 16 <= kept < 24, kept
    assert first.calibration["album_mean_faces"] == {"holo": 16}
    plain = night1.identity(dedup_threshold=0.98, subtract_album_mean=False)
    assert plain.calibration["album_mean_faces"] is None
    assert plain.calibration["reference_set"] != first.calibration["reference_set"]
    scores = first.faces.set_index("face_id")["prelabel_score"]
    assert not np.allclose(scores.dropna(), plain.faces.set_index("face_id")["prelabel_score"].dropna())
    published = night1.publish(first)

    night2 = Run(tmp_path, "n2")  # a few more faces: still under 32, the same mean
    for path in crops_of("sana", 3, start=10):
        night2.add(cv2.imread(str(path)))
    second = night2.identity(published, run_id="run-2", dedup_threshold=0.98)
    assert second.calibration["album_mean_faces"] == {"holo": 16}
    assert second.calibration["reference_set"] == first.calibration["reference_set"] and second.prelabels == []
    published = night2.publish(second, published, version=1)

    night3 = Run(tmp_path, "n3")  # enough to reach 32: a new mean, and the published faces matched again
    for name in names:
        for path in crops_of(name, 4, start=30):
            night3.add(cv2.imread(str(path)))
    third = night3.identity(published, run_id="run-3", dedup_threshold=0.98)
    assert third.calibration["album_mean_faces"] == {"holo": 32}
    assert third.calibration["reference_set"] != second.calibration["reference_set"]
    assert third.prelabels and {r["face_id"] for r in third.prelabels} <= set(first.new_ids + second.new_ids)


@needs_weights
@pytest.mark.shared_data
def test_faces_take_only_identities_of_their_own_album(tmp_path):
    """Album b shows ame but has no typical image of her: its ame faces stay unlabelled (or take b's
    own gura), never album a's ame, unless within_album is switched off."""
    run = Run(tmp_path)
    run.add(cv2.imread(str(crops_of("ame", 1)[0])), album="a", character="ame", kind="reference")
    run.add(cv2.imread(str(crops_of("gura", 1)[0])), album="b", character="gura", kind="reference")
    b_faces = [
        run.add(cv2.imread(str(p)), album="b") for p in crops_of("ame", 6, start=10) + crops_of("gura", 4, start=10)
    ]
    for path in crops_of("ame", 4, start=30):
        run.add(cv2.imread(str(path)), album="a")
    own = run.identity(dedup_threshold=0.98)
    labels = own.faces.set_index("face_id")["prelabel"]
    assert own.calibration["within_album"] is True
    assert not labels[b_faces].fillna("").str.startswith("a/").any()
    assert (labels[b_faces[6:]] == "b/gura").sum() >= 3
    pooled = run.identity(dedup_threshold=0.98, within_album=False)
    pooled_labels = pooled.faces.set_index("face_id")["prelabel"]
    assert (pooled_labels[b_faces[:6]] == "a/ame").sum() >= 3
    assert pooled.calibration["reference_set"] != own.calibration["reference_set"]


@needs_weights
@pytest.mark.shared_data
def test_thresholds_left_unset_are_the_embedders_and_the_random_sample_is_judged_apart(tmp_path):
    run = Run(tmp_path)
    run.add(cv2.imread(str(crops_of("gura", 1)[0])), character="gura", kind="reference")
    faces = [run.add(cv2.imread(str(path))) for path in crops_of("gura", 3, start=10)]
    labels = pd.DataFrame(
        {
            "face_id": faces,
            "identity": "holo/gura",
            "verdict": "verified",
            "decided_at": pd.Timestamp("2026-01-01", tz="UTC"),
            "decision_id": faces,
        }
    )
    published = dataclasses.replace(Published.nothing(), labels=labels)
    # The similarity alone decides near-duplicates here (dedup_same_picture=False), at the embedder's threshold.
    unset = {"dedup_threshold": None, "prelabel_threshold": None, "dedup_same_picture": False}
    out = run.identity(published, **unset, random_sample={faces[0]})
    calibrated = load("default").thresholds(None, None)
    assert (out.calibration["dedup_threshold"], out.calibration["prelabel_threshold"]) == calibrated
    quality = out.calibration["prelabel_vs_verified"]
    labelled = out.faces.set_index("face_id")["prelabel"]
    assert quality["judged"] == sum(labelled[f] == "holo/gura" for f in faces)
    assert quality["sample"]["judged"] == int(labelled[faces[0]] == "holo/gura")
    # The fingerprint is of the resolved settings: the calibrated values given by hand are the same rule.
    same = run.identity(
        published, dedup_threshold=calibrated[0], prelabel_threshold=calibrated[1], dedup_same_picture=False
    )
    assert same.calibration["reference_set"] == out.calibration["reference_set"]
    # With the picture check (the default), an unset threshold is the similarity that proposes candidates.
    checked = run.identity(published, dedup_threshold=None, prelabel_threshold=None)
    assert checked.calibration["dedup_threshold"] == PICTURE_CHECK_CANDIDATES


REFS = pd.DataFrame({"face_id": ["f1", "f2"], "identity": ["a/x", "b/y"], "album_id": ["a", "b"]})
RESOLVED = IdentitySettings(dedup_threshold=0.95, prelabel_threshold=0.6)


def test_reference_set_covers_every_setting_the_references_and_the_album_means():
    fingerprint = reference_set_id("m", RESOLVED, REFS, None)
    assert reference_set_id("m", RESOLVED, REFS.iloc[::-1], None) == fingerprint  # pairs are sorted
    other = {
        "embedder": "other.safetensors",
        "dedup_threshold": 0.9,
        "prelabel_threshold": 0.7,
        "prelabel_min_margin": 0.1,
    }
    for field in dataclasses.fields(IdentitySettings):  # a setting added later is covered too
        value = other.get(field.name, not getattr(RESOLVED, field.name))
        assert reference_set_id("m", dataclasses.replace(RESOLVED, **{field.name: value}), REFS, None) != fingerprint, (
            field.name
        )
    assert reference_set_id("other-model", RESOLVED, REFS, None) != fingerprint
    assert reference_set_id("m", RESOLVED, REFS.assign(identity=["a/x", "b/z"]), None) != fingerprint
    mean = np.linspace(-1, 1, 8).astype(np.float32)
    with_mean = reference_set_id("m", RESOLVED, REFS, {"a": mean})
    assert with_mean != fingerprint
    assert reference_set_id("m", RESOLVED, REFS, {"a": mean + 1e-7}) == with_mean  # float noise
    assert reference_set_id("m", RESOLVED, REFS, {"a": mean * 0.5}) != with_mean  # an album that doubled


def test_a_references_album_counts_when_faces_are_matched_within_their_album_as_by_default():
    assert IdentitySettings().within_album
    moved = REFS.assign(album_id=["a", "c"])
    assert reference_set_id("m", RESOLVED, moved, None) != reference_set_id("m", RESOLVED, REFS, None)
    pooled = dataclasses.replace(RESOLVED, within_album=False)
    assert reference_set_id("m", pooled, moved, None) == reference_set_id("m", pooled, REFS, None)


def test_the_stage_takes_its_settings_by_keyword():
    with pytest.raises(TypeError):
        run_identity_stage(pd.DataFrame(), pd.DataFrame(), Published.nothing(), RESOLVED, ".", "run")


@needs_weights
@pytest.mark.shared_data
def test_near_duplicates_are_copies_of_one_picture_not_other_drawings_of_the_character(tmp_path):
    # Two different real drawings of one character are as alike to the embedder as a copy: the embedding
    # proposes, the picture check keeps the second drawing and drops the re-encoded, cropped, mirrored copy.
    run = Run(tmp_path)
    first, second = (cv2.imread(str(p)) for p in crops_of("gura", 2))
    a = run.add(first, sharpness=300.0)
    b = run.add(second, sharpness=250.0)
    h, w = first.shape[:2]
    copy = cv2.flip(first[h // 16 : h - h // 16, w // 16 : w - w // 16], 1)
    copy = cv2.imdecode(cv2.imencode(".jpg", copy, [cv2.IMWRITE_JPEG_QUALITY, 40])[1], cv2.IMREAD_COLOR)
    c = run.add(copy, sharpness=100.0)
    out = run.identity(dedup_threshold=0.5)  # every pair a candidate: only the picture check decides
    faces = out.faces.set_index("face_id")
    assert faces.loc[[a, b], "status"].tolist() == ["kept", "kept"]
    assert faces.loc[c, "drop_reason"] == "near_duplicate" and faces.loc[c, "duplicate_of"] == a
    assert out.calibration["dedup_same_picture"] is True

    # The paper's rule on the same crops (similarity alone, here at 0.5) drops the second drawing too.
    paper = Run(tmp_path / "paper")
    for image, sharpness in ((first, 300.0), (second, 250.0), (copy, 100.0)):
        paper.add(image, sharpness=sharpness)
    faces = paper.identity(dedup_threshold=0.5, dedup_same_picture=False).faces
    assert faces["drop_reason"].tolist() == [None, "near_duplicate", "near_duplicate"]


@needs_weights
@pytest.mark.shared_data
def test_two_faces_of_one_image_are_never_copies_of_each_other_however_their_crops_overlap(tmp_path):
    # Two crops sharing 60% of one drawing: from two images, the second is a copy (a re-cropped
    # picture); as two faces of one image, both stay.
    image = cv2.imread(str(crops_of("kiara", 1)[0]))
    w = image.shape[1]
    left, right = image[:, : w * 4 // 5], image[:, w // 5 :]
    apart = Run(tmp_path / "apart")
    apart.add(left, sharpness=300.0)
    apart.add(right, sharpness=200.0)
    assert apart.identity(dedup_threshold=0.3).faces["drop_reason"].tolist() == [None, "near_duplicate"]

    together = Run(tmp_path / "together")
    together.add(left, sharpness=300.0)
    together.add(right, sharpness=200.0)
    together.faces[1]["asset_id"] = together.faces[0]["asset_id"]
    assert together.identity(dedup_threshold=0.3).faces["status"].tolist() == ["kept", "kept"]
