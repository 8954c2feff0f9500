"""Is a near-duplicate candidate a copy of the same picture, or another drawing of the same character?

An identity embedding says "same character": two different frames or fan drawings of one character
are as close in it as a re-encoded copy. Removing them would throw away exactly the variety a dataset
needs, so the embedding only proposes pairs and this check decides. A copy (re-encoded, resized,
cropped by a few percent, brightened, mirrored) keeps the picture's geometry: many ORB keypoints of one
crop match keypoints of the other, and a single similarity transform (shift, scale, small rotation)
carries one set onto the other. Two drawings of a character share colours and shapes, but not where
every corner of every line falls, so few matches agree on one transform.

A transform alone is not proof: one artist draws a character's face the same way in many pictures, so
dozens of keypoints of two drawings can agree. The pictures are therefore aligned by the transform and
compared pixel by pixel: a copy correlates almost perfectly where the two overlap, another drawing does
not (its hair, clothes and background differ).

Each crop is described once (`describe`): its grey image scaled to a fixed side with its ORB keypoints,
and the same mirrored.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import cv2
import numpy as np

from pipeline.store import ContentStore

SIDE = 256  # the longer side every crop is scaled to before keypoints are found: scale-free counts
FEATURES = 500
RATIO = 0.8  # Lowe's ratio test: a match must be clearly better than the second-best
REPROJECTION_PX = 4.0  # at SIDE: how far a keypoint may land from where the transform puts it
# A copy: at least this many keypoints agree on one transform, and once aligned by it the two grey images
# correlate at least this much where they overlap. Chosen on the hololive and moeimouto crops
# (benchmarks/dedup_quality.py; models/weights/EMBEDDER.md, "Near-duplicates").
MIN_KEYPOINTS = 12
MIN_CORRELATION = 0.8
MIN_OVERLAP = 0.3  # of the second picture's area, for the correlation to count


@dataclasses.dataclass(frozen=True)
class View:
    """A crop's grey image at SIDE and its ORB keypoints."""

    grey: np.ndarray
    points: np.ndarray  # (N, 2) float32
    descriptors: np.ndarray | None  # (N, 32) uint8; None when no keypoint was found


@dataclasses.dataclass(frozen=True)
class Description:
    """A crop as it is and mirrored left-right (ORB descriptors are not mirror-symmetric)."""

    plain: View
    mirrored: View


def _view(grey: np.ndarray) -> View:
    # fastThreshold 10 (OpenCV's default is 20): flat cartoon shading has few strong corners.
    found, descriptors = cv2.ORB_create(nfeatures=FEATURES, fastThreshold=10).detectAndCompute(grey, None)
    return View(grey, np.float32([k.pt for k in found]).reshape(-1, 2), descriptors)


def describe(image: np.ndarray) -> Description:
    """A decoded crop (BGR or grey) described at SIDE pixels on its longer side."""
    grey = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY) if image.ndim == 3 else image
    scale = SIDE / max(grey.shape[:2])
    size = (max(1, round(grey.shape[1] * scale)), max(1, round(grey.shape[0] * scale)))
    grey = cv2.resize(grey, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC)
    return Description(_view(grey), _view(np.ascontiguousarray(grey[:, ::-1])))


def _transform(a: View, b: View) -> tuple[np.ndarray | None, int]:
    """The similarity transform most ratio-test matches from a to b agree on (RANSAC), and how many do."""
    if a.descriptors is None or b.descriptors is None or len(a.points) < 2 or len(b.points) < 2:
        return None, 0
    pairs = cv2.BFMatcher(cv2.NORM_HAMMING).knnMatch(a.descriptors, b.descriptors, k=2)
    good = [p[0] for p in pairs if len(p) == 2 and p[0].distance < RATIO * p[1].distance]
    if len(good) < 3:
        return None, 0
    matrix, inliers = cv2.estimateAffinePartial2D(
        a.points[[m.queryIdx for m in good]],
        b.points[[m.trainIdx for m in good]],
        method=cv2.RANSAC,
        ransacReprojThreshold=REPROJECTION_PX,
        maxIters=2000,
        confidence=0.99,
    )
    return matrix, int(inliers.sum()) if inliers is not None else 0


def _aligned_correlation(a: View, b: View, matrix: np.ndarray) -> float:
    """Correlation of b with a moved onto it, over their overlap (blurred: JPEG and resizing differ in fine
    detail, not in where lines and colours are). Brightness and contrast do not change it."""
    h, w = b.grey.shape
    moved = cv2.warpAffine(cv2.GaussianBlur(a.grey, (0, 0), 1.5), matrix, (w, h))
    inside = cv2.warpAffine(np.ones_like(a.grey), matrix, (w, h), flags=cv2.INTER_NEAREST) > 0
    if inside.mean() < MIN_OVERLAP:
        return 0.0
    x = moved[inside].astype(np.float32)
    y = cv2.GaussianBlur(b.grey, (0, 0), 1.5)[inside].astype(np.float32)
    x -= x.mean()
    y -= y.mean()
    return float((x * y).sum() / np.sqrt((x * x).sum() * (y * y).sum() + 1e-6))


def agreement(a: Description, b: Description) -> tuple[int, float]:
    """(keypoints one transform carries from a onto b, correlation once aligned by it), a as it is or
    mirrored, whichever agrees with more keypoints."""
    best = (0, 0.0)
    for view in (a.plain, a.mirrored):
        matrix, keypoints = _transform(view, b.plain)
        if matrix is not None and keypoints > best[0]:
            best = (keypoints, _aligned_correlation(view, b.plain, matrix))
    return best


def same_picture(a: Description, b: Description) -> bool:
    """True when b is a copy of a (re-encoded, resized, cropped, brightened, mirrored), or a of b."""
    keypoints, correlation = agreement(a, b)
    return keypoints >= MIN_KEYPOINTS and correlation >= MIN_CORRELATION


class CropPictures:
    """The crops of a dataset's content store, each described once per run (a crop not in the store,
    or not readable, is no copy of anything: keeping it loses nothing)."""

    def __init__(self, data_root: str | Path):
        self.store = ContentStore(Path(data_root) / "store")
        self._described: dict[str, Description | None] = {}

    def description(self, sha) -> Description | None:
        if not isinstance(sha, str):
            return None
        if sha not in self._described:
            image = cv2.imread(str(self.store.path_for(sha, ".jpg")), cv2.IMREAD_COLOR)
            self._described[sha] = describe(image) if image is not None else None
        return self._described[sha]

    def same(self, sha_a, sha_b) -> bool:
        """Whether the two crops are one picture (`same_picture`)."""
        a, b = self.description(sha_a), self.description(sha_b)
        return a is not None and b is not None and same_picture(a, b)
