"""The pre-label rule on embeddings alone: nearest identity by similarity, within an album or across
all of them, with each album's mean taken away first. Pure numpy and pandas: no model, no files."""

from __future__ import annotations

import numpy as np
import pandas as pd

PRELABEL_COLUMNS = ("prelabel", "prelabel_score", "runner_up", "runner_up_score", "prelabel_margin")

# An album's mean is taken over its first 2^k faces in publication order (16 <= 2^k <= 1024): it stays
# the same from one run to the next until the album has twice as many faces, so published pre-labels
# are matched again (with the new mean) a few times in an album's life, not every night.
ALBUM_MEAN_MIN_FACES = 16
ALBUM_MEAN_MAX_FACES = 1024


def album_mean_faces(n: int) -> int:
    """How many of an album's first faces its mean is taken over: the largest power of two <= n, at
    most ALBUM_MEAN_MAX_FACES; 0 (no mean) under ALBUM_MEAN_MIN_FACES."""
    if n < ALBUM_MEAN_MIN_FACES:
        return 0
    return min(1 << (int(n).bit_length() - 1), ALBUM_MEAN_MAX_FACES)


def subtract_mean(rows: np.ndarray, means: list) -> np.ndarray:
    """`rows` (N, dim) or (N, V, dim) with each row's album mean (`means`: one (dim,) vector or None per
    row) subtracted and normalised again; rows whose mean is None stay as they are.

    Why: the faces of one show share its drawing style, and that common part lifts the similarity of
    any two of its characters. Taking it away leaves what tells them apart (model card: "Album mean")."""
    rows = np.asarray(rows, dtype=np.float32)
    if not len(rows):
        return rows
    has = np.array([m is not None for m in means], bool)
    centre = np.stack([np.zeros(rows.shape[-1], np.float32) if m is None else np.asarray(m, np.float32) for m in means])
    out = rows - (centre[:, None, :] if rows.ndim == 3 else centre)
    out /= np.maximum(np.linalg.norm(out, axis=-1, keepdims=True), 1e-12)
    out[~has] = rows[~has]
    return out


def reference_matrix(
    ref_faces: pd.DataFrame,
    vectors: dict[str, np.ndarray],
    views: dict[str, np.ndarray] | None = None,
    means: dict[str, np.ndarray] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The rows pre-labels are matched against, the identity of each and the album of its reference
    face: one row per reference face, or with `views` every view of each (a reference face whose views
    are missing keeps its one vector). `means`: album -> mean, subtracted from the rows of each
    reference face of that album (`album_id`)."""
    rows, names, albums = [], [], []
    for sha, identity, album in zip(ref_faces["crop_sha"], ref_faces["identity"], ref_faces["album_id"]):
        block = views[sha] if views is not None and sha in views else vectors[sha][None]
        if means and album in means:
            block = subtract_mean(block, [means[album]] * len(block))
        rows.append(block)
        names += [identity] * len(block)
        albums += [album] * len(block)
    if not rows:
        return np.zeros((0, 1), np.float32), np.zeros(0, object), np.zeros(0, object)
    return np.concatenate(rows).astype(np.float32), np.asarray(names, dtype=object), np.asarray(albums, dtype=object)


def nearest_identities(
    matrix: np.ndarray,
    ref_matrix: np.ndarray,
    ref_identities,
    threshold: float,
    min_margin: float = 0.0,
    chunk: int = 65536,
) -> pd.DataFrame:
    """Per row of `matrix` (normalised embeddings): the nearest identity (its most similar reference)
    as `prelabel` when the similarity is above `threshold` (the paper's rule) and at least
    `min_margin` above the runner-up identity's (0: the paper's rule alone), that similarity, the
    runner-up identity, its similarity and the margin. Columns PRELABEL_COLUMNS, one row per vector.

    `matrix` may also be (N, V, dim), each candidate's views (`candidate_views`): an identity's
    similarity is then the mean over the views of each view's best match among its references."""
    matrix = np.asarray(matrix)
    if matrix.ndim == 2:
        matrix = matrix[:, None, :]
    n = len(matrix)
    out = {
        "prelabel": np.full(n, None, object),
        "prelabel_score": np.full(n, np.nan),
        "runner_up": np.full(n, None, object),
        "runner_up_score": np.full(n, np.nan),
        "prelabel_margin": np.full(n, np.nan),
    }
    names = np.asarray(ref_identities, dtype=object)
    order = sorted(set(names))
    if n == 0 or not order:
        return prelabel_frame(out)
    masks = [names == name for name in order]
    step = max(1, chunk // matrix.shape[1])
    for start in range(0, n, step):  # bounded memory for a large published set
        sims = matrix[start : start + step] @ ref_matrix.T  # (rows, views, references)
        per_identity = np.stack([sims[:, :, m].max(axis=2).mean(axis=1) for m in masks], axis=1)
        top = np.argsort(-per_identity, axis=1, kind="stable")
        rows = np.arange(len(sims))
        best = per_identity[rows, top[:, 0]]
        second = per_identity[rows, top[:, 1]] if len(order) > 1 else np.full(len(sims), -np.inf)
        part = slice(start, start + len(sims))
        out["prelabel_score"][part] = best
        sure = (best > threshold) & (best - second >= min_margin)
        out["prelabel"][part] = [order[i] if ok else None for i, ok in zip(top[:, 0], sure)]
        if len(order) > 1:
            out["runner_up"][part] = [order[i] for i in top[:, 1]]
            out["runner_up_score"][part] = second
            out["prelabel_margin"][part] = best - second
    return prelabel_frame(out)


def nearest_identities_by_album(
    matrix: np.ndarray, ref_matrix: np.ndarray, ref_identities, threshold: float, min_margin: float, albums, ref_albums
) -> pd.DataFrame:
    """`nearest_identities` with each row matched only against the references of its own album
    (`albums`: per row of `matrix`; `ref_albums`: per row of `ref_matrix`). An album without references
    leaves its rows unlabelled; a row whose album is not known (None) is matched against all."""
    names, ref_albums = np.asarray(ref_identities, dtype=object), np.asarray(ref_albums, dtype=object)
    matrix = np.asarray(matrix)
    part = np.asarray([a if isinstance(a, str) else None for a in albums], dtype=object)
    if not len(part):
        return nearest_identities(matrix, ref_matrix, names, threshold, min_margin)
    pieces = []
    for album in dict.fromkeys(part):
        here = np.flatnonzero([a == album for a in part])
        theirs = ref_albums == album if album is not None else np.ones(len(ref_albums), bool)
        pieces.append(
            nearest_identities(matrix[here], ref_matrix[theirs], names[theirs], threshold, min_margin).set_index(here)
        )
    return pd.concat(pieces).sort_index()


def prelabel_frame(columns: dict) -> pd.DataFrame:
    """PRELABEL_COLUMNS as a frame, with None (not NaN) where a face has no pre-label or runner-up."""
    frame = pd.DataFrame(columns)
    for name in ("prelabel", "runner_up"):  # pandas turns None into NaN in object columns; keep None
        frame[name] = frame[name].astype(object).where(frame[name].notna(), None)
    return frame


def prelabels_changed(old: pd.DataFrame, new: pd.DataFrame) -> np.ndarray:
    """Rows whose pre-label differs (names, or a score by more than float noise)."""
    changed = np.zeros(len(new), bool)
    for column in ("prelabel", "runner_up"):
        changed |= old[column].fillna("").astype(str).to_numpy() != new[column].fillna("").astype(str).to_numpy()
    for column in ("prelabel_score", "runner_up_score"):
        a, b = old[column].astype(float).to_numpy(), new[column].astype(float).to_numpy()
        changed |= ~(np.isclose(a, b, atol=1e-5) | (np.isnan(a) & np.isnan(b)))
    return changed
