"""Cartoon-face box data from public repositories, rebuilt into a git-ignored cache.

`sources.json` lists every source: repository and commit, licence, style, its role in the source split
(train / tune / test, `pipeline.evaluate.source_split`) and where its images and boxes are. `rebuild`
turns each into one folder the detector tools read as ``cava:FOLDER[:SPLIT]``:

    .cache/detection_data/<name>/images/<split>/<file>
    .cache/detection_data/<name>/boxes.csv        split,image,x1,y1,x2,y2,identity (pixels)
    .cache/detection_data/<name>/summary.json     images and boxes per split, what was excluded and why

    python benchmarks/detection_data/rebuild.py [--mirror-root /work/.mirror] [--cache DIR] [--only NAME]

Files come from a local git mirror (`<mirror-root>/<owner>+<name>/repo`) when there is one, else from
GitHub's tarball of the recorded commit. Sources in ../shared are read in place, not copied. Sources are
rebuilt shared first, then test, tune, train: a picture that repeats one of an earlier source is dropped
from the later one, so test pictures stay whole. Then the split is checked (not with ``--only``).
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from benchmarks.detection_data.formats import READERS, Box  # noqa: E402
from benchmarks.public_repos import extract, rebuild_command  # noqa: E402
from models.det_data import parse_source  # noqa: E402
from pipeline.evaluate.source_split import PictureIndex, Source, SourceSplit, picture  # noqa: E402

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
DEFAULT_CACHE = ROOT / ".cache" / "detection_data"
SHARED = Path(os.environ.get("TOONFACE_SHARED", ROOT.parent / "shared"))


def sources() -> list[dict]:
    return json.loads((HERE / "sources.json").read_text())["sources"]


def specs(entry: dict, cache: Path = DEFAULT_CACHE) -> dict[str, str]:
    """The source's box specs for the detector tools (``models.det_data.parse_source``), by use:
    ``train`` (what training reads) and ``eval`` (what the benchmark scores)."""
    where = {"shared": str(SHARED), "cache": str(cache / entry["name"])}
    return {use: spec.format(**where) for use, spec in entry["specs"].items()}


def _extract(entry: dict, mirror_root: Path, into: Path) -> Path:
    """The repository's files at the recorded commit under ``into`` (only the paths the source reads)."""
    paths = sorted({part[k] for part in entry["parts"] for k in ("root", "annotations", "labels", "json") if k in part})
    extract(entry["repo"], entry["commit"], paths, into, mirror_root)
    return into


def _write_source(entry: dict, checkout: Path, out: Path) -> tuple[list[Box], int]:
    """(every part's boxes, images without a face), the boxed images copied to out/images/<split>/ under
    their new names. Images without a face are left out: boxes.csv lists boxes."""
    rows = [box for part in entry["parts"] for box in READERS[part["format"]](checkout, part)]
    boxes = [b for b in rows if b.has_box]
    negatives = len({b.image for b in rows} - {b.image for b in boxes})
    for image in {(b.split, b.image, b.source_path) for b in boxes}:
        target = out / image[1]
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(image[2], target)
    return boxes, negatives


def _csv(boxes: list[Box], path: Path) -> None:
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["split", "image", "x1", "y1", "x2", "y2", "identity"])
        for b in sorted(boxes, key=lambda b: (b.split, b.image, b.x1, b.y1)):
            w.writerow([b.split, b.image, round(b.x1, 1), round(b.y1, 1), round(b.x2, 1), round(b.y2, 1), b.label])


def _summary(boxes: list[Box], excluded: dict) -> dict:
    per_split: dict[str, dict] = {}
    for b in boxes:
        s = per_split.setdefault(b.split, {"images": set(), "boxes": 0})
        s["images"].add(b.image)
        s["boxes"] += 1
    return {
        "splits": {k: {"images": len(v["images"]), "boxes": v["boxes"]} for k, v in sorted(per_split.items())},
        "excluded": excluded,
    }


class SeenPictures:
    """The pictures of the sources rebuilt so far (shared ones first, then test, tune). Near-identical
    frames within one source stay: a source is kept as published."""

    def __init__(self):
        self.index = PictureIndex()

    def add_source(self, entry: dict) -> None:
        for spec in specs(entry).values():
            for item in parse_source(spec):
                self.seen_before(item.path, entry["name"])

    def seen_before(self, path: Path, source: str) -> bool:
        """True when the picture repeats one of another source; else remembers it."""
        pic = picture(path)
        if pic is None:
            return False
        if any(owner != source for owner, _ in self.index.matches(pic)):
            return True
        self.index.add(pic, source, path)
        return False


def rebuild_one(entry: dict, mirror_root: Path, cache: Path, seen: SeenPictures) -> dict:
    """Rebuild one source; pictures that repeat one of an earlier source are dropped."""
    out = cache / entry["name"]
    shutil.rmtree(out, ignore_errors=True)
    checkout = _extract(entry, mirror_root, cache / ".checkout" / entry["name"])
    try:
        boxes, negatives = _write_source(entry, checkout, out)
    finally:
        shutil.rmtree(checkout, ignore_errors=True)
    repeats = set()
    for image in sorted({b.image for b in boxes}):
        if seen.seen_before(out / image, entry["name"]):
            repeats.add(image)
            (out / image).unlink()
    kept = [b for b in boxes if b.image not in repeats]
    excluded = dict(entry.get("excluded", {}))
    if negatives:
        excluded["images without a face box"] = negatives
    if repeats:
        excluded["pictures repeating one of another source"] = len(repeats)
    _csv(kept, out / "boxes.csv")
    summary = _summary(kept, excluded)
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def check_split(cache: Path = DEFAULT_CACHE, images: bool = True) -> None:
    """Refuse a split that leaks (see ``pipeline.evaluate.source_split``)."""
    split = []
    for e in sources():
        paths: set[Path] = set()
        for spec in specs(e, cache).values() if images else ():
            paths.update(item.path for item in parse_source(spec))
        split.append(Source(e["name"], e["role"], e.get("repo", ""), tuple(sorted(paths))))
    SourceSplit(split).check(images=images)


def main(argv=None) -> int:
    seen = SeenPictures()
    for entry in sources():
        if entry.get("shared"):
            seen.add_source(entry)
    return rebuild_command(
        argv,
        __doc__.split("\n\n")[0],
        DEFAULT_CACHE,
        check_split,
        lambda entry, mirror_root, cache: rebuild_one(entry, mirror_root, cache, seen),
        lambda: [e for e in sources() if not e.get("shared")],
    )


if __name__ == "__main__":
    sys.exit(main())
