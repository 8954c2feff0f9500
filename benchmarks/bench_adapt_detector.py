"""Learning curve of ``toonface adapt-detector`` on a show the detector never trained on.

    .venv/bin/python benchmarks/bench_adapt_detector.py [--pool flintstones_frames] [--eval flintstones]
                                                         [--frames 0 25 50 100 200] [--weights FILE]

For each N, a seeded random N frames of the pool source (its ``train`` boxes) adapt the weights
(``models.adapt_detector``, the command's own recipe), then the adapted weights are scored on the eval
source (a different split of the same show, whose repeated pictures the rebuild removed from the pool):
gate-size AP50, AP50, precision and recall at the operating threshold, and the minutes adapting took.
N = 0 is the weights as they are. Both sources come from ``benchmarks/detection_data`` (rebuild first).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.bench_detector_sources import score  # noqa: E402
from benchmarks.detection_data.rebuild import DEFAULT_CACHE, sources, specs  # noqa: E402
from models.adapt_detector import SHIPPED_WEIGHTS, adapt, choose_frames  # noqa: E402
from models.det_data import parse_source  # noqa: E402


def _entry(name: str) -> dict:
    found = [e for e in sources() if e["name"] == name]
    if not found:
        raise SystemExit(f"no source {name!r} in benchmarks/detection_data/sources.json")
    return found[0]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--pool", default="flintstones_frames", help="source whose train frames adapt the detector")
    p.add_argument("--eval", default="flintstones", help="source scored after adapting")
    p.add_argument("--frames", type=int, nargs="+", default=[0, 25, 50, 100, 200])
    p.add_argument("--weights", default=str(SHIPPED_WEIGHTS))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    args = p.parse_args(argv)
    pool = parse_source(specs(_entry(args.pool), args.cache)["train"])
    eval_spec = specs(_entry(args.eval), args.cache)["eval"]
    rows = []
    print(f"{'frames':>6} {'steps':>6} {'minutes':>8} {'gate_ap50':>10} {'ap50':>8} {'precision':>10} {'recall':>8}")
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.frames:
            weights, steps, t0 = args.weights, 0, time.time()
            if n:
                weights = str(Path(tmp) / f"adapted_{n}.safetensors")
                result = adapt(
                    choose_frames(pool, n, args.seed),
                    init_detector=args.weights,
                    out=weights,
                    seed=args.seed,
                    device="cpu",
                    log=lambda m: None,
                )
                steps = result["steps"]
            minutes = (time.time() - t0) / 60
            row = {"frames": n, "steps": steps, "minutes": minutes, **score(weights, eval_spec, 0, None, 8)}
            rows.append(row)
            print(
                f"{n:>6} {steps:>6} {minutes:>8.1f} {row['gate_ap50']:>10.3f} {row['ap50']:>8.3f} "
                f"{row['precision']:>10.3f} {row['recall']:>8.3f}",
                flush=True,
            )
    print(json.dumps({"pool": args.pool, "eval": args.eval, "seed": args.seed, "rows": rows}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
