"""Pack the few shared images the GPU benchmarks read, for a device machine that has no ``../shared``.

    .venv/bin/python benchmarks/device_pack.py            # writes .device_pack/ (git-ignored, ~5 MB)

Then, on a lent GPU machine, in one call (carry ``.device_pack``; see benchmarks/device_run.sh):

    bash benchmarks/device_run.sh

The pack holds, re-encoded as JPEG quality 85 with the longer side at most 640 px (boxes scaled to
match): the first 64 iCartoonFace val images (bench_detector's batch) and 64 CAVA Dexter's Laboratory
val frames with their rows of boxes.csv (bench_identity's crops), under the same paths as in
``../shared``, so ``TOONFACE_SHARED=.device_pack/shared`` points the benchmarks at it. It is a copy of
data that is not ours to redistribute: it stays git-ignored and only travels to the device machine.

``--train`` packs the detector's GPU training data instead (``.device_train/``, see
benchmarks/device_train.sh): every iCartoonFace training image, and every 4th CAVA training frame of
each show (Dexter's Laboratory and Scooby-Doo: 250 each, about 13% of the pack's images, the CAVA share of
the CPU stages' mixes, so the fine-tune keeps seeing broadcast frames and their looser head boxes),
as WebP quality 75 with YOLO labels (relative boxes hold at any scale; the CAVA ``boxes.csv`` rows
are converted), at the largest side that fits what a call may carry beside the working tree with the
embedder's weights left out of it (that call does not need them): about 36 MB, so a little under
384 px on the longer side (iCartoonFace's own are at most 640 px, CAVA's 480).
"""

from __future__ import annotations

import argparse
import csv
import random
import shutil
import subprocess
import sys
from pathlib import Path

import cv2

PROJECT = Path(__file__).resolve().parent.parent
SHARED = PROJECT.parent / "shared"
sys.path.insert(0, str(PROJECT))  # run from anywhere without install
from models.det_data import read_cava  # noqa: E402

MAX_SIDE = 640


def read_shrunk(src: Path, side: int):
    """(``src`` at most ``side`` px on its longer side, the scale applied)."""
    image = cv2.imread(str(src))
    if image is None:
        raise ValueError(f"cannot read {src}")
    scale = min(1.0, side / max(image.shape[:2]))
    if scale < 1:
        image = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    return image, scale


def shrink(src: Path, dst: Path) -> float:
    """Write ``src`` to ``dst`` at most MAX_SIDE px on its longer side (JPEG q85 for .jpg); return the scale."""
    image, scale = read_shrunk(src, MAX_SIDE)
    dst.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(dst), image, [cv2.IMWRITE_JPEG_QUALITY, 85])  # same name: boxes.csv rows still point at it
    return scale


# What one device call may carry (its limit), and what the training call leaves out of the working tree.
CALL_LIMIT_BYTES = 64 * 2**20
LEFT_OUT_FOR_TRAINING = ("models/weights/embedder.safetensors",)
TRAIN_SIDES = (512, 448, 416, 384, 368, 352, 336, 320, 288, 256)


def travelling_tree_bytes(left_out=LEFT_OUT_FOR_TRAINING) -> int:
    """Bytes of the files a device call sends (tracked, and untracked but not ignored), less `left_out`."""
    names = (
        subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=PROJECT,
            check=True,
            capture_output=True,
        )
        .stdout.decode()
        .split("\0")
    )
    files = {PROJECT / n for n in names if n and n not in left_out}
    return sum(f.stat().st_size for f in files if f.is_file())


def webp(src: Path, side: int) -> bytes:
    """``src`` at most ``side`` px on its longer side, as WebP quality 75."""
    image, _ = read_shrunk(src, side)
    ok, data = cv2.imencode(".webp", image, [cv2.IMWRITE_WEBP_QUALITY, 75])
    if not ok:
        raise ValueError(f"cannot encode {src}")
    return data.tobytes()


CAVA_SHOWS = ("dexters_laboratory", "scooby_doo")
CAVA_EVERY = 4


def training_sources(shared: Path) -> list[tuple[Path, str, Path | list]]:
    """(image, name in the pack, its YOLO label file or its pixel boxes) for every image the pack holds."""
    icf = shared / "data" / "icartoonface_det"
    sources = [
        (src, src.stem, icf / "labels" / "train" / f"{src.stem}.txt")
        for src in sorted((icf / "images" / "train").glob("*.jpg"))
    ]
    for show in CAVA_SHOWS:
        boxes_csv = shared / "data" / "cava" / show / "boxes.csv"
        if boxes_csv.exists():
            for boxed in read_cava(boxes_csv, split="train")[::CAVA_EVERY]:  # sorted by image name
                sources.append((boxed.path, f"cava_{show}_{boxed.path.stem}", list(boxed.boxes)))
    return sources


def yolo_lines(boxes: list, width: int, height: int) -> str:
    """Pixel ``x1, y1, x2, y2`` boxes as YOLO label lines (class 0, centre and size relative to the image)."""
    return "".join(
        f"0 {(x1 + x2) / 2 / width:.6f} {(y1 + y2) / 2 / height:.6f} {(x2 - x1) / width:.6f} {(y2 - y1) / height:.6f}\n"
        for x1, y1, x2, y2 in boxes
    )


def pack_training(shared: Path, out: Path, budget: int) -> int:
    """Write the detector's training images (``training_sources``) under `out` in at most `budget` bytes,
    at the largest side of TRAIN_SIDES that fits (judged on a sample of 200, then checked on the whole).
    Returns the side."""
    sources = training_sources(shared)
    sample = random.Random(0).sample(sources, min(200, len(sources)))
    for side in TRAIN_SIDES:
        estimate = sum(len(webp(src, side)) for src, _, _ in sample) / len(sample) * len(sources)
        if estimate > budget * 0.97:
            continue
        shutil.rmtree(out, ignore_errors=True)
        (out / "images").mkdir(parents=True)
        (out / "labels").mkdir()
        written = 0
        for src, name, label in sources:
            data = webp(src, side)
            (out / "images" / f"{name}.webp").write_bytes(data)
            written += len(data)
            if isinstance(label, list):  # CAVA pixel boxes: relative to the original frame's size
                height, width = cv2.imread(str(src)).shape[:2]
                text = yolo_lines(label, width, height)
            else:
                text = label.read_text() if label.exists() else ""
            if text:
                (out / "labels" / f"{name}.txt").write_text(text)
                written += len(text)
        if written <= budget:
            return side
    raise SystemExit(f"the training set does not fit in {budget / 2**20:.1f} MiB even at {TRAIN_SIDES[-1]} px")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--shared", type=Path, default=SHARED)
    p.add_argument("--out", type=Path)
    p.add_argument("--images", type=int, default=64)
    p.add_argument("--train", action="store_true", help="pack the detector's GPU training data (.device_train/)")
    args = p.parse_args()
    if args.train:
        out = args.out or PROJECT / ".device_train"
        budget = CALL_LIMIT_BYTES - travelling_tree_bytes() - 2**20  # 1 MiB to spare
        side = pack_training(args.shared, out, budget)
        size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
        cava = sum(1 for _ in out.glob("images/cava_*"))
        print(
            f"{out}: {sum(1 for _ in out.glob('images/*'))} images ({cava} CAVA frames) at most {side} px, {size / 2**20:.1f} MiB "
            f"(budget {budget / 2**20:.1f} MiB beside the working tree without {', '.join(LEFT_OUT_FOR_TRAINING)})"
        )
        return 0
    args.out = args.out or PROJECT / ".device_pack"
    shutil.rmtree(args.out, ignore_errors=True)
    shared_out = args.out / "shared" / "data"

    icf = args.shared / "data" / "icartoonface_det" / "images" / "val"
    for src in sorted(icf.glob("*.jpg"))[: args.images]:
        shrink(src, shared_out / "icartoonface_det" / "images" / "val" / src.name)

    dexter = args.shared / "data" / "cava" / "dexters_laboratory"
    with open(dexter / "boxes.csv") as f:
        reader = csv.DictReader(f)
        fields = reader.fieldnames
        rows = [r for r in reader if r["split"] == "val"]
    frames = sorted({r["image"] for r in rows})[: args.images]
    scales = {frame: shrink(dexter / frame, shared_out / "cava" / "dexters_laboratory" / frame) for frame in frames}
    with open(shared_out / "cava" / "dexters_laboratory" / "boxes.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        for r in rows:
            if r["image"] in scales:
                writer.writerow(
                    {**r, **{k: f"{float(r[k]) * scales[r['image']]:.1f}" for k in ("x1", "y1", "x2", "y2")}}
                )
    size = sum(p.stat().st_size for p in args.out.rglob("*") if p.is_file())
    print(f"{args.out}: {sum(1 for p in args.out.rglob('*.jpg'))} images, {size / 2**20:.1f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
