"""Crop a face at the paper's enlarged rate.

Geometry: the crop keeps the face box's centre and scales its width and height by (1 + r).
With r = 1.0 the face spans 50% of the crop's width and height ("the full head").

Borders: the enlarged window is clipped to the image; no pixels are invented (padding would add
flat borders that distort the sharpness score and teach a recogniser false edges). The crop box
actually cut is stored, with `clipped` set, so users can filter or re-crop later; the quality
gate's resolution rule applies to what was actually cut.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np


@dataclasses.dataclass(frozen=True)
class CropBox:
    x1: int
    y1: int
    x2: int
    y2: int
    clipped: bool

    @property
    def width(self) -> int:
        return self.x2 - self.x1

    @property
    def height(self) -> int:
        return self.y2 - self.y1


def enlarged_box(
    face: tuple[float, float, float, float], image_w: int, image_h: int, enlarge_rate: float = 1.0
) -> CropBox:
    """Integer pixel window [x1, x2) x [y1, y2) of the enlarged face box, clipped to the image."""
    x1, y1, x2, y2 = face
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    half_w = (x2 - x1) * (1 + enlarge_rate) / 2
    half_h = (y2 - y1) * (1 + enlarge_rate) / 2
    ex1, ey1 = math.floor(cx - half_w), math.floor(cy - half_h)
    ex2, ey2 = math.ceil(cx + half_w), math.ceil(cy + half_h)
    cx1, cy1 = max(0, ex1), max(0, ey1)
    cx2, cy2 = min(image_w, ex2), min(image_h, ey2)
    clipped = (cx1, cy1, cx2, cy2) != (ex1, ey1, ex2, ey2)
    return CropBox(cx1, cy1, max(cx1, cx2), max(cy1, cy2), clipped)


def cut(image: np.ndarray, box: CropBox) -> np.ndarray:
    return image[box.y1 : box.y2, box.x1 : box.x2]
