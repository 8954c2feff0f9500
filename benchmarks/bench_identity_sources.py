"""The embedder by source: identification, verification and pre-labelling on each identity source of a
role, for one or more weights side by side in one run.

    .venv/bin/python benchmarks/bench_identity_sources.py --role test \\
        --weights models/weights/embedder.safetensors [--weights NEW.safetensors] [--source NAME ...]

Sources: `benchmarks/identity_data/sources.json` (rebuild them with `identity_data/rebuild.py`, then cut
the faces of whole-character sources with `identity_data/faces.py`). Each source is one album. Per
source and weights, with `pipeline.evaluate.embedder.evaluate`:

- identification: rank-1 with one gallery image per identity (CAVA 'unknown' faces as distractors);
- verification: hard-mined negative pairs, 10 folds: accuracy, AUC, TAR at FAR 0.01;
- pre-labelling at `--prelabel-threshold` (the shipped 0.6) with one typical image per character,
  over `--draws` random choices of it, under the pipeline's defaults (reference and candidate views,
  album mean, within album): mean precision and recall;
- embeddings per second (plain, batch 64).

Sources with fewer than 2 identities are skipped. The last line is the mean over the sources scored.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.identity_data.faces import samples  # noqa: E402
from benchmarks.identity_data.rebuild import source, sources  # noqa: E402
from models.embedder import load_embedder  # noqa: E402
from pipeline.evaluate.embedder import UNKNOWN, evaluate  # noqa: E402
from pipeline.evaluate.prelabel import PRELABEL_THRESHOLD  # noqa: E402
from pipeline.identity.embedding import DEFAULT_WEIGHTS  # noqa: E402


def score_source(name: str, model, args) -> dict | None:
    faces = samples(source(name))
    if args.per_identity:
        faces = first_per_identity(faces, args.per_identity)
    labels = [s.identity for s in faces]
    unknown = sorted({lab for lab in labels if lab.rsplit("/", 1)[-1] == UNKNOWN})
    if len(set(labels) - set(unknown)) < 2:
        return None
    images = [s.load() for s in faces]
    start = time.perf_counter()
    plain = model.embed(images, batch_size=64)
    per_second = len(images) / (time.perf_counter() - start)
    views = model.embed_views(images, 64, plain=plain)
    result = evaluate(
        plain,
        labels,
        unknown_labels=unknown,
        seed=args.seed,
        prelabel_threshold=args.prelabel_threshold,
        reference_draws=args.draws,
        reference_views=views,
        candidate_views=views,
        album_mean=True,
        albums=[name] * len(faces),
        within_album=True,
    )
    ident, verif = result["identification"], result["verification"]
    draws = result["prelabel"].get("over_reference_draws", {})
    return {
        "source": name,
        "faces": len(faces),
        "identities": len(set(labels) - set(unknown)),
        "rank1": ident["rank1"],
        "verification_accuracy": verif.get("accuracy"),
        "auc": verif.get("auc"),
        "tar_at_far_0.01": (verif.get("tar_at_far") or {}).get("0.01"),
        "prelabel_precision": draws.get("precision_mean"),
        "prelabel_recall": draws.get("recall_mean"),
        "embeddings_per_s": round(per_second, 1),
    }


def first_per_identity(faces: list, n: int) -> list:
    """The first n faces of each identity (quick runs)."""
    kept, count = [], {}
    for face in faces:
        count[face.identity] = count.get(face.identity, 0) + 1
        if count[face.identity] <= n:
            kept.append(face)
    return kept


def _line(row: dict) -> str:
    def f(v):
        return "  -  " if v is None else f"{v:.3f}"

    return (
        f"rank-1 {f(row['rank1'])} | verification acc {f(row['verification_accuracy'])} AUC {f(row['auc'])} "
        f"TAR@0.01 {f(row['tar_at_far_0.01'])} | pre-label P {f(row['prelabel_precision'])} "
        f"R {f(row['prelabel_recall'])} | {row['embeddings_per_s']:.1f} embeddings/s"
    )


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--role", default="test", choices=["train", "tune", "test"])
    p.add_argument("--source", nargs="+", help="these sources (default: every source of --role)")
    p.add_argument("--weights", type=Path, action="append", help="repeatable (default: the shipped weights)")
    p.add_argument("--draws", type=int, default=20)
    p.add_argument("--prelabel-threshold", type=float, default=PRELABEL_THRESHOLD)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--per-identity", type=int, default=0, help="only the first N faces of each identity (0: all)")
    args = p.parse_args(argv)
    names = args.source or [e["name"] for e in sources() if e["role"] == args.role]
    rows = []
    for weights in args.weights or [DEFAULT_WEIGHTS]:
        model, meta = load_embedder(weights)
        print(f"== {meta['model_id']} ({weights})", flush=True)
        for name in names:
            row = score_source(name, model, args)
            if row is None:
                print(f"  {name:<30} skipped: fewer than 2 identities", flush=True)
                continue
            rows.append({"model_id": meta["model_id"], **row})
            print(f"  {name:<30} {row['faces']:>5} faces, {row['identities']:>3} ids | {_line(row)}", flush=True)
        mine = [r for r in rows if r["model_id"] == meta["model_id"]]
        keys = [k for k in mine[0] if k not in ("model_id", "source", "faces", "identities")] if mine else []
        known = {k: [r[k] for r in mine if r[k] is not None] for k in keys}
        mean = {k: float(np.mean(v)) if v else None for k, v in known.items()}
        print(f"  {'mean over ' + str(len(mine)) + ' sources':<47} | {_line(mean)}", flush=True)
    print(json.dumps(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
