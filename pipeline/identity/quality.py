"""How good the pre-labels are: measured against the verification labels in force (and at stricter
settings, to suggest one), and the similarity histograms written into a run's calibration."""

from __future__ import annotations

import dataclasses
from collections.abc import Collection

import numpy as np
import pandas as pd

from pipeline.identity.labels import latest_labels, verified_faces

TARGET_PRECISION = 0.95  # the precision a suggested setting must reach on the judged faces
MIN_JUDGED = 30  # fewer judged faces say too little to suggest a setting
STRICTER_THRESHOLDS = (0.7, 0.8, 0.9)
STRICTER_MARGINS = (0.05, 0.1, 0.15, 0.2)

HIST_BINS = np.round(np.linspace(0.0, 1.0, 21), 2)


def histogram(values) -> dict:
    """Counts of the values (NaN left out) in 20 bins over [0, 1], for a run's calibration."""
    values = np.asarray([v for v in values if v == v], dtype=np.float64)
    counts, _ = np.histogram(values, bins=HIST_BINS)
    return {"bins": HIST_BINS.tolist(), "counts": counts.tolist(), "n": int(len(values))}


@dataclasses.dataclass(frozen=True)
class _Verdicts:
    """The pre-labels in force beside what people said about them, one entry per face."""

    ids: np.ndarray  # face ids
    names: np.ndarray  # pre-labelled identity (None or NaN: unlabelled)
    named: np.ndarray  # whether the face has a pre-label
    scores: np.ndarray  # pre-label score (-1 where none)
    margins: np.ndarray  # margin over the runner-up (inf where none: it passes every margin)
    known: np.ndarray  # the identity the face is verified as, else None
    rejected: np.ndarray  # whether people rejected the face's pre-label
    verified: int  # faces verified as some identity

    @classmethod
    def of(cls, current: pd.DataFrame, truth: dict[str, str], rejected: set) -> _Verdicts:
        faces = current.drop_duplicates("face_id")
        ids, names = faces["face_id"].to_numpy(), faces["prelabel"].to_numpy()
        margins = (
            faces["prelabel_margin"].astype(float).fillna(np.inf).to_numpy()
            if "prelabel_margin" in faces
            else np.full(len(faces), np.inf)
        )
        named = np.array([isinstance(n, str) for n in names], dtype=bool)
        return cls(
            ids,
            names,
            named,
            faces["prelabel_score"].astype(float).fillna(-1.0).to_numpy(),
            margins,
            np.array([truth.get(f) for f in ids], dtype=object),
            np.array([(f, n) in rejected for f, n in zip(ids, names)]),
            len(truth),
        )

    def judge(self, t: float, m: float, only: np.ndarray | None = None) -> dict:
        """Pre-labels above threshold `t` with margin >= `m` (of the faces in `only`): right, judged
        (right or known wrong), precision and recall."""
        labelled = self.named & (self.scores > t) & (self.margins >= m - 1e-9)
        if only is not None:
            labelled &= only
        verified = self.verified if only is None else int((only & (self.known != None)).sum())  # noqa: E711
        right = labelled & (self.known == self.names)
        wrong = labelled & ~right & ((self.known != None) | self.rejected)  # noqa: E711 (element-wise)
        judged = int(right.sum() + wrong.sum())
        return {
            "threshold": round(t, 4),
            "min_margin": round(m, 4),
            "judged": judged,
            "right": int(right.sum()),
            "precision": round(right.sum() / judged, 4) if judged else None,
            "recall": round(right.sum() / verified, 4) if verified else None,
        }

    def albums(self) -> np.ndarray:
        """The album of each face's pre-label (None where unlabelled)."""
        return np.array([n.split("/", 1)[0] if isinstance(n, str) else None for n in self.names], dtype=object)


def prelabel_quality(
    current: pd.DataFrame,
    labels: pd.DataFrame,
    threshold: float,
    min_margin: float = 0.0,
    random_sample: Collection[str] = (),
) -> dict:
    """The pre-labels in force (`current`: face_id, prelabel, prelabel_score, prelabel_margin) against
    the verification labels in force: precision = right / (right + wrong) over pre-labelled faces with
    a verdict about them, recall = right / faces verified as some identity.

    Also at stricter settings, to choose one: `sweep` crosses the threshold in force, 0.7, 0.8 and 0.9
    with the minimum margin in force, 0.05, 0.1, 0.15 and 0.2 (only stricter ones: a face the setting
    in force left unlabelled has no label to judge), first row the setting in force. `by_album` is the
    setting in force per album (the pre-label's), and `suggested` the setting of the sweep that labels
    the most faces right at precision >= TARGET_PRECISION over at least MIN_JUDGED judged faces of
    `random_sample` (None if none does); it is advice, applied only by `--set prelabel_threshold=...
    prelabel_min_margin=...`. `random_sample` is the judged prefix of the random queue's shuffle
    (`pipeline.annotate.merge.random_order_faces`): judged in score order, the surest pre-labels come
    first and a sample of them over-states the precision of the rest. `sample` is the in-force row
    over that sample alone.

    The labelling page shows pre-labelled faces, so the verified faces are mostly pre-labelled ones:
    recall here is measured on them and reads high; precision is the figure to trust."""
    in_force = latest_labels(labels)
    truth = verified_faces(labels)
    rejected = (
        set(
            zip(
                in_force.loc[in_force["verdict"] == "rejected", "face_id"],
                in_force.loc[in_force["verdict"] == "rejected", "identity"],
            )
        )
        if len(in_force)
        else set()
    )
    out = {"verified_faces": len(truth), "sweep": [], "by_album": {}, "sample": None, "suggested": None}
    if current.empty or not (truth or rejected):
        return out
    verdicts = _Verdicts.of(current, truth, rejected)
    thresholds = [threshold] + [x for x in STRICTER_THRESHOLDS if x > threshold + 1e-9]
    margins = [min_margin] + [x for x in STRICTER_MARGINS if x > min_margin + 1e-9]
    out["sweep"] = [verdicts.judge(t, m) for t in thresholds for m in margins]
    out.update({k: out["sweep"][0][k] for k in ("judged", "precision", "recall")})
    albums = verdicts.albums()
    for album in sorted({a for a in albums if a is not None}):
        row = verdicts.judge(threshold, min_margin, albums == album)
        if row["judged"]:
            out["by_album"][album] = {k: row[k] for k in ("judged", "right", "precision")}
    sampled = np.isin(verdicts.ids, list(random_sample))
    sample_sweep = [verdicts.judge(t, m, sampled) for t in thresholds for m in margins]
    out["sample"] = sample_sweep[0]  # the setting in force, as the sweep's first row
    out["suggested"] = _suggested(sample_sweep)
    return out


def _suggested(sample_sweep: list[dict]) -> dict | None:
    """The sweep row over the random sample that labels the most faces right at TARGET_PRECISION over
    at least MIN_JUDGED judged faces (ties: the loosest), else None."""
    good = [r for r in sample_sweep if r["judged"] >= MIN_JUDGED and r["precision"] >= TARGET_PRECISION]
    if not good:
        return None
    best = max(good, key=lambda r: (r["right"], -r["threshold"], -r["min_margin"]))
    return {k: best[k] for k in ("threshold", "min_margin", "precision", "judged", "right")}
