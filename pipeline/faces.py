"""The face funnel for one image: decode -> detect -> crop at the enlarged rate -> quality gate.

Results are cached per image under (sha256 of its bytes, funnel settings, detector model), so
identical bytes are never processed twice, whichever album, episode or run they come from.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import cv2

from pipeline.config import IngestConfig
from pipeline.crop import cut, enlarged_box
from pipeline.decode import EXTENSIONS, decode_image
from pipeline.detect import Detector
from pipeline.quality import gate, sharpness
from pipeline.store import ContentStore, atomic_write, sha256_bytes


@dataclasses.dataclass
class ImageAnalysis:
    asset_id: str
    size_bytes: int
    format: str | None
    width: int
    height: int
    drop_reason: str | None
    detail: str
    faces: list[dict]  # rows of the faces table, without album_id and run_id

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, text: str) -> "ImageAnalysis":
        return cls(**json.loads(text))


class FunnelCache:
    """One small JSON file per analysed image, under a key of settings + model."""

    def __init__(self, data_root: str | Path, key: str):
        self.dir = Path(data_root) / "cache" / "faces" / key

    def _path(self, sha: str) -> Path:
        return self.dir / sha[:2] / f"{sha}.json"

    def get(self, sha: str) -> ImageAnalysis | None:
        path = self._path(sha)
        try:
            return ImageAnalysis.from_json(path.read_text())
        except (FileNotFoundError, ValueError, TypeError):
            return None  # absent, or left half-written by an old crash: recompute

    def put(self, analysis: ImageAnalysis) -> None:
        atomic_write(self._path(analysis.asset_id), analysis.to_json().encode())


def funnel_key(config: IngestConfig, detector: Detector) -> str:
    return f"{config.hash(IngestConfig.FACE_FIELDS)}-{hashlib.sha256(detector.model_id.encode()).hexdigest()[:8]}"


def analyse_image(data: bytes, config: IngestConfig, detector: Detector, store: ContentStore,
                  sha: str | None = None) -> ImageAnalysis:
    """Run the funnel on one image's bytes. Never raises on bad input: it returns a drop reason."""
    sha = sha or sha256_bytes(data)
    decoded = decode_image(data, config.max_image_pixels, config.max_image_bytes)
    if not decoded.ok:
        return ImageAnalysis(sha, len(data), decoded.fmt, decoded.width, decoded.height,
                             decoded.drop_reason, decoded.detail, [])
    store.put(data, EXTENSIONS[decoded.fmt])
    image = decoded.image
    config_hash = config.hash(IngestConfig.FACE_FIELDS)
    faces = []
    for index, det in enumerate(detector.detect(image)):
        box = enlarged_box((det.x1, det.y1, det.x2, det.y2), decoded.width, decoded.height, config.enlarge_rate)
        crop = cut(image, box)
        score = sharpness(crop) if crop.size else 0.0
        reason = "low_score" if det.score < config.min_detector_score else gate(
            score, box.width, box.height, config.min_sharpness, config.min_crop_side)
        crop_sha = None
        if crop.size:
            ok, jpeg = cv2.imencode(".jpg", crop, [cv2.IMWRITE_JPEG_QUALITY, config.crop_jpeg_quality])
            crop_sha = store.put(jpeg.tobytes(), ".jpg") if ok else None
        face_id = hashlib.sha256(f"{sha}:{detector.model_id}:{config_hash}:{index}".encode()).hexdigest()[:32]
        faces.append({
            "face_id": face_id, "asset_id": sha, "face_index": index,
            "x1": det.x1, "y1": det.y1, "x2": det.x2, "y2": det.y2, "det_score": det.score,
            "detector": detector.name, "model_id": detector.model_id, "enlarge_rate": config.enlarge_rate,
            "crop_x1": box.x1, "crop_y1": box.y1, "crop_x2": box.x2, "crop_y2": box.y2,
            "crop_w": box.width, "crop_h": box.height, "clipped": box.clipped, "sharpness": score,
            "status": "dropped" if reason else "kept", "drop_reason": reason, "crop_sha": crop_sha,
            "config_hash": config_hash,
        })
    return ImageAnalysis(sha, len(data), decoded.fmt, decoded.width, decoded.height, None, "", faces)


def analyse_cached(data: bytes, config: IngestConfig, detector: Detector, store: ContentStore,
                   cache: FunnelCache) -> tuple[ImageAnalysis, bool]:
    """analyse_image through the cache; returns (analysis, was_cached)."""
    sha = sha256_bytes(data)
    hit = cache.get(sha)
    if hit is not None:
        return hit, True
    analysis = analyse_image(data, config, detector, store, sha)
    cache.put(analysis)
    return analysis, False
