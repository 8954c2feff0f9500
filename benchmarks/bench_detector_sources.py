"""The detector on every source of one role of the source split, one row per source and weights file.

    .venv/bin/python benchmarks/bench_detector_sources.py --role tune|test|train [--weights A --weights B]
                                                          [--source NAME] [--limit N] [--size PX]

Sources and roles: ``benchmarks/detection_data/sources.json`` (rebuild the cache first:
``benchmarks/detection_data/rebuild.py``). Each source's ``eval`` boxes are scored COCO-style
(``models.det_metrics``): AP50, AP[.5:.95], AP50 on faces big enough for the 100 px gate, and precision
and recall at the weights' operating threshold, with detection images/s (bf16 where the CPU computes it
natively). Several ``--weights`` are compared side by side in the same run. Settings are chosen on
``--role tune``; ``--role test`` is run once, at the end, and its figures reported as they come.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.detection_data.rebuild import DEFAULT_CACHE, sources, specs  # noqa: E402
from models.det_data import parse_source  # noqa: E402
from models.det_metrics import evaluate  # noqa: E402
from pipeline.evaluate.detector import detector_fn  # noqa: E402
from pipeline.evaluate.source_split import ROLES  # noqa: E402

COLUMNS = ("ap50", "ap", "gate_ap50", "precision", "recall", "images_per_s")


def score(weights: str | None, spec: str, size: int, limit: int | None, batch_size: int) -> dict:
    items = parse_source(spec)[:limit] if limit else parse_source(spec)
    detect, threshold, model_id = detector_fn("retinanet", weights, batch_size=batch_size, size=size)
    r = evaluate(detect, items, threshold, batch_size)
    return {
        "model_id": model_id,
        "images": r["images"],
        "faces": r["faces"],
        "ap50": r["ap50"],
        "ap": r["ap"],
        "gate_ap50": r["by_area"]["gate"]["ap50"],
        "gate_faces": r["by_area"]["gate"].get("faces"),
        "threshold": threshold,
        "precision": r["precision_at_threshold"],
        "recall": r["recall_at_threshold"],
        "images_per_s": r["images_per_s"],
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--role", choices=ROLES, required=True)
    p.add_argument("--weights", action="append", help="detector weights (repeatable; default: the shipped ones)")
    p.add_argument("--source", action="append", help="only this source (repeatable)")
    p.add_argument("--limit", type=int, help="first N images of each source (a quick look, not a figure)")
    p.add_argument("--size", type=int, default=0, help="letterbox side (default: each weights file's own)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    args = p.parse_args(argv)
    chosen = [e for e in sources() if e["role"] == args.role and "eval" in e["specs"]]
    chosen = [e for e in chosen if not args.source or e["name"] in args.source]
    if not chosen:
        print(f"no {args.role} source to score", file=sys.stderr)
        return 2
    rows = []
    print(f"{'source':<22} {'model':<38} " + " ".join(f"{c:>12}" for c in COLUMNS), flush=True)
    for entry in chosen:
        for weights in args.weights or [None]:
            row = {"source": entry["name"], "role": entry["role"], "weights": weights or "shipped"}
            row.update(score(weights, specs(entry, args.cache)["eval"], args.size, args.limit, args.batch_size))
            rows.append(row)
            figures = " ".join(f"{row[c]:>12.3f}" for c in COLUMNS)
            print(f"{entry['name']:<22} {row['model_id']:<38} {figures}", flush=True)
    print(json.dumps({"role": args.role, "limit": args.limit, "rows": rows}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
