"""A small published dataset made by hand: two versions, two albums in two regions, stills, frames and
web images, faces with sizes and sharpness, pre-labels, a reference conflict and labels."""

import datetime as dt
import json

import cv2
import numpy as np
import pytest

from data_manifest import Manifest
from pipeline.store import ContentStore


def crop(store: ContentStore, seed: int) -> str:
    image = np.random.default_rng(seed).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    return store.put(cv2.imencode(".jpg", image)[1].tobytes(), ".jpg")


def face(
    i: int, album: str, asset: str, side: int, sharpness: float, status="kept", drop=None, prelabel=None, sha=None
):
    return {
        "face_id": f"f{i}", "asset_id": asset, "album_id": album, "face_index": 0, "crop_w": side,
        "crop_h": side + 7, "sharpness": sharpness, "status": status, "drop_reason": drop, "crop_sha": sha,
        "prelabel": prelabel, "prelabel_score": 0.8 if prelabel else None,
    }  # fmt: skip


def asset(sha: str, album: str, kind: str, status="ok", drop=None):
    return {"asset_id": sha, "source": f"{album}/{sha}", "kind": kind, "album_id": album, "status": status,
            "drop_reason": drop}  # fmt: skip


def publish(manifest: Manifest, run_id: str, calibration: dict | None = None, **tables) -> int:
    staging = manifest.staging(run_id)
    for table, rows in tables.items():
        staging.write(table, "part", [dict(r, run_id=run_id) for r in rows])
    info = {"config": {"min_crop_side": 100, "min_sharpness": 30.0}, "calibration": calibration or {}}
    return manifest.publish(staging, {"config_hash": "c", "model_ids": {}, "counts": {}, **info})


@pytest.fixture
def dataset(tmp_path):
    store = ContentStore(tmp_path / "store")
    m = Manifest(tmp_path)
    albums = [
        {"album_id": "moon", "name": "Moon", "region": "JP", "episodes_dir": "", "stills_dir": ""},
        {"album_id": "sun", "name": "Sun", "region": "US", "episodes_dir": "", "stills_dir": ""},
    ]
    assets = [asset("a1", "moon", "still"), asset("a2", "moon", "frame"), asset("a3", "sun", "web"),
              asset("a4", "sun", "still", "dropped", "not_an_image")]  # fmt: skip
    faces = [
        face(1, "moon", "a1", 150, 200.0, prelabel="moon/Hana", sha=crop(store, 1)),
        face(2, "moon", "a1", 80, 300.0, "dropped", "low_resolution"),
        face(3, "moon", "a2", 120, 12.0, "dropped", "blurry"),
        face(4, "moon", "a2", 300, 900.0, prelabel="moon/Kai", sha=crop(store, 4)),
        face(5, "sun", "a3", 200, 55.0, prelabel="sun/Bo", sha=crop(store, 5)),
    ]
    conflict = json.dumps([{"identity": "moon/Kai", "similarity": 0.97}])
    identities = [
        {"identity": "moon/Hana", "album_id": "moon", "character": "Hana", "references": 1, "conflicts": conflict},
        {"identity": "moon/Kai", "album_id": "moon", "character": "Kai", "references": 1, "conflicts": "[]"},
    ]
    publish(m, "r0", albums=albums, assets=assets, faces=faces[:3], identities=identities)
    labels = [{"face_id": "f1", "identity": "moon/Hana", "verdict": "verified", "decision_id": "d1",
               "decided_at": dt.datetime(2026, 12, 1, tzinfo=dt.UTC), "annotators": '["ann"]'}]  # fmt: skip
    publish(m, "r1", calibration={"prelabel_threshold": 0.6}, faces=faces[3:], labels=labels)
    return tmp_path
