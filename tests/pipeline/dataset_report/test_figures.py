"""The report's figures equal pandas computations on the same version."""

import numpy as np

from data_manifest import Manifest
from pipeline.dataset_report.figures import version_figures


def test_the_paper_statistics_of_a_version(dataset):
    m = Manifest(dataset)
    figures = version_figures(m)
    faces = m.read("faces")
    shorter = np.minimum(faces["crop_w"], faces["crop_h"])
    assert figures["version"] == 1 and figures["thresholds"] == {"min_crop_side": 100.0, "min_sharpness": 30.0}
    assert figures["totals"] == {"albums": 2, "images": 4, "faces": 5, "kept": 3, "identities": 3, "verified_faces": 1}
    assert figures["resolution"]["count"] == 5 and figures["resolution"]["below"] == int((shorter < 100).sum()) == 1
    assert sum(figures["resolution"]["counts"]) == 5
    assert figures["sharpness"]["below"] == int((faces["sharpness"] < 30).sum()) == 1
    assert figures["regions"] == {"JP": 2, "US": 1}  # moon/Hana and moon/Kai in Japan, sun/Bo in the US
    assert figures["pose"]["estimated"] is False and "not estimated" in figures["pose"]["note"]


def test_identities_funnel_conflicts_and_changes(dataset):
    figures = version_figures(Manifest(dataset))
    by_identity = {r["identity"]: r for r in figures["identities"]}
    assert by_identity["moon/Hana"] == {"identity": "moon/Hana", "album_id": "moon", "verified": 1, "rejected": 0,
                                        "prelabelled": 1, "pending": 0}  # fmt: skip
    assert by_identity["sun/Bo"]["pending"] == 1 and by_identity["moon/Kai"]["prelabelled"] == 1
    assert figures["samples_per_identity"]["verified"] == {"0": 2, "1": 1}
    funnel = {(r["album_id"], r["kind"]): r for r in figures["funnel"]}
    assert funnel[("moon", "still")] == {"album_id": "moon", "kind": "still", "images": 1, "images_dropped": 0,
                                              "faces": 2, "kept": 1, "face.low_resolution": 1}  # fmt: skip
    assert funnel[("moon", "frame")]["face.blurry"] == 1 and funnel[("sun", "still")]["image.not_an_image"] == 1
    assert figures["conflicts"] == [{"identity": "moon/Hana", "other": "moon/Kai", "similarity": 0.97}]
    assert figures["calibration"] == {"prelabel_threshold": 0.6}
    assert figures["changes"]["previous_version"] == 0
    assert figures["changes"]["rows_added"]["faces"] == 2 and figures["changes"]["identities_gained"] == ["sun/Bo"]


def test_an_earlier_version_is_reported_as_it_was(dataset):
    figures = version_figures(Manifest(dataset), version=0)
    assert figures["totals"]["faces"] == 3 and figures["calibration"] == {}
    assert figures["changes"]["previous_version"] is None
