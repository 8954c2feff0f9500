"""The face funnel for one image: decode -> detect -> crop at the enlarged rate -> quality gate.

Results are cached per image under (sha256 of its bytes, funnel settings, detector model), so
identical bytes are never processed twice, whichever album, episode or run they come from.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path

import cv2

from models.crop import cut, enlarged_box
from pipeline.config import FunnelSettings, settings_hash
from pipeline.decode import EXTENSIONS, Decoded, decode_image
from pipeline.detect import Detector
from pipeline.quality import gate, sharpness
from pipeline.sources.library import file_problem, safe_name
from pipeline.store import Codec, ContentStore, FileCache, sha256_bytes


@dataclasses.dataclass(kw_only=True)
class ImageAnalysis:
    """What the funnel found in one image: its faces, or why it was dropped."""

    asset_id: str
    size_bytes: int
    format: str | None = None
    width: int = 0
    height: int = 0
    drop_reason: str | None = None
    detail: str = ""
    faces: list[dict] = dataclasses.field(default_factory=list)  # faces-table rows, without album_id and run_id

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, text: str) -> ImageAnalysis:
        return cls(**json.loads(text))


ANALYSIS = Codec(".json", lambda analysis: analysis.to_json().encode(), ImageAnalysis.from_json)


def funnel_cache(data_root: str | Path, settings: FunnelSettings, detector: Detector) -> FileCache:
    """Each image's analysis by the sha256 of its bytes, under the funnel settings and the detector model."""
    return FileCache(Path(data_root) / "cache" / "faces" / funnel_key(settings, detector), ANALYSIS)


def read_still(path: str | Path, source: str, max_bytes: int) -> bytes | ImageAnalysis:
    """A library still's bytes, or the dropped analysis of one that cannot be read (`unreadable`,
    `not_a_file`) or is over `max_bytes` (`file_too_large`). Type and size come from stat first: a
    FIFO is never opened, and a 1 GiB still costs no memory. A dropped one has no bytes to hash, so
    its asset_id is the hash of its `source` name."""
    size, problem = 0, file_problem(path)
    try:
        if problem is None:
            size = os.stat(path).st_size
            if size > max_bytes:
                problem = "file_too_large", f"{size} bytes > {max_bytes}"
            else:
                with open(path, "rb") as f:
                    return f.read(size + 1)  # a file grown since stat still cannot make this read more
    except OSError as exc:  # gone or unreadable since the listing
        problem = "unreadable", safe_name(str(exc))
    return ImageAnalysis(
        asset_id=sha256_bytes(source.encode()), size_bytes=size, drop_reason=problem[0], detail=problem[1]
    )


def funnel_key(settings: FunnelSettings, detector: Detector) -> str:
    return f"{settings_hash(settings)}-{hashlib.sha256(detector.model_id.encode()).hexdigest()[:8]}"


# Decoded pixels one detector call may hold (~300 MB as BGR): a batch of huge web images is split
# instead of holding detect_batch_size full-resolution images at once.
MAX_BATCH_PIXELS = 100_000_000


def analyse_images(
    datas: list[bytes],
    settings: FunnelSettings,
    detector: Detector,
    store: ContentStore,
    cache: FileCache,
    max_batch_pixels: int = MAX_BATCH_PIXELS,
) -> list[tuple[ImageAnalysis, bool]]:
    """Run the funnel on several images' bytes: batched detector calls for those not cached (one call
    unless their decoded pixels exceed ``max_batch_pixels``). Returns (analysis, was_cached) per image,
    in order. Never raises on bad input: a bad image gets a drop reason. Callers pass at most
    `detect_batch_size` images."""
    shas = [sha256_bytes(data) for data in datas]
    results: list[tuple[ImageAnalysis, bool] | None] = []
    pending: list = []  # (position, sha, decoded) of readable images not in the cache, awaiting detection
    first_seen: dict[str, int] = {}  # the same bytes twice in one batch: analysed once, then a cache hit

    def detect_pending() -> None:
        found = detector.detect_many([decoded.image for _, _, decoded in pending])
        for (position, sha, decoded), detections in zip(pending, found):
            faces = _faces(sha, decoded, detections, settings, detector, store)
            results[position] = (_analysis(sha, datas[position], decoded, faces), False)
        pending.clear()

    for position, (data, sha) in enumerate(zip(datas, shas)):
        hit = cache.get(sha)
        if hit is not None or sha in first_seen:
            results.append((hit, True))
            continue
        first_seen[sha] = position
        decoded = decode_image(data, settings.max_image_pixels, settings.max_image_bytes)
        if not decoded.ok:
            results.append((_analysis(sha, data, decoded, []), False))
            continue
        store.put(data, EXTENSIONS[decoded.fmt])
        results.append(None)
        held = sum(d.width * d.height for _, _, d in pending)
        if pending and held + decoded.width * decoded.height > max_batch_pixels:
            detect_pending()
        pending.append((position, sha, decoded))
    if pending:
        detect_pending()
    for position, (analysis, cached) in enumerate(results):
        if analysis is None:  # a repeat within this batch
            results[position] = (results[first_seen[shas[position]]][0], True)
        elif not cached:
            cache.put(analysis.asset_id, analysis)
    return results


def _analysis(sha: str, data: bytes, decoded: Decoded, faces: list[dict]) -> ImageAnalysis:
    """The analysis of a decoded image (or of one that could not be decoded, with its drop reason)."""
    return ImageAnalysis(
        asset_id=sha,
        size_bytes=len(data),
        format=decoded.fmt,
        width=decoded.width,
        height=decoded.height,
        drop_reason=decoded.drop_reason,
        detail=decoded.detail,
        faces=faces,
    )


def _faces(
    sha: str, decoded, detections, settings: FunnelSettings, detector: Detector, store: ContentStore
) -> list[dict]:
    """Face rows of one decoded image: crop each detection at the enlarged rate, gate it, store the crop."""
    image = decoded.image
    config_hash = settings_hash(settings)
    faces = []
    for index, det in enumerate(detections):
        box = enlarged_box((det.x1, det.y1, det.x2, det.y2), decoded.width, decoded.height, settings.enlarge_rate)
        crop = cut(image, box)
        score = sharpness(crop) if crop.size else 0.0
        reason = (
            "low_score"
            if det.score < settings.min_detector_score
            else gate(score, box.width, box.height, settings.min_sharpness, settings.min_crop_side)
        )
        crop_sha = None
        if crop.size:
            ok, jpeg = cv2.imencode(".jpg", crop, [cv2.IMWRITE_JPEG_QUALITY, settings.crop_jpeg_quality])
            crop_sha = store.put(jpeg.tobytes(), ".jpg") if ok else None
        face_id = hashlib.sha256(f"{sha}:{detector.model_id}:{config_hash}:{index}".encode()).hexdigest()[:32]
        faces.append(
            {
                "face_id": face_id,
                "asset_id": sha,
                "face_index": index,
                "x1": det.x1,
                "y1": det.y1,
                "x2": det.x2,
                "y2": det.y2,
                "det_score": det.score,
                "detector": detector.name,
                "model_id": detector.model_id,
                "enlarge_rate": settings.enlarge_rate,
                "crop_x1": box.x1,
                "crop_y1": box.y1,
                "crop_x2": box.x2,
                "crop_y2": box.y2,
                "crop_w": box.width,
                "crop_h": box.height,
                "clipped": box.clipped,
                "sharpness": score,
                "status": "dropped" if reason else "kept",
                "drop_reason": reason,
                "crop_sha": crop_sha,
                "config_hash": config_hash,
            }
        )
    return faces
