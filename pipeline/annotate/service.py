"""The annotation service: queues, decisions, undo, grid batches and statistics (computed in
annotate.stats), over the catalogue (manifest) and the decision database. Free of HTTP so it can
be tested directly."""

from __future__ import annotations

import dataclasses
import functools
import threading
import time
from collections import defaultdict, deque
from pathlib import Path

from data_manifest import Manifest
from pipeline.annotate.catalogue import ORDERS, Catalogue, load_catalogue
from pipeline.annotate.db import UID_RE, AnnotationDB, new_uid
from pipeline.annotate.log import DecisionLog
from pipeline.annotate.stats import compute_stats


class Refused(Exception):
    """A request the service will not carry out; `status` is the HTTP status to answer with."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


@dataclasses.dataclass
class Settings:
    order: str = "score-desc"  # score-desc | score-asc | margin (smallest margin first) | random
    gold_rate: float = 0.1  # share of served items that are gold items (0 = none)
    overlap: int = 1  # annotators who judge each item (2+ gives agreement figures)
    grid_size: int = 36  # 24..48 candidates per grid
    session_hours: float = 12.0
    reload_s: float = 5.0  # how often to look for a newer manifest version

    def __post_init__(self):
        if self.order not in ORDERS:
            raise ValueError(f"order must be one of {', '.join(ORDERS)}")
        if not 0.0 <= self.gold_rate <= 0.5:
            raise ValueError("gold rate must be between 0 and 0.5")
        self.overlap = max(1, int(self.overlap))
        self.grid_size = min(48, max(24, int(self.grid_size)))


def _locked(method):
    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        with self.lock:
            return method(self, *args, **kwargs)

    return wrapper


def _uid(value: str | None) -> str:
    return value if value and UID_RE.match(value) else new_uid()


def _ms(value) -> int | None:
    try:
        return max(0, min(int(value), 86_400_000))
    except (TypeError, ValueError):
        return None


class LoginThrottle:
    """Failed logins per name: `limit` failures within `window_s` seconds lock the name out until
    the oldest of them is `window_s` old. An attempt counts as a failure from the start (so parallel
    guesses cannot overshoot the limit) until `succeeded` clears the name.

    At most `capacity` names are tracked. Making room forgets expired names first, then the name
    idle longest that is not locked out; a live lockout is never forgotten, so failing under other
    names cannot unlock a victim. When every tracked name is locked out, names not tracked are
    refused too (fail closed): the alternative, attempts nobody counts, would be unlimited guessing."""

    def __init__(self, limit: int = 10, window_s: float = 600.0, capacity: int = 10_000):
        self.limit, self.window_s, self.capacity = limit, window_s, capacity
        self.failures: dict[str, deque] = {}  # kept in order of each name's latest failure
        self.full_until = float("-inf")  # all locked out until this failure expires
        self.lock = threading.Lock()

    def _live(self, name: str, cutoff: float) -> deque | None:
        recent = self.failures.get(name)
        while recent and recent[0] <= cutoff:
            recent.popleft()
        return recent

    def attempt(self, name: str) -> bool:
        """Count an attempt under `name`; False (nothing counted) when it may not try now."""
        now = time.monotonic()
        with self.lock:
            recent = self._live(name, now - self.window_s)
            if recent is None:
                if len(self.failures) >= self.capacity and not self._make_room(now - self.window_s):
                    return False
                recent = deque()
            elif len(recent) >= self.limit:
                return False
            else:
                del self.failures[name]  # re-inserted below: the most recent failure goes last
            recent.append(now)
            self.failures[name] = recent
            return True

    def succeeded(self, name: str) -> None:
        with self.lock:
            self.failures.pop(name, None)

    def _make_room(self, cutoff: float) -> bool:
        if cutoff < self.full_until:  # found full of lockouts, and none has expired since
            return False
        while self.failures:  # expired names sit at the front (oldest latest failure)
            oldest = next(iter(self.failures))
            if self.failures[oldest] and self.failures[oldest][-1] > cutoff:
                break
            del self.failures[oldest]
        if len(self.failures) < self.capacity:
            return True
        for name in self.failures:  # else the idlest name that is not locked out
            if len(self._live(name, cutoff)) < self.limit:
                del self.failures[name]
                return True
        self.full_until = min(recent[0] for recent in self.failures.values())
        return False


class AnnotationService:
    def __init__(self, data_root: str | Path, settings: Settings | None = None):
        self.data_root = Path(data_root)
        self.settings = settings or Settings()
        self.db = AnnotationDB(data_root)
        self.log = DecisionLog(self.db.decisions())
        self.lock = threading.RLock()  # the log is read and extended from handler threads
        self.catalogue: Catalogue = load_catalogue(data_root)
        self._checked = time.monotonic()

    def close(self) -> None:
        self.db.close()

    @_locked
    def refresh(self, force: bool = False) -> Catalogue:
        """Pick up a newer manifest version (a new ingest run, a merge, new gold answers)."""
        if force or time.monotonic() - self._checked > self.settings.reload_s:
            self._checked = time.monotonic()
            latest = Manifest(self.data_root).latest_version()
            if force or latest != self.catalogue.version:
                self.catalogue = load_catalogue(self.data_root)
        return self.catalogue

    # ---- queues -----------------------------------------------------------------------------
    @_locked
    def regular_queue(self, annotator: str, limit: int | None = None, include_skipped: bool = True) -> list[str]:
        cat = self.catalogue
        mine = self.log.decided_by(annotator)
        judged, overlap = self.log.judge_count, self.settings.overlap
        out, skipped = [], []
        for face in cat.orders[self.settings.order]:
            row = mine.get(face)
            if row is not None:
                if include_skipped and row["decision"] == "skip" and judged.get(face, 0) < overlap:
                    skipped.append(face)
                continue
            if judged.get(face, 0) >= overlap:
                continue
            out.append(face)
            if limit is not None and len(out) >= limit:
                return out
        out += skipped
        return out if limit is None else out[:limit]

    @_locked
    def queue(self, annotator: str, n: int = 8, front: list[str] = ()) -> list[dict]:
        """The next n items for an annotator: regular candidates in the configured order, a gold
        item at every k-th position (k = 1/gold_rate, counted over the annotator's decisions so the
        list only shifts by one per decision), skipped items last; `front` first (after an undo)."""
        cat = self.refresh()
        mine = self.log.decided_by(annotator)
        n = max(1, min(int(n), 50))
        out = [f for f in front if f in cat.faces and f not in mine and (f in cat.candidates or f in cat.gold)]
        regular = [f for f in self.regular_queue(annotator, limit=n + len(out)) if f not in out]
        gold = [f for f in cat.gold_order if f not in mine and f not in out]
        k = round(1 / self.settings.gold_rate) if self.settings.gold_rate > 0 else 0
        position = len(mine) + len(out)
        ri = gi = 0
        while len(out) < n and ri < len(regular):
            if k and position % k == k - 1 and gi < len(gold):
                out.append(gold[gi])
                gi += 1
            else:
                out.append(regular[ri])
                ri += 1
            position += 1
        return [cat.item(f) for f in out]

    @_locked
    def progress(self, annotator: str) -> dict:
        """Counts over the faces anyone decided (not over all candidates: this runs per decision)."""
        cat = self.catalogue
        mine = self.log.decided_by(annotator)
        judged = [f for f, n in self.log.judge_count.items() if n > 0 and f in cat.candidates]
        closed = {f for f in mine if f in cat.candidates}
        closed.update(f for f in judged if self.log.judge_count[f] >= self.settings.overlap)
        return {
            "total": len(cat.candidates),
            "decided": len(judged),
            "remaining": len(cat.candidates) - len(closed),
            "skipped": sum(1 for f, r in mine.items() if r["decision"] == "skip" and f in cat.candidates),
            "yours": sum(1 for f, r in mine.items() if r["decision"] != "skip" and f in cat.candidates),
            "gold_done": sum(1 for f in mine if f in cat.gold),
            "manifest_version": cat.version,
        }

    # ---- decisions --------------------------------------------------------------------------
    def _append(self, rows: list[dict]) -> list[dict]:
        with self.lock:
            stored, _ = self.db.append(rows)
            for row in stored:
                self.log.apply(row)
        return stored

    @_locked
    def decide(
        self,
        annotator: str,
        face_id: str,
        proposed: str | None,
        decision: str,
        identity: str | None = None,
        time_ms=None,
        request_id: str | None = None,
    ) -> dict:
        cat = self.catalogue
        if face_id not in cat.faces or not (face_id in cat.candidates or face_id in cat.gold):
            raise Refused(404, "no such item")
        expected, score, truth = cat.proposal(face_id)
        if proposed != expected:
            raise Refused(409, "the item changed; reload the page")
        if decision not in ("same", "different", "skip", "relabel"):
            raise Refused(422, "decision must be same, different, skip or relabel")
        if decision == "relabel":
            if identity not in cat.identities or identity == proposed:
                raise Refused(422, "pick another known identity")
        else:
            identity = None if decision == "skip" else proposed
        face = cat.faces[face_id]
        row = {
            "uid": _uid(request_id),
            "annotator": annotator,
            "face_id": face_id,
            "crop_sha": face["crop_sha"],
            "proposed": proposed,
            "decision": decision,
            "identity": identity,
            "score": score,
            "embedder": face["embedder"],
            "mode": "pair",
            "batch_id": None,
            "time_ms": _ms(time_ms),
            "supersedes": None,
            "gold_identity": truth,
            "manifest_version": cat.version,
            "queue_order": self.settings.order,
        }
        return self._append([row])[0]

    @_locked
    def undo(self, annotator: str, time_ms=None, request_id: str | None = None) -> list[dict]:
        """Cancel the annotator's latest action still in effect (a pair decision or a whole grid)
        with new `undo` rows. Returns the cancelled decisions."""
        with self.lock:
            target = self.log.last_action(annotator)
            if not target:
                raise Refused(409, "nothing to undo")
            base = _uid(request_id)
            rows = [
                {
                    "uid": f"{base}:{t['id']}",
                    "annotator": annotator,
                    "face_id": t["face_id"],
                    "crop_sha": t["crop_sha"],
                    "proposed": t["proposed"],
                    "decision": "undo",
                    "identity": t["identity"],
                    "score": t["score"],
                    "embedder": t["embedder"],
                    "mode": t["mode"],
                    "batch_id": t["batch_id"],
                    "time_ms": _ms(time_ms),
                    "supersedes": t["id"],
                    "gold_identity": t["gold_identity"],
                    "manifest_version": self.catalogue.version,
                    "queue_order": t["queue_order"],
                }
                for t in target
            ]
            stored, _ = self.db.append(rows)
            for row in stored:
                self.log.apply(row)
        return [self.log.rows[r["supersedes"]] for r in stored]

    # ---- grid -------------------------------------------------------------------------------
    @_locked
    def grid(self, annotator: str, identity: str | None = None, size: int | None = None) -> dict:
        """Up to grid_size pending candidates pre-labelled as one identity (by default the one with
        the most pending candidates), in queue order."""
        cat = self.refresh()
        size = max(1, min(int(size or self.settings.grid_size), 48))
        by_identity: dict[str, list[str]] = defaultdict(list)
        for face in self.regular_queue(annotator, include_skipped=False):
            by_identity[cat.faces[face]["prelabel"]].append(face)
        if identity is None and by_identity:
            identity = max(by_identity, key=lambda i: len(by_identity[i]))  # ties: first in queue order
        faces = by_identity.get(identity, [])[:size]
        return {
            "identity": identity,
            "refs": cat.refs.get(identity, []) if identity else [],
            "items": [
                {"face_id": f, "crop_sha": cat.faces[f]["crop_sha"], "score": cat.faces[f]["prelabel_score"]}
                for f in faces
            ],
        }

    @_locked
    def confirm_grid(
        self,
        annotator: str,
        identity: str,
        face_ids: list[str],
        wrong: list[str],
        time_ms=None,
        request_id: str | None = None,
    ) -> list[dict]:
        cat = self.catalogue
        if not face_ids or len(face_ids) > 48 or len(set(face_ids)) != len(face_ids):
            raise Refused(422, "a grid holds 1 to 48 distinct items")
        if not set(wrong) <= set(face_ids):
            raise Refused(422, "wrong items must be items of the grid")
        for face in face_ids:
            if face not in cat.candidates or cat.faces[face]["prelabel"] != identity:
                raise Refused(409, "the grid changed; reload the page")
        base = _uid(request_id)
        wrong = set(wrong)
        rows = []
        for face in face_ids:
            f = cat.faces[face]
            rows.append(
                {
                    "uid": f"{base}:{face}",
                    "annotator": annotator,
                    "face_id": face,
                    "crop_sha": f["crop_sha"],
                    "proposed": identity,
                    "decision": "different" if face in wrong else "same",
                    "identity": identity,
                    "score": f["prelabel_score"],
                    "embedder": f["embedder"],
                    "mode": "grid",
                    "batch_id": base,
                    "time_ms": _ms(time_ms),
                    "supersedes": None,
                    "gold_identity": None,
                    "manifest_version": cat.version,
                    "queue_order": self.settings.order,
                }
            )
        return self._append(rows)

    # ---- statistics -------------------------------------------------------------------------
    @_locked
    def stats(self) -> dict:
        return {**compute_stats(self.log, self.db.users()), "prelabels": self.catalogue.prelabel_quality}
