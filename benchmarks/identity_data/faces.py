"""The face crops of every identity source, cut as the pipeline cuts them, for training and evaluating
the embedder by source.

A source's ``faces`` (sources.json) says where its faces are:

- ``faces``: its images are face crops already; used as they are;
- ``detect``: its images show whole characters; the shipped detector finds the faces, and the best one
  of each image at the detector's operating threshold is cut at enlarged rate 1.0 into
  ``.cache/identity_faces/<name>/<identity>/<image stem>.jpg`` (an image without one is left out and
  counted in ``summary.json`` there);
- ``cava``: frames with boxes and identities (``FOLDER:SPLIT`` of a CAVA-format folder), cut per box.

    python benchmarks/identity_data/faces.py [--only NAME]    # cut the ``detect`` sources' faces
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import cv2

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from benchmarks.identity_data.rebuild import DEFAULT_CACHE, ROOT, SHARED, images_by_identity, source_root, sources  # noqa: E402
from models.crop import cut, enlarged_box  # noqa: E402
from models.identity_data import Sample, cava_identity_crops  # noqa: E402

FACES_CACHE = ROOT / ".cache" / "identity_faces"
DETECTION_CACHE = ROOT / ".cache" / "detection_data"
DETECTOR_WEIGHTS = ROOT / "models" / "weights" / "detector.safetensors"


def samples(entry: dict, cache: Path = DEFAULT_CACHE, faces_cache: Path = FACES_CACHE) -> list[Sample]:
    """The source's labelled faces, sorted by identity then path (CAVA 'unknown' faces included)."""
    if entry["faces"] == "cava":
        folder, split = entry["cava"].format(shared=SHARED, detection_cache=DETECTION_CACHE).rsplit(":", 1)
        found = cava_identity_crops(folder, split, skip_identities=())
    else:
        root = source_root(entry, cache) if entry["faces"] == "faces" else faces_cache / entry["name"]
        found = [Sample(str(p), identity) for identity, paths in images_by_identity(root).items() for p in paths]
    return sorted(found, key=lambda s: (s.identity, s.path, s.box or ()))


def cut_faces(entry: dict, detector, cache: Path = DEFAULT_CACHE, faces_cache: Path = FACES_CACHE) -> dict:
    """Cut the best face of every image of a ``detect`` source; returns the summary written beside them."""
    out = faces_cache / entry["name"]
    shutil.rmtree(out, ignore_errors=True)
    without = 0
    for identity, paths in images_by_identity(source_root(entry, cache)).items():
        images = [cv2.imread(str(p), cv2.IMREAD_COLOR) for p in paths]
        readable = [(p, im) for p, im in zip(paths, images) if im is not None]
        for (path, image), boxes in zip(readable, detector.detect_many([im for _, im in readable], batch_size=8)):
            if not len(boxes):
                without += 1
                continue
            h, w = image.shape[:2]
            crop = cut(image, enlarged_box(tuple(float(v) for v in boxes[0][:4]), w, h, 1.0))
            target = out / identity / f"{path.stem}.jpg"
            target.parent.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(target), crop, [cv2.IMWRITE_JPEG_QUALITY, 95])
    found = images_by_identity(out)
    summary = {
        "detector": detector.model_id,
        "identities": len(found),
        "faces": sum(len(v) for v in found.values()),
        "images without a face": without,
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--only", action="append", help="cut only this source's faces (repeatable)")
    p.add_argument("--weights", type=Path, default=DETECTOR_WEIGHTS)
    args = p.parse_args(argv)
    from models.detector import load_detector  # torch: only when faces are cut

    detector = load_detector(args.weights)
    for entry in sources():
        if entry["faces"] != "detect" or (args.only and entry["name"] not in args.only):
            continue
        print(f"{entry['name']:<30} {json.dumps(cut_faces(entry, detector))}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
