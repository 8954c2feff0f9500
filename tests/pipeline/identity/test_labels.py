"""The verification labels in force."""

import pandas as pd

from pipeline.identity.labels import latest_labels, verified_faces


def test_the_latest_label_of_a_face_and_identity_is_in_force():
    labels = pd.DataFrame(
        {
            "face_id": ["f1", "f1", "f2", "f3", "f3"],
            "identity": ["x/a", "x/a", "x/b", "x/a", "x/b"],
            "verdict": ["verified", "rejected", "verified", "verified", "verified"],
            "decided_at": pd.to_datetime(
                ["2026-01-01", "2026-01-02", "2026-01-01", "2026-01-01", "2026-01-03"], utc=True
            ),
            "decision_id": ["d1", "d2", "d3", "d4", "d5"],
        }
    )
    in_force = latest_labels(labels)
    assert sorted(zip(in_force["face_id"], in_force["identity"], in_force["verdict"])) == [
        ("f1", "x/a", "rejected"),
        ("f2", "x/b", "verified"),
        ("f3", "x/a", "verified"),
        ("f3", "x/b", "verified"),
    ]
    # f1's verification was overturned; f3 was verified as two identities: the later one wins
    assert verified_faces(labels) == {"f2": "x/b", "f3": "x/b"}
    assert verified_faces(labels.iloc[:0]) == {} and latest_labels(labels.iloc[:0]).empty
