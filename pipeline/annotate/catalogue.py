"""What there is to verify, read from the published manifest: candidate faces with their
pre-labels, the reference crops of every identity, what is labelled already, and gold answers."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from pathlib import Path

import pandas as pd

from data_manifest import Manifest
from pipeline.annotate.db import AnnotationDB, db_path
from pipeline.identity.labels import verified_faces
from pipeline.identity.published import faces_with_current_prelabels, latest_calibration

ORDERS = ("score-desc", "score-asc", "margin", "random")
MAX_REFS = 5
MAX_ALTERNATIVES = 9


def _num(value) -> float | None:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(value) else value


def _str(value) -> str | None:
    return None if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA else str(value)


def releases_file(data_root: str | Path) -> Path:
    return Path(data_root) / "manifest" / "releases.json"


def tagged_release(data_root: str | Path, name: str) -> dict | None:
    """The tag record of the release `name`, None if there is none."""
    return next((r for r in read_releases(data_root) if r.get("name") == name), None)


def read_releases(data_root: str | Path) -> list[dict]:
    """The release tags, oldest first. The file holds one JSON object per line and is only ever
    appended to; a line cut short by a crash is skipped."""
    path = releases_file(data_root)
    if not path.exists():
        return []
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


def _album_of(identity: str | None) -> str | None:
    """The album of an `album/character` identity."""
    return identity.split("/", 1)[0] if identity and "/" in identity else None


@dataclasses.dataclass(kw_only=True)
class Catalogue:
    version: int | None
    faces: dict[str, dict]  # face_id -> crop_sha, prelabel, scores, embedder, album_id
    crops: set[str]  # shas the page may serve
    refs: dict[str, list[str]]  # identity -> up to 5 reference crop shas
    identities: list[str]
    candidates: set[str]  # kept, pre-labelled, not a reference, not labelled yet
    labelled: set[str]  # faces with a published label
    gold: dict[str, str]  # face_id -> known identity (gold items)
    orders: dict[str, list[str]]  # order name -> candidates in that order
    gold_order: list[str]
    prelabel_quality: dict = dataclasses.field(default_factory=dict)  # the latest prelabel_vs_verified

    def proposal(self, face_id: str) -> tuple[str | None, float | None, str | None]:
        """(proposed identity, its pre-label score, gold answer or None) of an item."""
        face = self.faces[face_id]
        truth = self.gold.get(face_id) if face_id not in self.candidates else None
        if truth is None:
            return face["prelabel"], face["prelabel_score"], None
        # A gold item proposes its pre-label when that is wrong; otherwise the right identity or
        # a plausible wrong one, half and half (fixed per face), so that "same" is not always right.
        if face["prelabel"] and face["prelabel"] != truth:
            return face["prelabel"], face["prelabel_score"], truth
        if int(hashlib.sha256(face_id.encode()).hexdigest(), 16) % 2 == 0:
            return truth, face["prelabel_score"] if face["prelabel"] == truth else None, truth
        for other in [face["runner_up"]] + self._same_album(_album_of(truth)) + self.identities:
            if other and other != truth:
                score = face["runner_up_score"] if other == face["runner_up"] else None
                return other, score, truth
        return truth, None, truth

    def _same_album(self, album: str | None) -> list[str]:
        return [i for i in self.identities if _album_of(i) == album] if album else []

    def alternatives(self, face_id: str, proposed: str | None) -> list[dict]:
        """Identities for the keys 1-9: the pre-label and runner-up first (with their scores), then
        the other identities of the face's album (of the proposal's, when the face has none), then
        the rest (crossovers)."""
        face = self.faces[face_id]
        scored = {face["prelabel"]: face["prelabel_score"], face["runner_up"]: face["runner_up_score"]}
        album = face["album_id"] or _album_of(proposed or face["prelabel"])
        out, seen = [], {proposed, None}
        for identity in [face["prelabel"], face["runner_up"]] + self._same_album(album) + self.identities:
            if identity in seen:
                continue
            seen.add(identity)
            out.append({"identity": identity, "score": scored.get(identity), "refs": self.refs.get(identity, [])[:1]})
            if len(out) == MAX_ALTERNATIVES:
                break
        return out

    def item(self, face_id: str) -> dict:
        face = self.faces[face_id]
        proposed, score, _ = self.proposal(face_id)
        return {
            "face_id": face_id,
            "crop_sha": face["crop_sha"],
            "proposed": proposed,
            "score": score,
            "margin": face["prelabel_margin"] if proposed == face["prelabel"] else None,
            "embedder": face["embedder"],
            "refs": self.refs.get(proposed, []),
            "alternatives": self.alternatives(face_id, proposed),
        }


def random_rank(face_id: str) -> str:
    """A face's place in the `random` queue order: a fixed shuffle by hash, the same for every
    annotator, restart and manifest version (a new face slots in at a random place)."""
    return hashlib.sha256(b"order:" + face_id.encode()).hexdigest()


def _gold(data_root: str | Path, manifest: Manifest, version: int) -> dict[str, str]:
    """Gold answers, face_id -> identity: verified labels of the latest release (as of its manifest
    version), then the gold files added to the annotation database."""
    gold: dict[str, str] = {}
    releases = [r for r in read_releases(data_root) if r["manifest_version"] <= version]
    if releases:
        gold.update(verified_faces(manifest.read("labels", version=releases[-1]["manifest_version"])))
    if db_path(data_root).exists():
        db = AnnotationDB(data_root)
        try:
            gold.update(db.gold())
        finally:
            db.close()
    return gold


def _face_rows(faces: pd.DataFrame) -> dict[str, dict]:
    """face_id -> what the page needs of a face that has a crop, with missing values as None."""
    rows = {}
    for r in faces[faces["crop_sha"].notna()].itertuples(index=False):
        rows[r.face_id] = {
            "crop_sha": r.crop_sha,
            "status": r.status,
            "album_id": _str(r.album_id),
            "prelabel": _str(r.prelabel),
            "prelabel_score": _num(r.prelabel_score),
            "runner_up": _str(r.runner_up),
            "runner_up_score": _num(r.runner_up_score),
            "prelabel_margin": _num(r.prelabel_margin),
            "embedder": _str(r.embedder),
        }
    return rows


def _references(identities: pd.DataFrame, rows: dict[str, dict]) -> tuple[dict[str, list[str]], set[str]]:
    """(identity -> up to MAX_REFS reference crop shas, the face_ids of every reference face)."""
    refs: dict[str, list[str]] = {}
    reference_ids: set[str] = set()
    for r in identities.itertuples(index=False):
        ids = json.loads(r.reference_faces or "[]")
        reference_ids.update(ids)
        bucket = refs.setdefault(r.identity, [])
        for face_id in ids:
            sha = rows.get(face_id, {}).get("crop_sha")
            if sha and sha not in bucket and len(bucket) < MAX_REFS:
                bucket.append(sha)
    return refs, reference_ids


def _queue_orders(candidates: set[str], rows: dict[str, dict]) -> dict[str, list[str]]:
    """Order name -> the candidates in that order (faces without a score or margin last)."""

    def key_score(f, sign):
        s = rows[f]["prelabel_score"]
        return (s is None, sign * (s or 0.0), f)

    return {
        "score-desc": sorted(candidates, key=lambda f: key_score(f, -1)),
        "score-asc": sorted(candidates, key=lambda f: key_score(f, 1)),
        "margin": sorted(
            candidates, key=lambda f: (rows[f]["prelabel_margin"] is None, rows[f]["prelabel_margin"] or 0.0, f)
        ),
        # a fixed shuffle: its judged prefix is a random sample of the pre-labelled faces, which
        # prelabel_vs_verified measures without bias (merge.random_order_faces)
        "random": sorted(candidates, key=random_rank),
    }


def load_catalogue(data_root: str | Path, version: int | None = None) -> Catalogue:
    manifest = Manifest(data_root)
    run = manifest.resolve_version(version)
    version = int(run["manifest_version"])
    faces = faces_with_current_prelabels(manifest, version)
    identities = manifest.read("identities", version=version)
    labels = manifest.read("labels", version=version)

    rows = _face_rows(faces)
    refs, reference_ids = _references(identities, rows)
    labelled = set(labels["face_id"]) if len(labels) else set()
    candidates = {
        f
        for f, r in rows.items()
        if r["status"] == "kept" and r["prelabel"] and f not in reference_ids and f not in labelled
    }

    gold = {
        f: i
        for f, i in _gold(data_root, manifest, version).items()
        if f in rows and rows[f]["status"] == "kept" and f not in reference_ids
    }
    candidates -= set(gold)  # a gold item is only ever shown as one

    gold_order = sorted(gold, key=lambda f: hashlib.sha256(f.encode()).hexdigest())
    names = sorted(set(refs) | {r["prelabel"] for r in rows.values() if r["prelabel"]} | set(gold.values()))
    crops = {r["crop_sha"] for r in rows.values()}
    quality = latest_calibration(manifest, "prelabel_vs_verified") or {}
    return Catalogue(
        version=version,
        faces=rows,
        crops=crops,
        refs=refs,
        identities=names,
        candidates=candidates,
        labelled=labelled,
        gold=gold,
        orders=_queue_orders(candidates, rows),
        gold_order=gold_order,
        prelabel_quality=quality,
    )
