"""Schemas of the manifest tables. Each table has a key: a row whose key is already published is
never written again, which is what makes reruns add nothing and resumed runs add no duplicates."""

from __future__ import annotations

import dataclasses

import pyarrow as pa

TS = pa.timestamp("us", tz="UTC")

ALBUMS = pa.schema(
    [
        ("album_id", pa.string()),
        ("name", pa.string()),
        ("region", pa.string()),
        ("episodes_dir", pa.string()),
        ("stills_dir", pa.string()),
        ("run_id", pa.string()),
    ]
)

EPISODES = pa.schema(
    [
        ("album_id", pa.string()),
        ("episode_path", pa.string()),  # relative to the album's episodes folder
        ("episode_sha", pa.string()),  # sha256 of the video file
        ("size_bytes", pa.int64()),
        ("duration_s", pa.float64()),
        ("codec", pa.string()),
        ("selected", pa.bool_()),  # picked by the seeded per-album sampling
        ("sample_rank", pa.int64()),  # position in the seeded order (lower is picked first)
        ("frames", pa.int64()),  # frames extracted (0 when not selected or unreadable)
        ("status", pa.string()),  # ok | dropped | not_selected
        ("drop_reason", pa.string()),
        ("detail", pa.string()),
        ("run_id", pa.string()),
    ]
)

ASSETS = pa.schema(
    [
        ("asset_id", pa.string()),  # sha256 of the image bytes (the content store's key)
        ("source", pa.string()),  # library-relative path, "<episode>#t=<seconds>" for frames, or a URL
        ("kind", pa.string()),  # still | frame
        ("album_id", pa.string()),
        ("episode_path", pa.string()),
        ("episode_sha", pa.string()),
        ("frame_index", pa.int64()),
        ("timestamp_s", pa.float64()),
        ("size_bytes", pa.int64()),
        ("format", pa.string()),
        ("width", pa.int64()),
        ("height", pa.int64()),
        ("status", pa.string()),  # ok | dropped
        ("drop_reason", pa.string()),
        ("detail", pa.string()),
        ("faces", pa.int64()),
        ("character", pa.string()),  # web images: the character searched for / pictured
        ("query", pa.string()),  # web images: the search query that found it
        ("run_id", pa.string()),
    ]
)

FACES = pa.schema(
    [
        ("face_id", pa.string()),
        ("asset_id", pa.string()),
        ("album_id", pa.string()),
        ("face_index", pa.int64()),
        ("x1", pa.float64()),
        ("y1", pa.float64()),
        ("x2", pa.float64()),
        ("y2", pa.float64()),
        ("det_score", pa.float64()),
        ("detector", pa.string()),
        ("model_id", pa.string()),
        ("enlarge_rate", pa.float64()),
        ("crop_x1", pa.int64()),
        ("crop_y1", pa.int64()),
        ("crop_x2", pa.int64()),
        ("crop_y2", pa.int64()),
        ("crop_w", pa.int64()),
        ("crop_h", pa.int64()),
        ("clipped", pa.bool_()),  # the enlarged window met the image border
        ("sharpness", pa.float64()),  # variance of Laplacian, 256x256 grey
        ("status", pa.string()),  # kept | dropped
        ("drop_reason", pa.string()),  # low_score | low_resolution | blurry
        ("crop_sha", pa.string()),  # the crop's JPEG in the content store
        ("config_hash", pa.string()),
        # identity stage (pipeline/identity/); empty when no embedder ran
        ("embedder", pa.string()),  # embedding model id (weights hash)
        ("duplicate_of", pa.string()),  # face_id of the kept crop this one near-duplicates
        ("duplicate_similarity", pa.float64()),
        ("prelabel", pa.string()),  # "<album_id>/<character>" of the nearest reference, when > threshold
        ("prelabel_score", pa.float64()),  # similarity to the nearest reference identity
        ("runner_up", pa.string()),
        ("runner_up_score", pa.float64()),
        ("prelabel_margin", pa.float64()),
        ("run_id", pa.string()),
    ]
)

PRELABELS = pa.schema(
    [  # later pre-labels of published faces (pipeline/identity/)
        # A face's pre-label is first written on its faces row. When a later run's reference set
        # differs (new characters, new typical images, another threshold) every published candidate is
        # matched again and a row is added here for each face whose result changed. The row of the
        # latest run is the pre-label in force: `pipeline.identity.published.faces_with_current_prelabels`.
        ("face_id", pa.string()),
        ("prelabel", pa.string()),
        ("prelabel_score", pa.float64()),
        ("runner_up", pa.string()),
        ("runner_up_score", pa.float64()),
        ("prelabel_margin", pa.float64()),
        ("embedder", pa.string()),
        ("reference_set", pa.string()),  # fingerprint of embedder, threshold and reference faces used
        ("run_id", pa.string()),
    ]
)

IDENTITIES = pa.schema(
    [  # the reference set, per embedding model
        ("identity", pa.string()),  # "<album_id>/<character>"
        ("album_id", pa.string()),
        ("character", pa.string()),
        ("references", pa.int64()),  # reference faces (typical images) behind it
        ("reference_faces", pa.string()),  # JSON list of face_id
        ("conflicts", pa.string()),  # JSON [{identity, similarity}]: other names whose references look the same
        ("embedder", pa.string()),
        ("run_id", pa.string()),
    ]
)

CHARACTERS = pa.schema(
    [
        ("album_id", pa.string()),
        ("name", pa.string()),
        ("aliases", pa.string()),  # JSON list
        ("image_url", pa.string()),  # the typical image, as found on the page
        ("image_asset_id", pa.string()),  # that image in the content store (None if not fetched)
        ("source_url", pa.string()),  # the encyclopedia page, or "albums-file"
        ("origin", pa.string()),  # encyclopedia | albums_file
        ("run_id", pa.string()),
    ]
)

DOWNLOADS = pa.schema(
    [  # one row per HTTP fetch attempt (cached successes are not refetched)
        ("url", pa.string()),  # canonical URL
        ("album_id", pa.string()),
        ("purpose", pa.string()),  # encyclopedia | reference | search | image
        ("final_url", pa.string()),
        ("ok", pa.bool_()),
        ("reason", pa.string()),  # failure reason code (pipeline/sources/download/)
        ("http_status", pa.int64()),
        ("content_type", pa.string()),
        ("asset_id", pa.string()),
        ("attempts", pa.int64()),
        ("detail", pa.string()),
        ("fetched_at", TS),
        ("run_id", pa.string()),
    ]
)

RUNS = pa.schema(
    [
        ("manifest_version", pa.int64()),
        ("run_id", pa.string()),
        ("flow_run_id", pa.string()),
        ("started_at", TS),
        ("published_at", TS),
        ("git_commit", pa.string()),
        ("config_hash", pa.string()),
        ("config", pa.string()),  # JSON
        ("model_ids", pa.string()),  # JSON {detector: model_id}
        ("counts", pa.string()),  # JSON {stage or reason: count}
        ("rows_added", pa.string()),  # JSON {table: rows}
        ("table_versions", pa.string()),  # JSON {table: Delta version pinned by this manifest version}
        ("calibration", pa.string()),  # JSON: thresholds and similarity histograms of the identity stage
        ("library", pa.string()),
    ]
)

LABELS = pa.schema(
    [  # verification decisions (pipeline/annotate/merge.py); append-only
        ("face_id", pa.string()),
        ("identity", pa.string()),  # "<album_id>/<character>" the verdict is about
        ("verdict", pa.string()),  # verified | rejected
        ("annotators", pa.string()),  # JSON list: the annotators on the winning side
        ("decided_at", TS),  # the latest decision on the winning side
        ("decision_id", pa.string()),  # that decision's id in annotations/decisions.sqlite
        ("embedder", pa.string()),  # model version behind the pre-label shown
        ("proposed", pa.string()),  # the identity the page proposed
        ("prelabel_score", pa.float64()),
        ("votes", pa.int64()),  # effective decisions about this face and identity
        ("run_id", pa.string()),
    ]
)


@dataclasses.dataclass(frozen=True)
class TableSpec:
    schema: pa.Schema
    key: tuple[str, ...]  # a row whose key is already published is never written again


# Order matters only for readability of the history.
TABLES: dict[str, TableSpec] = {
    "albums": TableSpec(ALBUMS, ("album_id",)),
    "episodes": TableSpec(EPISODES, ("album_id", "episode_path", "episode_sha")),
    "assets": TableSpec(ASSETS, ("asset_id", "source")),
    "faces": TableSpec(FACES, ("face_id",)),
    "characters": TableSpec(CHARACTERS, ("album_id", "name", "source_url")),
    "downloads": TableSpec(DOWNLOADS, ("url", "purpose", "run_id")),
    "identities": TableSpec(IDENTITIES, ("identity", "embedder", "reference_faces")),
    "prelabels": TableSpec(PRELABELS, ("face_id", "run_id")),
    "labels": TableSpec(LABELS, ("face_id", "identity", "decision_id")),
}
