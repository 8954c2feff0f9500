"""Decisions -> the next manifest version: the `labels` table.

Per (face, identity) the effective decisions of all annotators (gold items and skips left out)
vote: `same` verifies the proposed identity, `different` rejects it, a re-label verifies the
picked identity and rejects the proposed one. The majority gives the verdict (a tie is left
unpublished until someone else decides). A row's key is (face_id, identity, decision_id), the
decision_id being that of the latest decision on the winning side: a later agreeing or
overturning decision publishes a new row, and the latest row of a (face, identity) is the label
in force (`pipeline.identity.labels.latest_labels`). Publishing is idempotent: rows already in
the table are not written again, so merging twice publishes nothing new."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import secrets
from collections import defaultdict
from pathlib import Path

import pandas as pd

from data_manifest import Manifest
from pipeline.annotate.catalogue import random_rank
from pipeline.annotate.db import AnnotationDB, db_path
from pipeline.annotate.log import DecisionLog
from pipeline.identity.published import faces_with_current_prelabels, latest_calibration
from pipeline.identity.quality import prelabel_quality
from pipeline.provenance import git_commit


def _ts(value: str) -> dt.datetime:
    return dt.datetime.fromisoformat(value).astimezone(dt.UTC)


def effective_labels(log: DecisionLog) -> tuple[list[dict], int]:
    """All label rows the decisions support now, and the number of (face, identity) ties."""
    votes: dict[tuple[str, str], dict[str, list[dict]]] = defaultdict(lambda: {"verified": [], "rejected": []})
    for row in log.all_effective():
        if row["decision"] == "skip" or row["gold_identity"]:
            continue
        if row["decision"] == "same":
            votes[(row["face_id"], row["proposed"])]["verified"].append(row)
        elif row["decision"] == "different":
            votes[(row["face_id"], row["proposed"])]["rejected"].append(row)
        elif row["decision"] == "relabel":
            votes[(row["face_id"], row["identity"])]["verified"].append(row)
            votes[(row["face_id"], row["proposed"])]["rejected"].append(row)
    out, ties = [], 0
    for (face_id, identity), side in votes.items():
        if len(side["verified"]) == len(side["rejected"]):
            ties += 1
            continue
        verdict = "verified" if len(side["verified"]) > len(side["rejected"]) else "rejected"
        winners = side[verdict]
        last = max(winners, key=lambda r: r["id"])
        out.append(
            {
                "face_id": face_id,
                "identity": identity,
                "verdict": verdict,
                "annotators": json.dumps(sorted({r["annotator"] for r in winners})),
                "decided_at": _ts(last["decided_at"]),
                "decision_id": last["uid"],
                "embedder": last["embedder"],
                "proposed": last["proposed"],
                "prelabel_score": last["score"],
                "votes": len(side["verified"]) + len(side["rejected"]),
            }
        )
    out.sort(key=lambda r: (r["decided_at"], r["face_id"], r["identity"]))
    return out, ties


def _decision_log(data_root: str | Path) -> DecisionLog:
    if not db_path(data_root).exists():
        return DecisionLog()
    db = AnnotationDB(data_root)
    try:
        return DecisionLog(db.decisions())
    finally:
        db.close()


def random_order_faces(data_root: str | Path) -> set[str]:
    """The fair sample of the pre-labels, the only one a setting is suggested from: a prefix of the
    `random` queue's fixed shuffle in which every face has a verdict. The other orders show the surest
    (or the least sure) pre-labels first, and grids one identity at a time, so the faces they judge
    are no sample; the shuffle picks faces by hash, whatever their content.

    The prefix reaches as far as anyone has judged one at a time from a queue in random order, and
    holds every face in it with a verdict however that verdict was given: the random queue passes
    over faces already judged in score order, and a sample without them would lack the surest ones.
    It stops before the first face skipped in random order that no one has judged since: a skipped
    face comes back after all the others, so annotators who stop early leave out the faces they
    hesitated on, the hard ones. Gold items never count."""
    log = _decision_log(data_root)
    rows = [r for r in log.all_effective() if not r["gold_identity"]]
    rank = {r["face_id"]: random_rank(r["face_id"]) for r in rows}
    shuffled = [r for r in rows if r["mode"] == "pair" and r["queue_order"] == "random"]
    reached = max((rank[r["face_id"]] for r in shuffled if r["decision"] != "skip"), default=None)
    if reached is None:
        return set()
    end = min(
        (rank[r["face_id"]] for r in shuffled if r["decision"] == "skip" and not log.judge_count.get(r["face_id"])),
        default=None,
    )
    return {
        r["face_id"]
        for r in rows
        if r["decision"] != "skip" and rank[r["face_id"]] <= reached and (end is None or rank[r["face_id"]] < end)
    }


def pending_labels(data_root: str | Path) -> list[dict]:
    """Label rows the decisions support that no manifest version holds yet."""
    rows, _ = effective_labels(_decision_log(data_root))
    published = Manifest(data_root).existing_keys("labels")
    return [r for r in rows if (r["face_id"], r["identity"], r["decision_id"]) not in published]


def merge_decisions(data_root: str | Path) -> int:
    """Publish the decisions not yet published as a new manifest version (its `labels` rows).
    Returns that version, or the latest version unchanged when there is nothing to publish."""
    manifest = Manifest(data_root)
    manifest.recover()  # a merge killed mid-publish holds rows that are not pending any more
    latest = manifest.resolve_version()  # raises when nothing is published yet
    rows = pending_labels(data_root)
    if not rows:
        return int(latest["manifest_version"])
    started = dt.datetime.now(dt.UTC)
    run_id = f"labels-{started.strftime('%Y%m%dT%H%M%S')}-{secrets.token_hex(3)}"
    for row in rows:
        row["run_id"] = run_id
    staging = manifest.staging(run_id)
    staging.write("labels", "decisions", rows)
    config = {"stage": "annotate-merge", "rule": "majority of effective decisions per face and identity; ties wait"}
    embedders = sorted({r["embedder"] for r in rows if r["embedder"]})
    counts = {
        "labels": len(rows),
        "labels_verified": sum(r["verdict"] == "verified" for r in rows),
        "labels_rejected": sum(r["verdict"] == "rejected" for r in rows),
        "faces_labelled": len({r["face_id"] for r in rows}),
    }
    run_info = {
        "flow_run_id": "",
        "started_at": started,
        "git_commit": git_commit(),
        "config_hash": hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:16],
        "config": config,
        "model_ids": {"embedder": ",".join(embedders)} if embedders else {},
        "counts": counts,
        "library": str(latest["library"] or ""),
        "calibration": _calibration(manifest, rows, random_order_faces(data_root)),
    }
    return manifest.publish(staging, run_info)


def _calibration(manifest: Manifest, new_rows: list[dict], random_sample: set[str]) -> dict:
    """How the pre-labels in force compare with the labels once these rows are in (the same report
    an ingest run writes), at the pre-label threshold and margin of the latest ingest run."""
    threshold = latest_calibration(manifest, "prelabel_threshold")
    if threshold is None:
        return {}
    min_margin = latest_calibration(manifest, "prelabel_min_margin") or 0.0
    labels = pd.concat([manifest.read("labels"), pd.DataFrame(new_rows)], ignore_index=True)
    current = faces_with_current_prelabels(
        manifest, columns=["face_id", "prelabel", "prelabel_score", "prelabel_margin"]
    )
    return {
        "prelabel_threshold": threshold,
        "prelabel_min_margin": min_margin,
        "prelabel_vs_verified": prelabel_quality(current, labels, threshold, min_margin, random_sample),
    }
