"""Throughput of each ingest stage on its own: frame extraction, still decoding, detection (the default
detector, batched as the funnel calls it), crop + gate.

    python benchmarks/bench_stages.py [--library DIR] [--videos DIR] [--limit N]

Without arguments the stills are the CAVA Dexter's Laboratory val frames and the videos the
fixtures in ../shared (read only, nothing is copied). Prints readable lines, then one JSON line.
Timings are figures to read, not to assert on: they depend on the machine and its load.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import resource
import sys
import time
from pathlib import Path

import cv2

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from anywhere without install

from models.crop import cut, enlarged_box
from pipeline.config import IngestConfig
from pipeline.decode import decode_image
from pipeline.frames import VideoError, extract_frames
from pipeline.quality import gate, sharpness
from pipeline.runner import detector_of
from pipeline.sources.library import discover_albums

# Same override as the tests: TOONFACE_SHARED, else ../shared next to the project.
SHARED = Path(os.environ.get("TOONFACE_SHARED", Path(__file__).resolve().parent.parent.parent / "shared"))
DEFAULT_STILLS = SHARED / "data/cava/dexters_laboratory/images/val"
DEFAULT_VIDEOS = SHARED / "fixtures/video"


def rate(n: int, seconds: float) -> float:
    return n / seconds if seconds > 0 else 0.0


def peak_rss_mib(who: int) -> float:
    return resource.getrusage(who).ru_maxrss / 1024  # Linux reports KiB


def library_files(folder: Path) -> tuple[list[Path], list[Path]]:
    albums = discover_albums(folder)
    return ([p for a in albums for p in a.episodes()], [p for a in albums for p in a.stills()])


def bench_frames(videos: list[Path], fps: float) -> dict:
    per_video, frames, seconds = [], 0, 0.0
    for path in videos:
        n, error, t0 = 0, None, time.perf_counter()
        try:
            for _ in extract_frames(path, fps=fps):
                n += 1
        except VideoError as exc:
            error = exc.reason
        dt = time.perf_counter() - t0
        frames, seconds = frames + n, seconds + dt
        per_video.append(
            {
                "video": path.name,
                "frames": n,
                "seconds": round(dt, 3),
                "frames_per_s": round(rate(n, dt), 2),
                "error": error,
            }
        )
        print(
            f"  {path.name}: {n} frames in {dt:.2f} s = {rate(n, dt):.2f} frames/s" + (f" ({error})" if error else "")
        )
    print(
        f"(a) frames: {frames} frames from {len(videos)} videos in {seconds:.2f} s = "
        f"{rate(frames, seconds):.2f} frames/s at fps={fps}"
    )
    return {
        "videos": per_video,
        "frames": frames,
        "seconds": round(seconds, 3),
        "frames_per_s": round(rate(frames, seconds), 2),
    }


def bench_decode(stills: list[Path], cfg: IngestConfig) -> tuple[dict, list[Path]]:
    ok, dropped, nbytes, t0 = [], collections.Counter(), 0, time.perf_counter()
    for path in stills:
        data = path.read_bytes()
        nbytes += len(data)
        d = decode_image(data, cfg.funnel.max_image_pixels, cfg.funnel.max_image_bytes)
        if d.ok:
            ok.append(path)
        else:
            dropped[d.drop_reason] += 1
    dt = time.perf_counter() - t0
    print(
        f"(b) decode: {len(stills)} stills ({nbytes / 2**20:.1f} MiB) read + decoded in {dt:.2f} s = "
        f"{rate(len(stills), dt):.1f} images/s; ok {len(ok)}, dropped {dict(dropped)}"
    )
    return {
        "stills": len(stills),
        "ok": len(ok),
        "dropped": dict(dropped),
        "mib": round(nbytes / 2**20, 2),
        "seconds": round(dt, 3),
        "images_per_s": round(rate(len(stills), dt), 1),
    }, ok


def decode(path: Path):
    return decode_image(path.read_bytes()).image  # untimed helper: path already known good


def bench_detect(paths: list[Path], cfg: IngestConfig) -> tuple[dict, dict[Path, list]]:
    """The ingest's detector as the funnel calls it (batches of detect_batch_size), and one image
    per call for comparison. Decoding is not part of either figure."""
    detector = detector_of(cfg)  # loaded before the clock starts
    images = [decode(path) for path in paths]
    result = {"detector": detector.model_id, "images": len(paths)}
    for batch in sorted({1, cfg.detection.detect_batch_size}):
        detector.detect_many(images[:batch])  # warm-up: first call of a batch shape
        boxes, faces = {}, 0
        t0 = time.perf_counter()
        for i in range(0, len(images), batch):
            for path, found in zip(paths[i : i + batch], detector.detect_many(images[i : i + batch])):
                boxes[path] = [(d.x1, d.y1, d.x2, d.y2) for d in found]
                faces += len(found)
        seconds = time.perf_counter() - t0
        print(
            f"    detect: {len(paths)} images in {seconds:.2f} s = {rate(len(paths), seconds):.2f} images/s "
            f"({detector.model_id}, batch {batch}), {faces} faces"
        )
        result[f"batch_{batch}"] = {"seconds": round(seconds, 3), "images_per_s": round(rate(len(paths), seconds), 2)}
    result["faces"] = faces
    return result, boxes


def centre_box(w: int, h: int) -> tuple[float, float, float, float]:
    return (w * 0.3, h * 0.3, w * 0.7, h * 0.7)  # 40% of each side, centred


def bench_crops(paths: list[Path], boxes: dict[Path, list], use_centre: bool, cfg: IngestConfig) -> dict:
    # One thread so the figure is per core: OpenCV would otherwise spread resize/Laplacian over all cores.
    threads_before = cv2.getNumThreads()
    cv2.setNumThreads(1)
    outcomes, crops, seconds, encode_seconds = collections.Counter(), 0, 0.0, 0.0
    try:
        for path in paths:
            faces = boxes.get(path, [])
            if not faces and not use_centre:
                continue
            image = decode(path)  # untimed
            h, w = image.shape[:2]
            t0 = time.perf_counter()
            for face in [centre_box(w, h)] if use_centre else faces:
                box = enlarged_box(face, w, h, cfg.funnel.enlarge_rate)
                crop = cut(image, box)
                score = sharpness(crop) if crop.size else 0.0
                outcomes[
                    gate(score, box.width, box.height, cfg.funnel.min_sharpness, cfg.funnel.min_crop_side) or "kept"
                ] += 1
                crops += 1
            seconds += time.perf_counter() - t0
            # What ingest also does per crop: encode it as JPEG for the content store.
            t1 = time.perf_counter()
            for face in [centre_box(w, h)] if use_centre else faces:
                cv2.imencode(
                    ".jpg",
                    cut(image, enlarged_box(face, w, h, cfg.funnel.enlarge_rate)),
                    [cv2.IMWRITE_JPEG_QUALITY, cfg.funnel.crop_jpeg_quality],
                )
            encode_seconds += time.perf_counter() - t1
    finally:
        cv2.setNumThreads(threads_before)
    source = "centred 40% box" if use_centre else "detector boxes"
    print(
        f"(c) crop+gate: {crops} crops in {seconds:.3f} s = {rate(crops, seconds):.1f} crops/s per core "
        f"(cv2.setNumThreads(1), one process; enlarge_rate={cfg.funnel.enlarge_rate}, boxes: {source}); {dict(outcomes)}"
    )
    print(f"    with the JPEG encode of each crop: {rate(crops, seconds + encode_seconds):.1f} crops/s per core")
    return {
        "crops": crops,
        "seconds": round(seconds, 4),
        "crops_per_s_per_core": round(rate(crops, seconds), 1),
        "with_encode_per_s_per_core": round(rate(crops, seconds + encode_seconds), 1),
        "box_source": "centre" if use_centre else "detector",
        "outcomes": dict(outcomes),
        "cv2_threads": 1,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--library", type=Path, help=f"library folder (default stills: {DEFAULT_STILLS})")
    parser.add_argument(
        "--videos",
        type=Path,
        help=f"folder of videos (default: the library's episodes, or {DEFAULT_VIDEOS} when no --library)",
    )
    parser.add_argument("--limit", type=int, default=0, help="use at most N stills and N videos (0: all)")
    parser.add_argument(
        "--centre-boxes",
        action="store_true",
        help="crop a centred 40%% box of every image (more crops than the detector finds)",
    )
    parser.add_argument("--fps", type=float, default=IngestConfig.frames_per_second)
    args = parser.parse_args()

    cfg = IngestConfig()
    videos, stills = library_files(args.library or DEFAULT_STILLS)
    if args.videos or not args.library:
        videos = library_files(args.videos or DEFAULT_VIDEOS)[0]
    if args.limit:
        videos, stills = videos[: args.limit], stills[: args.limit]
    print(
        f"stills: {len(stills)} from {args.library or DEFAULT_STILLS}; videos: {len(videos)}; "
        f"cores: {os.cpu_count()}; cv2 threads: {cv2.getNumThreads()}"
    )

    result = {"frames": bench_frames(videos, args.fps)}
    result["decode"], ok = bench_decode(stills, cfg)
    result["detect"], boxes = bench_detect(ok, cfg)
    result["crop_gate"] = bench_crops(
        ok, boxes, use_centre=args.centre_boxes or result["detect"]["faces"] == 0, cfg=cfg
    )
    result["peak_rss_mib"] = round(peak_rss_mib(resource.RUSAGE_SELF), 1)
    result["peak_rss_children_mib"] = round(peak_rss_mib(resource.RUSAGE_CHILDREN), 1)  # largest ffmpeg
    print(
        f"peak RSS: {result['peak_rss_mib']:.1f} MiB (this process), "
        f"{result['peak_rss_children_mib']:.1f} MiB (largest ffmpeg child)"
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
