"""Pack the few shared images the GPU benchmarks read, for a device machine that has no ``../shared``.

    .venv/bin/python benchmarks/device_pack.py            # writes .device_pack/ (git-ignored, ~5 MB)

Then, on a lent GPU machine, in one call (carry ``.device_pack``; see benchmarks/device_run.sh):

    bash benchmarks/device_run.sh

The pack holds, re-encoded as JPEG quality 85 with the longer side at most 640 px (boxes scaled to
match): the first 64 iCartoonFace val images (bench_detector's batch) and 64 CAVA Dexter's Laboratory
val frames with their rows of boxes.csv (bench_identity's crops), under the same paths as in
``../shared``, so ``TOONFACE_SHARED=.device_pack/shared`` points the benchmarks at it. It is a copy of
data that is not ours to redistribute: it stays git-ignored and only travels to the device machine.
"""
from __future__ import annotations

import argparse
import csv
import shutil
import sys
from pathlib import Path

import cv2

PROJECT = Path(__file__).resolve().parent.parent
SHARED = PROJECT.parent / "shared"
MAX_SIDE = 640


def shrink(src: Path, dst: Path) -> float:
    """Write ``src`` to ``dst`` at most MAX_SIDE px on its longer side (JPEG q85 for .jpg); return the scale."""
    image = cv2.imread(str(src))
    if image is None:
        raise ValueError(f"cannot read {src}")
    scale = min(1.0, MAX_SIDE / max(image.shape[:2]))
    if scale < 1:
        image = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    dst.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(dst), image, [cv2.IMWRITE_JPEG_QUALITY, 85])  # same name: boxes.csv rows still point at it
    return scale


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--shared", type=Path, default=SHARED)
    p.add_argument("--out", type=Path, default=PROJECT / ".device_pack")
    p.add_argument("--images", type=int, default=64)
    args = p.parse_args()
    shutil.rmtree(args.out, ignore_errors=True)
    shared_out = args.out / "shared" / "data"

    icf = args.shared / "data" / "icartoonface_det" / "images" / "val"
    for src in sorted(icf.glob("*.jpg"))[:args.images]:
        shrink(src, shared_out / "icartoonface_det" / "images" / "val" / src.name)

    dexter = args.shared / "data" / "cava" / "dexters_laboratory"
    with open(dexter / "boxes.csv") as f:
        reader = csv.DictReader(f)
        fields = reader.fieldnames
        rows = [r for r in reader if r["split"] == "val"]
    frames = sorted({r["image"] for r in rows})[:args.images]
    scales = {frame: shrink(dexter / frame, shared_out / "cava" / "dexters_laboratory" / frame) for frame in frames}
    with open(shared_out / "cava" / "dexters_laboratory" / "boxes.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        for r in rows:
            if r["image"] in scales:
                writer.writerow({**r, **{k: f"{float(r[k]) * scales[r['image']]:.1f}" for k in ("x1", "y1", "x2", "y2")}})
    size = sum(p.stat().st_size for p in args.out.rglob("*") if p.is_file())
    print(f"{args.out}: {sum(1 for p in args.out.rglob('*.jpg'))} images, {size / 2**20:.1f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
