"""Face detectors behind one small interface.

A detector takes a BGR uint8 image and returns face boxes in that image's pixel coordinates.
`model_id` names the exact model (and weights) and goes into every manifest row it produced.
"""
from __future__ import annotations

import dataclasses
from importlib import metadata
from typing import Callable, Protocol

import cv2
import numpy as np


@dataclasses.dataclass(frozen=True)
class Detection:
    x1: float
    y1: float
    x2: float
    y2: float
    score: float


class Detector(Protocol):
    name: str
    model_id: str

    def detect(self, image_bgr: np.ndarray) -> list[Detection]: ...


class AnimeFaceDetector:
    """The classical nvxs anime-face detector of the `animeface` package (ships its own model)."""

    name = "animeface"

    def __init__(self) -> None:
        import animeface
        import PIL

        # animeface hands PIL's getdata() to its C code; Pillow >= 12 changed that object and the
        # detector then silently finds nothing. Refuse loudly instead.
        if int(PIL.__version__.split(".")[0]) >= 12:
            raise RuntimeError(f"animeface needs Pillow < 12 (found {PIL.__version__}); install pillow==11.3.0")
        self._animeface = animeface
        self.model_id = f"animeface-{metadata.version('animeface')}"

    def detect(self, image_bgr: np.ndarray) -> list[Detection]:
        from PIL import Image

        rgb = Image.fromarray(cv2.cvtColor(image_bgr, cv2.COLOR_BGR2RGB))
        found = []
        for face in self._animeface.detect(rgb):
            p = face.face.pos
            found.append(Detection(float(p.x), float(p.y), float(p.x + p.width), float(p.y + p.height),
                                   float(face.likelihood)))
        return found


# Name -> factory. Later detectors (RetinaNet) register here.
DETECTORS: dict[str, Callable[[], Detector]] = {"animeface": AnimeFaceDetector}
_loaded: dict[str, Detector] = {}


def get_detector(name: str) -> Detector:
    """One instance per process: models are loaded once, not once per shard."""
    if name not in DETECTORS:
        raise ValueError(f"unknown detector {name!r}; available: {', '.join(sorted(DETECTORS))}")
    if name not in _loaded:
        _loaded[name] = DETECTORS[name]()
    return _loaded[name]
