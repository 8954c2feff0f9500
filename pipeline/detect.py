"""Face detectors behind one small interface.

A detector takes a BGR uint8 image and returns face boxes in that image's pixel coordinates.
`model_id` names the exact model (and weights) and goes into every manifest row it produced.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Protocol

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
    # "bf16" or "fp32" for a network (models/precision.py decides per machine); None otherwise.
    # Not part of model_id: bf16 and fp32 find the same faces, scores within 0.006 (model card).
    precision: str | None

    def detect(self, image_bgr: np.ndarray) -> list[Detection]: ...

    def detect_many(self, images_bgr: list[np.ndarray], score_threshold: float | None = None) -> list[list[Detection]]:
        """``score_threshold`` None: the detector's own operating threshold."""


class AnimeFaceDetector:
    """The classical nvxs anime-face detector of the `animeface` package (ships its own model)."""

    name = "animeface"
    precision = None

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
            found.append(
                Detection(float(p.x), float(p.y), float(p.x + p.width), float(p.y + p.height), float(face.likelihood))
            )
        return found

    def detect_many(self, images_bgr: list[np.ndarray], score_threshold: float | None = None) -> list[list[Detection]]:
        return [
            [d for d in self.detect(img) if score_threshold is None or d.score >= score_threshold] for img in images_bgr
        ]


DEFAULT_DETECTOR_WEIGHTS = Path(__file__).resolve().parent.parent / "models" / "weights" / "detector.safetensors"


def default_detector_weights() -> Path:
    if not DEFAULT_DETECTOR_WEIGHTS.exists():
        raise FileNotFoundError(
            f"no shipped detector weights at {DEFAULT_DETECTOR_WEIGHTS}; train them with "
            "`toonface train-detector` or use --set detector=animeface"
        )
    return DEFAULT_DETECTOR_WEIGHTS


class RetinaNetDetector:
    """Our RetinaNet (models/detector.py) at its operating threshold and its stored input size, or
    ``size`` (the letterbox side; 0: the stored one)."""

    name = "retinanet"
    MAX_BATCH = 64

    def __init__(self, weights: str | Path | None = None, size: int = 0) -> None:
        import torch

        from models.detector import load_detector

        path = Path(weights) if weights else default_detector_weights()
        if not path.exists():
            raise FileNotFoundError(f"detector weights not found: {path}")
        self._model = load_detector(path, "cuda" if torch.cuda.is_available() else "cpu", size=size or None)
        self.model_id, self.size, self.precision = self._model.model_id, self._model.size, self._model.precision

    def detect(self, image_bgr: np.ndarray) -> list[Detection]:
        return self.detect_many([image_bgr])[0]

    def detect_many(self, images_bgr: list[np.ndarray], score_threshold: float | None = None) -> list[list[Detection]]:
        """Batched forwards of up to MAX_BATCH images; threshold default: the one stored with the weights."""
        found = self._model.detect_many(images_bgr, batch_size=self.MAX_BATCH, score_threshold=score_threshold)
        return [[Detection(*map(float, row)) for row in rows] for rows in found]


def _animeface(weights: str | None = None, size: int = 0) -> AnimeFaceDetector:
    if size:
        raise ValueError("animeface has no input size to set (detector_size applies to retinanet)")
    return AnimeFaceDetector()  # ships its own model: no weights to choose


# Name -> factory(weights, size).
DETECTORS: dict[str, Callable[..., Detector]] = {"retinanet": RetinaNetDetector, "animeface": _animeface}
_loaded: dict[tuple[str, str, int], Detector] = {}


def get_detector(name: str, weights: str | None = None, size: int = 0) -> Detector:
    """One instance per process and (name, weights, size): models are loaded once, not once per shard.
    ``weights`` None or "default" means the shipped weights; ``size`` 0 the weights' own input size."""
    if name not in DETECTORS:
        raise ValueError(f"unknown detector {name!r}; available: {', '.join(sorted(DETECTORS))}")
    weights = None if weights in (None, "", "default") else str(weights)
    key = (name, weights or "", int(size or 0))
    if key not in _loaded:
        _loaded[key] = DETECTORS[name](weights, int(size or 0))
    return _loaded[key]
