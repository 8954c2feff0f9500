"""What the page offers for a face: the keys 1-9 list its own album's characters before other albums'."""

from pipeline.annotate.catalogue import Catalogue


def face(album, prelabel, runner_up):
    return {
        "crop_sha": "0" * 64,
        "status": "kept",
        "album_id": album,
        "prelabel": prelabel,
        "prelabel_score": 0.7,
        "runner_up": runner_up,
        "runner_up_score": 0.65,
        "prelabel_margin": 0.05,
        "embedder": "e",
    }


def catalogue(faces, identities):
    return Catalogue(
        version=1,
        faces=faces,
        crops=set(),
        refs={},
        identities=sorted(identities),
        candidates=set(faces),
        labelled=set(),
        gold={},
        orders={},
        gold_order=[],
    )


def offered(cat, face_id):
    proposed, _, _ = cat.proposal(face_id)
    return [a["identity"] for a in cat.alternatives(face_id, proposed)]


def test_alternatives_follow_the_faces_album_then_the_rest():
    identities = ["aa/ann", "aa/zed", "show/bob", "show/cy", "show/dot", "zz/eve"]
    cat = catalogue(
        {
            # pre-labelled against every album (within_album off) with another show's character
            "f1": face("show", "aa/ann", "show/bob"),
            # no album recorded: the proposal's album comes first
            "f2": face(None, "zz/eve", None),
        },
        identities,
    )
    assert offered(cat, "f1") == ["show/bob", "show/cy", "show/dot", "aa/zed", "zz/eve"]
    assert offered(cat, "f2") == identities[:5]


def test_no_more_than_nine_alternatives():
    identities = [f"show/c{i:02d}" for i in range(20)]
    cat = catalogue({"f": face("show", "show/c05", "show/c07")}, identities)
    got = offered(cat, "f")
    assert len(got) == 9 and got[0] == "show/c07" and "show/c05" not in got
