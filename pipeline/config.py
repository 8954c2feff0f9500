"""Settings of one ingest run: one frozen record per stage, composed into `IngestConfig`.

Every default is the iCartoonFace paper's value, except where its comment says why not. A stage
receives its record whole; a cache key or fingerprint is `settings_hash(record)` plus the ids of
the models involved, so a setting added to a record can never be left out of its key.

Settings are written flat everywhere users see them (`--set enlarge_rate=1.2`, deployment
parameters, the `config` column of the `runs` table): every field name is unique across records.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json

SETTINGS = dataclasses.dataclass(frozen=True, kw_only=True)


def settings_hash(record) -> str:
    """Short stable hash of a settings record (all its fields)."""
    blob = json.dumps(dataclasses.asdict(record), sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


@SETTINGS
class PlanSettings:
    """Which inputs a run takes and how they are grouped into shards (results do not depend on shard sizes)."""

    episodes_per_album: int = 10  # the paper: 10 random episodes per album
    sample_seed: int = 0
    stills_per_shard: int = 1000  # stills per shard (one Prefect task each)
    web_images_per_shard: int = 1000


@SETTINGS
class FrameSettings:
    """Frame extraction; its hash keys the frames cache."""

    frames_per_second: float = 1.0  # the paper: one frame per second
    frame_jpeg_quality: int = 95


@SETTINGS
class DetectorSettings:
    """Which weights of the detector run, at which size, in batches of how many images. The weights and
    size are named by the detector's model id in every key; the batch size changes no result."""

    # "default": the shipped models/weights/detector.safetensors; else a path
    detector_weights: str = "default"
    # RetinaNet letterbox side in pixels (a multiple of 32); 0: the size stored with the weights
    detector_size: int = 0
    # Images per batched detector call (this many decoded images in memory); raise it on a GPU
    detect_batch_size: int = 8


@SETTINGS
class FunnelSettings:
    """The face funnel of one image: decode limits, detector family, crop and quality gate. Its hash is
    each face's `config_hash` and, with the detector's model id, the funnel cache's key."""

    # "retinanet" (our trained RetinaNet) or "animeface" (the classical nvxs detector)
    detector: str = "retinanet"
    min_detector_score: float = 0.0
    enlarge_rate: float = 1.0  # the paper's enlarged rate
    min_sharpness: float = 30.0  # the paper: Laplacian sharpness < 30 is dropped
    min_crop_side: int = 100  # the paper: resolution < 100 px is dropped
    crop_jpeg_quality: int = 95
    # Larger inputs are dropped as decompression bombs, not decoded.
    max_image_pixels: int = 50_000_000
    max_image_bytes: int = 64 * 1024 * 1024


@SETTINGS
class IdentitySettings:
    """Near-duplicates, references and pre-labels. With the embedder's model id, its hash is the
    fingerprint of the pre-label rule (`reference_set_id`)."""

    # "default": models/weights/embedder.safetensors; "none": no identity stage; else a path
    embedder: str = "default"
    # Two crops more similar than this are near-duplicate candidates. None: 0.8 while `dedup_same_picture`
    # is on, else the value calibrated for the embedder (its weights' metadata), else the paper's 0.95
    dedup_threshold: float | None = None
    # A candidate is removed only when it is a copy of the same picture (`pipeline.same_picture`), so other
    # drawings of a character stay. False: the similarity alone decides (the paper).
    dedup_same_picture: bool = True
    # None: the value calibrated for the embedder, else the paper's 0.6
    prelabel_threshold: float | None = None
    # A pre-label also needs its identity this much more similar than the runner-up's (0: the paper's rule)
    prelabel_min_margin: float = 0.0
    # Faces people verified as an identity join its references, so each night learns from the last
    # day's verification. False: typical images only (the paper).
    verified_references: bool = True
    # Match each reference by its crop and centred crops of it at 85, 70 and 55% of its side: a face
    # elsewhere is framed differently from the typical image. False: the crop alone (the paper).
    reference_views: bool = True
    # Match each candidate by the same views (its similarity is the mean over them). False: the crop alone.
    candidate_views: bool = True
    # Subtract each album's mean embedding first: a show's common drawing style otherwise makes any two
    # of its characters look alike. False: plain cosine similarity (the paper).
    subtract_album_mean: bool = True
    # A face takes only an identity of its own album (a frame of one show is not a character of
    # another). False: every album's references.
    within_album: bool = True


@SETTINGS
class WebSettings:
    """Crawling encyclopedia pages and image search: be a good citizen."""

    web_user_agent: str = "toonface/0.1 (+https://github.com/toonface; dataset research crawler)"
    web_min_interval_s: float = 1.0  # per domain
    web_max_workers: int = 16
    web_obey_robots: bool = True
    web_timeout_s: float = 60.0  # wall-clock limit of one request, redirects included
    web_max_results_per_query: int = 50
    encyclopedia_max_pages: int = 50  # listing pages followed per encyclopedia URL
    # A MediaWiki category is read through the wiki's api.php first (members and their lead images,
    # whatever the skin); its HTML listing is the fallback when the API is missing or refuses.
    encyclopedia_api: bool = True
    # Hosts (or host:port) that may resolve to private/loopback addresses (none by default: no SSRF).
    web_allow_private_hosts: tuple[str, ...] = ()


# The records of a run, by their attribute name in IngestConfig.
RECORDS = {
    "plan": PlanSettings,
    "frames": FrameSettings,
    "detection": DetectorSettings,
    "funnel": FunnelSettings,
    "identity": IdentitySettings,
    "web": WebSettings,
}
FIELD_RECORD = {f.name: name for name, record in RECORDS.items() for f in dataclasses.fields(record)}
assert len(FIELD_RECORD) == sum(len(dataclasses.fields(r)) for r in RECORDS.values()), "a field name is repeated"


@SETTINGS
class IngestConfig:
    plan: PlanSettings = PlanSettings()
    frames: FrameSettings = FrameSettings()
    detection: DetectorSettings = DetectorSettings()
    funnel: FunnelSettings = FunnelSettings()
    identity: IdentitySettings = IdentitySettings()
    web: WebSettings = WebSettings()

    def to_dict(self) -> dict:
        """Every setting, flat (as stored in the `runs` table)."""
        return {key: value for name in RECORDS for key, value in dataclasses.asdict(getattr(self, name)).items()}

    def hash(self) -> str:
        """Short stable hash of every setting."""
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:16]

    @classmethod
    def from_dict(cls, data: dict | None) -> IngestConfig:
        """From flat settings (`{"enlarge_rate": 1.2}`, as `--set`, deployments and every manifest write
        them); absent ones keep their defaults. Unknown names and non-boolean switches are refused."""
        data = dict(data or {})
        unknown = sorted(set(data) - set(FIELD_RECORD))
        if unknown:
            raise ValueError(f"unknown config keys: {', '.join(unknown)} (known: {', '.join(sorted(FIELD_RECORD))})")
        grouped: dict[str, dict] = {name: {} for name in RECORDS}
        for key, value in data.items():
            grouped[FIELD_RECORD[key]][key] = _checked(RECORDS[FIELD_RECORD[key]], key, value)
        return cls(**{name: RECORDS[name](**values) for name, values in grouped.items()})


def _checked(record, key: str, value):
    """`value` for field `key` of `record`: "False" from a command line must not read as true, and a
    list of hosts becomes a tuple (records are frozen and hashable)."""
    kind = next(f.type for f in dataclasses.fields(record) if f.name == key)
    if kind in (bool, "bool") and not isinstance(value, bool):
        raise ValueError(f"{key} must be true or false, got {value!r}")
    if key == "web_allow_private_hosts" and isinstance(value, (list, str)):
        return tuple([value] if isinstance(value, str) else value)
    return value
