"""Pre-labels end to end: `toonface ingest` of a test show's frames, with one typical image per named
character in the albums file, scored against the show's boxes and identities.

    .venv/bin/python benchmarks/bench_prelabel_ingest.py [--source flintstones] [--draws 3] \\
        [--weights models/weights/embedder.safetensors] [--weights NEW.safetensors]

The source is a CAVA-format identity source of `benchmarks/identity_data/sources.json` (frames with
boxes). Each draw picks, per named character, one of its boxed faces at random; that face, cut at
enlarged rate 1.0, is the character's typical image, and its frame is left out of the library. The other
frames are ingested as the album's stills with the pipeline's defaults (`--set embedder=WEIGHTS`), into a
fresh data root. A kept face matched to a boxed face (IoU >= 0.5) is scored: precision = pre-labels
naming the boxed character / pre-labelled faces that match a box; recall = the same / kept faces of named
characters. Faces of 'unknown' characters that get a pre-label count against precision.
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.identity_data.faces import DETECTION_CACHE  # noqa: E402
from benchmarks.identity_data.rebuild import SHARED, source  # noqa: E402
from data_manifest import Manifest  # noqa: E402
from models.crop import cut, enlarged_box  # noqa: E402
from pipeline.identity.embedding import DEFAULT_WEIGHTS  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
UNKNOWN = "unknown"


def boxed_frames(name: str) -> dict[Path, list[dict]]:
    """Each frame of the source's split with its boxes (x1, y1, x2, y2, identity)."""
    folder, split = source(name)["cava"].format(shared=SHARED, detection_cache=DETECTION_CACHE).rsplit(":", 1)
    frames: dict[Path, list[dict]] = {}
    with open(Path(folder) / "boxes.csv", newline="") as f:
        for row in csv.DictReader(f):
            if row["split"] == split:
                box = {k: float(row[k]) for k in ("x1", "y1", "x2", "y2")}
                frames.setdefault(Path(folder) / row["image"], []).append({**box, "identity": row["identity"]})
    return frames


def make_library(frames: dict[Path, list[dict]], rng: random.Random, root: Path) -> dict[str, Path]:
    """Stills and typical images under root, with albums.yaml; returns each character's typical frame."""
    named = sorted({b["identity"] for boxes in frames.values() for b in boxes} - {UNKNOWN})
    chosen: dict[str, Path] = {}
    (root / "refs").mkdir(parents=True)
    for character in named:
        frame = rng.choice(sorted(f for f, boxes in frames.items() if any(b["identity"] == character for b in boxes)))
        box = rng.choice([b for b in frames[frame] if b["identity"] == character])
        image = cv2.imread(str(frame))
        h, w = image.shape[:2]
        crop = cut(image, enlarged_box((box["x1"], box["y1"], box["x2"], box["y2"]), w, h, 1.0))
        cv2.imwrite(str(root / "refs" / f"{character}.png"), crop)
        chosen[character] = frame
    stills = root / "stills"
    stills.mkdir()
    for frame in frames:
        if frame not in chosen.values():
            shutil.copyfile(frame, stills / frame.name)
    characters = [{"name": c, "images": [f"refs/{c}.png"]} for c in named]
    album = {"id": "show", "name": "show", "stills": "stills", "characters": characters}
    (root / "albums.yaml").write_text(yaml.safe_dump({"albums": [album]}))
    return chosen


def iou(a: dict, b: dict) -> float:
    ix = max(0.0, min(a["x2"], b["x2"]) - max(a["x1"], b["x1"]))
    iy = max(0.0, min(a["y2"], b["y2"]) - max(a["y1"], b["y1"]))
    inter = ix * iy
    union = (a["x2"] - a["x1"]) * (a["y2"] - a["y1"]) + (b["x2"] - b["x1"]) * (b["y2"] - b["y1"]) - inter
    return inter / union if union > 0 else 0.0


def score(data_root: Path, frames: dict[Path, list[dict]]) -> dict:
    manifest = Manifest(data_root)
    faces = manifest.read("faces")
    assets = manifest.read("assets").drop_duplicates("asset_id").set_index("asset_id")
    by_name = {f.name: boxes for f, boxes in frames.items()}
    kept = faces[faces["status"] == "kept"]
    labelled = right = named = unknown_labelled = 0
    for _, face in kept.iterrows():
        boxes = by_name.get(Path(str(assets.loc[face["asset_id"], "source"])).name, [])
        best = max(boxes, key=lambda b: iou(face, b), default=None)
        if best is None or iou(face, best) < 0.5:
            continue
        prelabel = face["prelabel"] if isinstance(face["prelabel"], str) else None
        named += best["identity"] != UNKNOWN
        labelled += prelabel is not None
        right += prelabel == f"show/{best['identity']}"
        unknown_labelled += prelabel is not None and best["identity"] == UNKNOWN
    return {
        "kept_faces": len(kept),
        "kept_named_faces": named,
        "prelabelled": labelled,
        "right": right,
        "unknown_prelabelled": unknown_labelled,
        "precision": right / labelled if labelled else None,
        "recall": right / named if named else None,
    }


def ingest(library: Path, data_root: Path, weights: Path) -> None:
    command = [str(ROOT / ".venv" / "bin" / "toonface"), "ingest", "--library", str(library)]
    command += ["--albums", str(library / "albums.yaml"), "--data-root", str(data_root)]
    subprocess.run([*command, "--set", f"embedder={weights}"], check=True, capture_output=True)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--source", default="flintstones")
    p.add_argument("--weights", type=Path, action="append", help="repeatable (default: the shipped weights)")
    p.add_argument("--draws", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    frames = boxed_frames(args.source)
    rows = []
    for weights in args.weights or [DEFAULT_WEIGHTS]:
        for draw in range(args.draws):
            with tempfile.TemporaryDirectory() as tmp:
                make_library(frames, random.Random(args.seed + draw), Path(tmp) / "library")
                start = time.perf_counter()
                ingest(Path(tmp) / "library", Path(tmp) / "data", weights.resolve())
                row = {"weights": str(weights), "draw": draw, **score(Path(tmp) / "data", frames)}
                row["ingest_s"] = round(time.perf_counter() - start, 1)
            rows.append(row)
            print(json.dumps(row), flush=True)
        mine = [r for r in rows if r["weights"] == str(weights)]
        mean = {k: float(np.mean([r[k] for r in mine if r[k] is not None])) for k in ("precision", "recall")}
        print(f"{weights}: precision {mean['precision']:.3f}, recall {mean['recall']:.3f} over {len(mine)} draws")
    return 0


if __name__ == "__main__":
    sys.exit(main())
