"""Peak memory of the face funnel by detector batch size: each size runs in a fresh process (peak RSS
only grows within one) over the same images, through `pipeline.faces.analyse_images` as the shards
call it (bytes in, crops stored, analyses cached in a scratch folder).

    python benchmarks/bench_detect_memory.py [--images DIR] [--batch-sizes 1,8,32] [--limit N]

Default images: the CAVA Dexter's Laboratory val frames in ../shared (480 x 360, read only), plus
`--large N` synthetic 24-megapixel images (6000 x 4000 JPEGs made here) to show the 100 MP bound on
one detector call. Prints one line per batch size, then one JSON line. Figures to read, not to assert
on: they depend on the machine, the allocator and the load.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PROJECT = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("TOONFACE_SHARED", PROJECT.parent / "shared"))
DEFAULT_IMAGES = SHARED / "data/cava/dexters_laboratory/images/val"


def one_size(batch_size: int, paths: list[str], large: int) -> dict:
    """Runs in the child process: the funnel over the images at one batch size."""
    import cv2
    import numpy as np

    from pipeline.config import DetectorSettings, IngestConfig
    from pipeline.faces import analyse_images, funnel_cache
    from pipeline.runner import detector_of
    from pipeline.store import ContentStore

    datas = [Path(p).read_bytes() for p in paths]
    rng = np.random.default_rng(0)
    for _ in range(large):  # noisy 24 MP images: big decoded arrays, cheap to make
        image = rng.integers(0, 255, (4000, 6000, 3), dtype=np.uint8)
        datas.append(cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 50])[1].tobytes())
    config = IngestConfig(detection=DetectorSettings(detect_batch_size=batch_size))
    detector = detector_of(config)
    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    with tempfile.TemporaryDirectory() as scratch:
        store = ContentStore(Path(scratch) / "store")
        cache = funnel_cache(scratch, config.funnel, detector)
        t0 = time.perf_counter()
        faces = 0
        for start in range(0, len(datas), batch_size):
            for analysis, _ in analyse_images(datas[start : start + batch_size], config.funnel, detector, store, cache):
                faces += len(analysis.faces)
        seconds = time.perf_counter() - t0
    return {
        "batch_size": batch_size,
        "images": len(datas),
        "faces": faces,
        "seconds": round(seconds, 2),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "rss_after_setup_mib": round(baseline, 1),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=Path, default=DEFAULT_IMAGES)
    p.add_argument("--batch-sizes", default="1,8,32")
    p.add_argument("--limit", type=int, default=200)
    p.add_argument("--large", type=int, default=8, help="synthetic 24 MP images added to the set")
    p.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = p.parse_args()
    paths = sorted(str(f) for f in args.images.iterdir() if f.suffix.lower() in (".jpg", ".jpeg", ".png"))[: args.limit]
    if args.child:
        print(json.dumps(one_size(args.child, paths, args.large)))
        return
    results = []
    for size in (int(s) for s in args.batch_sizes.split(",")):
        out = subprocess.run(
            [
                sys.executable,
                __file__,
                "--images",
                str(args.images),
                "--limit",
                str(args.limit),
                "--large",
                str(args.large),
                "--child",
                str(size),
            ],
            cwd=PROJECT,
            capture_output=True,
            text=True,
            check=True,
        )
        r = json.loads(out.stdout.strip().splitlines()[-1])
        results.append(r)
        print(
            f"detect_batch_size {size:>3}: peak RSS {r['peak_rss_mib']:.0f} MiB (after setup, model and "
            f"image bytes: {r['rss_after_setup_mib']:.0f} MiB), {r['images']} images, {r['faces']} faces, "
            f"{r['seconds']} s"
        )
    print(json.dumps({"images": str(args.images), "results": results}))


if __name__ == "__main__":
    sys.path.insert(0, str(PROJECT))
    main()
