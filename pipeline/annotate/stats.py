"""Annotator statistics over the decision log: decisions and time per decision, accuracy on gold
items, and agreement (with Cohen's kappa) between annotators who judged the same items."""

from __future__ import annotations

import statistics
from collections import defaultdict
from itertools import combinations

from pipeline.annotate.log import DecisionLog


def agrees(row: dict) -> bool:
    """A decision as same/different about the proposed identity (a re-label is 'different')."""
    return row["decision"] == "same"


def gold_correct(row: dict) -> bool:
    truth = row["gold_identity"]
    if row["decision"] == "same":
        return row["proposed"] == truth
    if row["decision"] == "different":
        return row["proposed"] != truth
    return row["decision"] == "relabel" and row["identity"] == truth


def cohen_kappa(a: list[bool], b: list[bool]) -> float | None:
    n = len(a)
    if n == 0:
        return None
    po = sum(x == y for x, y in zip(a, b)) / n
    pa, pb = sum(a) / n, sum(b) / n
    pe = pa * pb + (1 - pa) * (1 - pb)
    if pe >= 1.0:
        return 1.0 if po == 1.0 else None
    return (po - pe) / (1 - pe)


def compute_stats(log: DecisionLog, users: list[str]) -> dict:
    """Per annotator: decisions, time per decision, accuracy on gold items; per pair of
    annotators who judged the same items: agreement and Cohen's kappa over same/different."""
    effective = [r for r in log.all_effective() if r["decision"] != "skip"]
    by_annotator: dict[str, list[dict]] = defaultdict(list)
    for r in effective:
        by_annotator[r["annotator"]].append(r)
    undos = defaultdict(int)
    skips = defaultdict(int)
    for r in log.rows.values():
        if r["decision"] == "undo":
            undos[r["annotator"]] += 1
    for r in log.all_effective():
        if r["decision"] == "skip":
            skips[r["annotator"]] += 1
    annotators = []
    for name in sorted(set(users) | set(by_annotator)):
        rows = by_annotator.get(name, [])
        gold = [r for r in rows if r["gold_identity"]]
        times = [r["time_ms"] for r in rows if r["time_ms"] is not None and r["mode"] == "pair"]
        correct = sum(gold_correct(r) for r in gold)
        annotators.append(
            {
                "annotator": name,
                "decisions": len(rows),
                "same": sum(r["decision"] == "same" for r in rows),
                "different": sum(r["decision"] == "different" for r in rows),
                "relabel": sum(r["decision"] == "relabel" for r in rows),
                "skip": skips[name],
                "undo": undos[name],
                "median_ms": statistics.median(times) if times else None,
                "gold_judged": len(gold),
                "gold_correct": correct,
                "gold_accuracy": correct / len(gold) if gold else None,
            }
        )
    per_item: dict[tuple[str, str], dict[str, bool]] = defaultdict(dict)
    for r in effective:
        per_item[(r["face_id"], r["proposed"])][r["annotator"]] = agrees(r)
    pairs = []
    names = sorted(by_annotator)
    for a, b in combinations(names, 2):
        both = [(v[a], v[b]) for v in per_item.values() if a in v and b in v]
        if not both:
            continue
        xa, xb = [x for x, _ in both], [y for _, y in both]
        pairs.append(
            {
                "a": a,
                "b": b,
                "items": len(both),
                "agreement": sum(x == y for x, y in both) / len(both),
                "kappa": cohen_kappa(xa, xb),
            }
        )
    return {"annotators": annotators, "pairs": pairs}
