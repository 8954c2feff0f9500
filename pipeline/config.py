"""Settings of one ingest run. Every default is the iCartoonFace paper's value, except where its comment
says why not (verified_references, reference_views, candidate_views, subtract_album_mean,
within_album).

The config hash goes into every manifest version and into every cache key, so changing a
setting that alters results (say the enlarged rate) never reuses results made under another.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json


@dataclasses.dataclass(frozen=True)
class IngestConfig:
    # Media library sampling (paper: 10 random episodes per album, one frame per second).
    episodes_per_album: int = 10
    sample_seed: int = 0
    frames_per_second: float = 1.0
    frame_jpeg_quality: int = 95
    # Decoding limits: larger inputs are dropped as decompression bombs, not decoded.
    max_image_pixels: int = 50_000_000
    max_image_bytes: int = 64 * 1024 * 1024
    # Face funnel. "retinanet" (our trained RetinaNet; detector_weights "default" is the shipped
    # models/weights/detector.safetensors, or a path) or "animeface" (the classical nvxs detector).
    # The weights' hash is part of the detector's model_id, which keys caches and goes into manifests.
    detector: str = "retinanet"
    detector_weights: str = "default"
    # RetinaNet letterbox side in pixels (a multiple of 32); 0: the size stored with the weights. Larger
    # finds smaller faces and costs time (see models/weights/DETECTOR.md). It is part of the detector's
    # model_id, so caches and manifests tell the sizes apart.
    detector_size: int = 0
    min_detector_score: float = 0.0
    # Images per batched detector call (memory: this many decoded images at once). 8 suits a CPU;
    # raise it (64) on a GPU. Results do not depend on it.
    detect_batch_size: int = 8
    enlarge_rate: float = 1.0
    # Quality gate (paper: Laplacian sharpness < 30 or resolution < 100 is dropped).
    min_sharpness: float = 30.0
    min_crop_side: int = 100
    crop_jpeg_quality: int = 95
    # Identity stage: embedder weights ("default": models/weights/embedder.safetensors; "none": skip),
    # near-duplicate and pre-label similarity thresholds. A threshold only means something for one
    # model: None takes the value calibrated for the embedder (its weights' metadata), else the
    # paper's 0.95 and 0.6.
    embedder: str = "default"
    dedup_threshold: float | None = None
    prelabel_threshold: float | None = None
    # A pre-label also needs its identity this much more similar than the runner-up's (0: the paper's
    # rule alone). Raising it trades recall for precision; see the embedder's model card.
    prelabel_min_margin: float = 0.0
    # Faces people verified as an identity join its references (beside the typical images), so each
    # night's pre-labels learn from the last day's verification. False: typical images only (the paper).
    verified_references: bool = True
    # Match each reference by its crop and by centred crops of it at 85, 70 and 55% of its side (the
    # best view counts): a face elsewhere is framed differently from the typical image. With one typical
    # image per character it raised pre-label recall at equal precision (model card: "One typical
    # image, several views"). False: the crop alone (the paper).
    reference_views: bool = True
    # Match each candidate by the same four views of its crop as well (its similarity to an identity is
    # the mean over them). On a show the embedder never saw it raised pre-label precision and recall
    # together (model card: "Candidates by their views too"); it costs four embeddings per candidate
    # instead of one. False: the crop alone (the paper).
    candidate_views: bool = True
    # Subtract each album's mean embedding (over its first faces, all views) from its faces' and its
    # references' embeddings before matching: a show's common drawing style otherwise makes any two of
    # its characters look alike. On the show the embedder never saw it raised pre-label precision from
    # 0.87 to 0.96 (model card: "Album mean"). False: plain cosine similarity (the paper).
    subtract_album_mean: bool = True
    # A face takes only an identity of its own album (identities are album/character: a frame of one
    # show is not a character of another). With four shared sets as four albums of one dataset,
    # matching against every album's references gave the unseen show's faces precision 0.79 where
    # its own album's references alone give 0.955 (model card: "One dataset of several albums").
    # False: every album's references (faces whose album is unknown are always matched against all).
    within_album: bool = True
    # Stills (and downloaded web images) are processed in shards of this many (one Prefect task each).
    stills_per_shard: int = 1000
    web_images_per_shard: int = 1000
    # Web crawling: be a good citizen (see pipeline/sources/downloader.py).
    web_user_agent: str = "toonface/0.1 (+https://github.com/toonface; dataset research crawler)"
    web_min_interval_s: float = 1.0          # per domain
    web_max_workers: int = 16
    web_obey_robots: bool = True
    web_timeout_s: float = 60.0
    web_max_results_per_query: int = 50
    encyclopedia_max_pages: int = 50         # listing pages followed per encyclopedia URL (200 names each)
    # Hosts that may resolve to private/loopback addresses (none by default: no SSRF).
    web_allow_private_hosts: tuple[str, ...] = ()

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def hash(self, fields: tuple[str, ...] | None = None) -> str:
        """Short stable hash of all settings, or of the named ones only."""
        data = self.to_dict()
        if fields is not None:
            data = {k: data[k] for k in fields}
        blob = json.dumps(data, sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    # Settings that change what frame extraction produces (its cache key).
    FRAME_FIELDS = ("frames_per_second", "frame_jpeg_quality")
    # Settings that change what the face funnel produces for one image.
    FACE_FIELDS = ("detector", "min_detector_score", "enlarge_rate", "min_sharpness",
                   "min_crop_side", "crop_jpeg_quality", "max_image_pixels", "max_image_bytes")

    @classmethod
    def from_dict(cls, data: dict | None) -> "IngestConfig":
        data = dict(data or {})
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown config keys: {', '.join(unknown)} (known: {', '.join(sorted(known))})")
        for f in dataclasses.fields(cls):  # "False" from a command line must not read as true
            if f.type in (bool, "bool") and f.name in data and not isinstance(data[f.name], bool):
                raise ValueError(f"{f.name} must be true or false, got {data[f.name]!r}")
        if isinstance(data.get("web_allow_private_hosts"), (list, str)):
            hosts = data["web_allow_private_hosts"]
            data["web_allow_private_hosts"] = tuple([hosts] if isinstance(hosts, str) else hosts)
        return cls(**data)
