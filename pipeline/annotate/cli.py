"""`toonface annotate serve | add-user | add-gold | merge | stats`."""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

# Each action imports what it needs when it runs: `toonface --help` and `annotate add-user` should not
# pay for the web app, pandas and the manifests.


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", required=True)

    p = sub.add_parser("serve", help="serve the verification page")
    p.add_argument("--data-root", default="data")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8765)
    p.add_argument(
        "--order",
        default="score-desc",
        choices=["score-desc", "score-asc", "margin", "random"],
        help="queue order: by pre-label score, smallest margin to the runner-up first, or a fixed shuffle "
        "(random: the faces judged are a fair sample, for prelabel_vs_verified)",
    )
    p.add_argument("--gold-rate", type=float, default=0.1, help="share of gold items mixed in (0 to 0.5)")
    p.add_argument("--overlap", type=int, default=1, help="annotators who judge each item (2 gives agreement)")
    p.add_argument("--grid-size", type=int, default=36, help="candidates per grid (24 to 48)")
    p.add_argument("--session-hours", type=float, default=12.0)
    p.add_argument("--merge-on-exit", action="store_true", help="publish the decisions when the server stops")

    p = sub.add_parser("add-user", help="create an annotator and print their login token")
    p.add_argument("name")
    p.add_argument("--data-root", default="data")
    p.add_argument("--rotate", action="store_true", help="give an existing annotator a new token (revokes the old)")

    p = sub.add_parser("add-gold", help="load gold answers from a CSV with columns face_id,identity")
    p.add_argument("file")
    p.add_argument("--data-root", default="data")

    p = sub.add_parser("merge", help="publish the decisions not yet published as a manifest version")
    p.add_argument("--data-root", default="data")

    p = sub.add_parser("stats", help="per-annotator counts, gold accuracy and agreement (JSON)")
    p.add_argument("--data-root", default="data")


def run(args) -> int:
    from data_manifest import ManifestError

    try:
        return ACTIONS[args.action](args)
    except (ValueError, ManifestError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def _serve(args) -> int:
    from pipeline.annotate.app import serve
    from pipeline.annotate.service import Settings

    settings = Settings(
        order=args.order,
        gold_rate=args.gold_rate,
        overlap=args.overlap,
        grid_size=args.grid_size,
        session_hours=args.session_hours,
    )
    serve(args.data_root, args.host, args.port, settings, args.merge_on_exit)
    return 0


def _add_user(args) -> int:
    from pipeline.annotate.db import AnnotationDB

    db = AnnotationDB(args.data_root)
    try:
        token = db.add_user(args.name, rotate=args.rotate)
    finally:
        db.close()
    print(token)
    print(
        f"annotator {args.name!r}: log in with this token (it is not stored and cannot be shown again)", file=sys.stderr
    )
    return 0


def _add_gold(args) -> int:
    from data_manifest import Manifest
    from pipeline.annotate.db import AnnotationDB

    with open(args.file, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        if not {"face_id", "identity"} <= set(reader.fieldnames or []):
            raise ValueError("the gold file needs the columns face_id,identity")
        rows = [(r["face_id"].strip(), r["identity"].strip()) for r in reader if r["face_id"].strip()]
    known = set(Manifest(args.data_root).read("faces", columns=["face_id"])["face_id"])
    unknown = [f for f, _ in rows if f not in known]
    if unknown:
        raise ValueError(f"{len(unknown)} face ids are not in the manifest, e.g. {unknown[0]!r}")
    db = AnnotationDB(args.data_root)
    try:
        n = db.add_gold(rows, source=Path(args.file).name)
    finally:
        db.close()
    print(f"{n} gold answers added")
    return 0


def _merge(args) -> int:
    from data_manifest import Manifest
    from pipeline.annotate.merge import merge_decisions, pending_labels

    pending = len(pending_labels(args.data_root))
    before = Manifest(args.data_root).latest_version()
    version = merge_decisions(args.data_root)
    if version == before:
        print(f"nothing to merge (manifest version {version})")
    else:
        print(f"{pending} label rows published as manifest version {version}")
    return 0


def _stats(args) -> int:
    from data_manifest import Manifest
    from pipeline.annotate.db import AnnotationDB
    from pipeline.annotate.log import DecisionLog
    from pipeline.annotate.stats import compute_stats
    from pipeline.identity.published import latest_calibration

    db = AnnotationDB(args.data_root)
    try:
        stats = compute_stats(DecisionLog(db.decisions()), db.users())
    finally:
        db.close()
    quality = latest_calibration(Manifest(args.data_root), "prelabel_vs_verified") or {}
    print(json.dumps({**stats, "prelabels": quality}, indent=1))
    return 0


ACTIONS = {"serve": _serve, "add-user": _add_user, "add-gold": _add_gold, "merge": _merge, "stats": _stats}
