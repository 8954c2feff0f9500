"""The verification labels in force, read from the `labels` table (rows of `annotate merge`): what
the pre-labels are measured against and which faces join the references."""

from __future__ import annotations

import pandas as pd


def latest_labels(labels: pd.DataFrame) -> pd.DataFrame:
    """The label in force per (face, identity): the latest row by decision time."""
    if labels.empty:
        return labels
    return (
        labels.sort_values(["decided_at", "decision_id"])
        .drop_duplicates(["face_id", "identity"], keep="last")
        .reset_index(drop=True)
    )


def verified_faces(labels: pd.DataFrame) -> dict[str, str]:
    """face_id -> identity for faces whose label in force is `verified` (the latest one wins
    when a face was verified as two identities)."""
    current = latest_labels(labels)
    if current.empty:
        return {}
    current = current[current["verdict"] == "verified"].sort_values(["decided_at", "decision_id"])
    return dict(zip(current["face_id"], current["identity"]))
