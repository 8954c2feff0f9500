"""A real data root for the annotation tests, without any model: drawn crops in a real content
store, and faces/identities/assets rows published as a real manifest version."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np

from data_manifest import Manifest
from pipeline.store import ContentStore

ALBUM = "toon"
EMBEDDER = "emb-test-0001"
IDENTITIES = ["toon/alice", "toon/bob", "toon/carol", "toon/dan"]
COLORS = {
    "toon/alice": (60, 60, 200),
    "toon/bob": (200, 90, 40),
    "toon/carol": (40, 160, 60),
    "toon/dan": (150, 60, 150),
}
# Pair candidates: face_id -> (pre-label, score, runner-up, runner-up score). Score order is the queue order.
PAIRS = {
    "p0": ("toon/alice", 0.95, "toon/bob", 0.71),
    "p1": ("toon/bob", 0.93, "toon/alice", 0.70),
    "p2": ("toon/alice", 0.91, "toon/bob", 0.88),
    "p3": ("toon/bob", 0.89, "toon/dan", 0.60),
    "p4": ("toon/alice", 0.87, "toon/carol", 0.62),
    "p5": ("toon/bob", 0.85, "toon/alice", 0.64),
}
GOLDISH = {f"k{i}": ("toon/dan", 0.80 - i * 0.01, "toon/carol", 0.5) for i in range(4)}
GRID = {f"g{i}": ("toon/carol", 0.70 - i * 0.01, "toon/dan", 0.55) for i in range(6)}


def crop_jpeg(text: str, color: tuple[int, int, int], size: int = 128) -> bytes:
    """A coloured square with a face-ish drawing and a label: unique bytes per text."""
    img = np.full((size, size, 3), color, np.uint8)
    cv2.circle(img, (size // 2, size // 2), size // 3, (230, 220, 250), -1)
    cv2.circle(img, (size // 2 - 14, size // 2 - 8), 6, (20, 20, 20), -1)
    cv2.circle(img, (size // 2 + 14, size // 2 - 8), 6, (20, 20, 20), -1)
    cv2.ellipse(img, (size // 2, size // 2 + 16), (16, 8), 0, 0, 180, (30, 30, 160), 3)
    cv2.putText(img, text, (6, size - 10), cv2.FONT_HERSHEY_SIMPLEX, 0.55, (255, 255, 255), 2)
    return cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes()


def face_row(
    face_id,
    sha,
    asset_id,
    prelabel=None,
    score=None,
    runner_up=None,
    runner_up_score=None,
    status="kept",
    run_id="ingest-0",
):
    return {
        "face_id": face_id,
        "asset_id": asset_id,
        "album_id": ALBUM,
        "face_index": 0,
        "x1": 32.0,
        "y1": 32.0,
        "x2": 96.0,
        "y2": 96.0,
        "det_score": 0.9,
        "detector": "animeface",
        "model_id": "animeface-2.0.3",
        "enlarge_rate": 1.0,
        "crop_w": 128,
        "crop_h": 128,
        "clipped": False,
        "sharpness": 120.0,
        "status": status,
        "drop_reason": None if status == "kept" else "blurry",
        "crop_sha": sha,
        "config_hash": "cfg0",
        "embedder": EMBEDDER,
        "prelabel": prelabel,
        "prelabel_score": score,
        "runner_up": runner_up,
        "runner_up_score": runner_up_score,
        "prelabel_margin": None if score is None or runner_up_score is None else round(score - runner_up_score, 4),
        "run_id": run_id,
    }


def build_data_root(root: str | Path) -> dict:
    """Publish manifest version 0: 4 identities with 2 reference crops each, 6 pair candidates,
    4 more pre-labelled 'dan', 6 pre-labelled 'carol' (a grid), a dropped and an unlabelled face.
    Returns {"faces": face_id -> crop sha, "other_sha": a stored object that is no face crop}."""
    root = Path(root)
    store = ContentStore(root / "store")
    faces, assets, identities, shas = [], [], [], {}

    def add(face_id, color, kind="still", character=None, **kw):
        sha = store.put(crop_jpeg(face_id, color), ".jpg")
        asset_id = f"asset-{face_id}"
        source = f"https://wiki.example.org/{face_id}.png" if kind == "reference" else f"stills/{face_id}.png"
        assets.append(
            {
                "asset_id": asset_id,
                "source": source,
                "kind": kind,
                "album_id": ALBUM,
                "size_bytes": 1000,
                "format": "jpeg",
                "width": 256,
                "height": 256,
                "status": "ok",
                "faces": 1,
                "character": character,
                "run_id": "ingest-0",
            }
        )
        faces.append(face_row(face_id, sha, asset_id, **kw))
        shas[face_id] = sha

    for identity in IDENTITIES:
        name = identity.split("/")[1]
        refs = []
        for i in range(2):
            face_id = f"ref-{name}-{i}"
            add(face_id, COLORS[identity], kind="reference", character=name)
            refs.append(face_id)
        identities.append(
            {
                "identity": identity,
                "album_id": ALBUM,
                "character": name,
                "references": 2,
                "reference_faces": json.dumps(refs),
                "conflicts": "[]",
                "embedder": EMBEDDER,
                "run_id": "ingest-0",
            }
        )
    for group in (PAIRS, GOLDISH, GRID):
        for face_id, (label, score, runner, runner_score) in group.items():
            add(face_id, COLORS[label], prelabel=label, score=score, runner_up=runner, runner_up_score=runner_score)
    add("x-dropped", (90, 90, 90), prelabel="toon/alice", score=0.99, status="dropped")
    add("x-unlabelled", (90, 90, 90), prelabel=None, score=0.4, runner_up="toon/bob", runner_up_score=0.3)
    other_sha = store.put(b"\xff\xd8\xff\xe0 not a face crop, e.g. a whole frame", ".jpg")

    manifest = Manifest(root)
    staging = manifest.staging("ingest-0")
    staging.write(
        "albums",
        "part",
        [
            {
                "album_id": ALBUM,
                "name": "Toon Town",
                "region": "JP",
                "episodes_dir": "",
                "stills_dir": "stills",
                "run_id": "ingest-0",
            }
        ],
    )
    staging.write("assets", "part", assets)
    staging.write("faces", "part", faces)
    staging.write("identities", "part", identities)
    manifest.publish(
        staging,
        {
            "flow_run_id": "flow-0",
            "git_commit": "test",
            "config_hash": "cfg0",
            "config": {
                "enlarge_rate": 1.0,
                "min_sharpness": 30.0,
                "min_crop_side": 100,
                "dedup_threshold": 0.95,
                "prelabel_threshold": 0.6,
                "reference_views": True,
                "detector": "animeface",
            },
            "model_ids": {"animeface": "animeface-2.0.3", "embedder": EMBEDDER},
            "counts": {"crops_kept": len(faces) - 1},
            "library": "/media/toon",
            "calibration": {"embedder": EMBEDDER, "dedup_threshold": 0.95, "prelabel_threshold": 0.6},
        },
    )
    return {"faces": shas, "other_sha": other_sha}
