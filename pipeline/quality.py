"""The paper's quality gate: Laplacian sharpness and resolution.

Raw scores are always stored; the cut-offs are a policy applied to them, so a later policy can be
re-applied to published rows without recomputing anything.
"""

from __future__ import annotations

import cv2
import numpy as np

SHARPNESS_SIZE = 256


def sharpness(crop_bgr: np.ndarray) -> float:
    """Variance of the Laplacian of the crop resized to 256x256 and turned grey."""
    small = cv2.resize(crop_bgr, (SHARPNESS_SIZE, SHARPNESS_SIZE), interpolation=cv2.INTER_AREA)
    grey = cv2.cvtColor(small, cv2.COLOR_BGR2GRAY) if small.ndim == 3 else small
    return float(cv2.Laplacian(grey, cv2.CV_64F).var())


def gate(
    sharpness_score: float, crop_w: int, crop_h: int, min_sharpness: float = 30.0, min_side: int = 100
) -> str | None:
    """None when the crop is kept, else its drop reason.

    Resolution is judged on the crop's shorter side (the paper only says "resolution less than 100").
    """
    if min(crop_w, crop_h) < min_side:
        return "low_resolution"
    if sharpness_score < min_sharpness:
        return "blurry"
    return None
