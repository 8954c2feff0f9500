"""The rule that pre-labels a crop: the reference rows it is matched against, the album means taken
away from both sides, the stage's thresholds; and the fingerprint of all that (`reference_set_id`),
which says when published faces must be matched again."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.config import IdentitySettings, settings_hash
from pipeline.identity.embedding import candidate_rows, views_id
from pipeline.identity.matching import nearest_identities, nearest_identities_by_album, subtract_mean


@dataclasses.dataclass(frozen=True)
class MatchRule:
    """The references' rows (one per reference, or per view of one) with their identities and albums,
    and the album means taken away from both sides (None: none)."""

    matrix: np.ndarray
    identities: np.ndarray
    albums: np.ndarray
    means: dict[str, np.ndarray] | None
    mean_faces: dict[str, int]  # album -> faces its mean was taken over
    settings: IdentitySettings
    data_root: str | Path

    def prelabel(self, shas: list, plain: np.ndarray, albums: list) -> pd.DataFrame:
        """`prelabel_crops` of these crops (embeddings `plain`, albums `albums`) under the stage's settings."""
        s = self.settings
        return prelabel_crops(
            shas,
            plain,
            s.embedder,
            self.data_root,
            s.candidate_views,
            self.matrix,
            self.identities,
            s.prelabel_threshold,
            s.prelabel_min_margin,
            [self.means.get(a) for a in albums] if self.means is not None else None,
            albums=albums if s.within_album else None,
            ref_albums=self.albums,
        )


def reference_set_id(
    model_id: str, settings: IdentitySettings, references: pd.DataFrame, means: dict[str, np.ndarray] | None
) -> str:
    """Fingerprint of what pre-labels depend on besides the crop: the embedder (model id and view set),
    every setting of the stage (`settings`, its thresholds resolved), the (face, identity) reference
    pairs (with `within_album`, (face, identity, album): the album decides who is matched against it),
    and the album means subtracted (None: none). Published faces are matched again when it changes."""
    columns = ["face_id", "identity", "album_id"] if settings.within_album else ["face_id", "identity"]
    pairs = sorted(zip(*(references[c] for c in columns))) if len(references) else []
    # A new mean (an album that doubled) changes pre-labels: rounded, so float noise does not.
    mean_hashes = (
        None
        if means is None
        else {
            a: hashlib.sha256(np.round(m.astype(np.float64), 4).tobytes()).hexdigest()[:12]
            for a, m in sorted(means.items())
        }
    )
    blob = json.dumps([model_id, views_id(), settings_hash(settings), pairs, mean_hashes]).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def prelabel_crops(
    crop_shas: list[str],
    plain: np.ndarray,
    setting: str,
    data_root: str | Path,
    views: bool,
    ref_matrix: np.ndarray,
    ref_identities,
    threshold: float,
    min_margin: float,
    means: list | None = None,
    chunk: int = 8192,
    albums: list | None = None,
    ref_albums=None,
) -> pd.DataFrame:
    """`nearest_identities` for these crops (their `candidate_rows`), `chunk` crops at a time, so that
    matching every published crop again holds only one chunk's views in memory. `means`: per crop, its
    album's mean to subtract before matching (`subtract_mean`; None: none), as `ref_matrix` had its own.
    `albums` (per crop) and `ref_albums` (per row of `ref_matrix`): a crop is matched only against its
    own album's references (`within_album`); None: against all of them."""

    def rows(i: int) -> np.ndarray:
        got = candidate_rows(crop_shas[i : i + chunk], plain[i : i + chunk], setting, data_root, views)
        return got if means is None else subtract_mean(got, means[i : i + chunk])

    def match(i: int) -> pd.DataFrame:
        if albums is None:
            return nearest_identities(rows(i), ref_matrix, ref_identities, threshold, min_margin)
        return nearest_identities_by_album(
            rows(i), ref_matrix, ref_identities, threshold, min_margin, albums[i : i + chunk], ref_albums
        )

    frames = [match(i) for i in range(0, len(plain), chunk)]
    return (
        pd.concat(frames, ignore_index=True)
        if frames
        else nearest_identities(plain, ref_matrix, ref_identities, threshold, min_margin)
    )
