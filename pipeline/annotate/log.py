"""The decision log replayed in memory: which decision of each annotator on each face is in
effect (the latest one not cancelled by an undo), and what an undo would cancel next."""

from __future__ import annotations

from collections import defaultdict


class DecisionLog:
    def __init__(self, rows: list[dict] = ()):
        self.rows: dict[int, dict] = {}
        self.superseded: set[int] = set()
        self.per_pair: dict[tuple[str, str], list[int]] = defaultdict(list)  # (annotator, face) -> ids
        self.faces_of: dict[str, set[str]] = defaultdict(set)
        self.annotators_of: dict[str, set[str]] = defaultdict(set)
        self.actions: dict[str, list[int]] = defaultdict(list)  # annotator -> non-undo ids
        self.judge_count: dict[str, int] = defaultdict(int)  # face -> annotators with a verdict
        self.last_id = 0
        for row in rows:
            self.apply(row)

    def apply(self, row: dict) -> None:
        if row["id"] in self.rows:
            return
        self.rows[row["id"]] = row
        self.last_id = max(self.last_id, row["id"])
        before = self.effective(row["annotator"], row["face_id"])
        if row["decision"] == "undo":
            self.superseded.add(row["supersedes"])
        else:
            self._add(row)
        after = self.effective(row["annotator"], row["face_id"])
        verdict = lambda r: r is not None and r["decision"] != "skip"  # noqa: E731
        self.judge_count[row["face_id"]] += verdict(after) - verdict(before)

    def _add(self, row: dict) -> None:
        self.per_pair[(row["annotator"], row["face_id"])].append(row["id"])
        self.faces_of[row["annotator"]].add(row["face_id"])
        self.annotators_of[row["face_id"]].add(row["annotator"])
        self.actions[row["annotator"]].append(row["id"])

    def effective(self, annotator: str, face_id: str) -> dict | None:
        for i in reversed(self.per_pair.get((annotator, face_id), ())):
            if i not in self.superseded:
                return self.rows[i]
        return None

    def decided_by(self, annotator: str) -> dict[str, dict]:
        """face_id -> the annotator's effective decision (skips included)."""
        out = {}
        for face in self.faces_of.get(annotator, ()):
            row = self.effective(annotator, face)
            if row is not None:
                out[face] = row
        return out

    def judges(self, face_id: str) -> dict[str, dict]:
        """annotator -> effective decision on a face, skips excluded."""
        out = {}
        for annotator in self.annotators_of.get(face_id, ()):
            row = self.effective(annotator, face_id)
            if row is not None and row["decision"] != "skip":
                out[annotator] = row
        return out

    def all_effective(self) -> list[dict]:
        out = []
        for (annotator, face), _ in self.per_pair.items():
            row = self.effective(annotator, face)
            if row is not None:
                out.append(row)
        return sorted(out, key=lambda r: r["id"])

    def last_action(self, annotator: str) -> list[dict]:
        """The rows an undo by this annotator cancels: their latest action still in effect (one
        pair decision, or every row of one grid confirmation)."""
        for i in reversed(self.actions.get(annotator, ())):
            if i in self.superseded:
                continue
            row = self.rows[i]
            if not row.get("batch_id"):
                return [row]
            return [
                self.rows[j]
                for j in self.actions[annotator]
                if j not in self.superseded and self.rows[j].get("batch_id") == row["batch_id"]
            ]
        return []
