"""Peak memory of a whole `toonface ingest` run over N distinct stills: does RSS grow with N?

    python benchmarks/bench_ingest_rss.py --count 2000 [--workdir DIR] [--keep]

Makes N distinct 320x240 JPEGs from the CAVA frames in ../shared (a random crop of a random frame,
a small brightness shift and a different JPEG quality, so no two files share bytes and the
content-hash cache never short-cuts one), written under a temp folder outside the repo. Then runs
`toonface ingest` on them in a subprocess (fresh data root, fresh Prefect home with its own temporary
server) and samples the total RSS of the subprocess tree with psutil every 0.2 s.
Prints readable lines, then one JSON line. The sum of RSS counts shared pages once per process,
so it is an upper bound of the tree's real footprint; what matters here is its trend with N.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import psutil

REPO = Path(__file__).resolve().parent.parent
CAVA = Path(os.environ.get("TOONFACE_SHARED", REPO.parent / "shared")) / "data/cava"  # as the tests
W, H = 320, 240


def make_stills(out: Path, count: int, seed: int) -> None:
    """N distinct JPEGs; reused when the folder already holds this exact set."""
    marker = out / "made.json"
    spec = {"count": count, "seed": seed, "size": [W, H]}
    if marker.is_file() and json.loads(marker.read_text()) == spec:
        return
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    sources = sorted(CAVA.glob("*/images/*/*.jpg"))
    if not sources:
        raise SystemExit(f"no CAVA frames under {CAVA}")
    rng = np.random.default_rng(seed)
    seen = set()
    t0 = time.perf_counter()
    for i in range(count):
        while True:  # a repeat of bytes is practically impossible, but a duplicate would skew the test
            frame = cv2.imread(str(sources[rng.integers(len(sources))]))
            fh, fw = frame.shape[:2]
            scale = rng.uniform(max(W / fw, H / fh), 1.0)  # crop a window of random size, then resize
            cw, ch = int(W / scale), int(H / scale)
            x, y = rng.integers(fw - cw + 1), rng.integers(fh - ch + 1)
            img = cv2.resize(frame[y : y + ch, x : x + cw], (W, H), interpolation=cv2.INTER_AREA)
            img = cv2.convertScaleAbs(img, alpha=1.0, beta=float(rng.integers(-8, 9)))
            ok, jpeg = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(80, 96))])
            digest = hashlib.sha256(jpeg.tobytes()).digest()
            if ok and digest not in seen:
                break
        seen.add(digest)
        # Sub-folders of 1000 keep directory listings small; the flow reads the library recursively.
        path = out / "stills" / f"{i // 1000:03d}" / f"img_{i:06d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(jpeg.tobytes())
    marker.write_text(json.dumps(spec))
    print(f"generated {count} stills in {time.perf_counter() - t0:.1f} s under {out}")


def tree_rss(proc: psutil.Process) -> tuple[int, int]:
    """(RSS of the process, RSS of it and all its descendants), bytes."""
    try:
        own = proc.memory_info().rss
        children = proc.children(recursive=True)
    except psutil.NoSuchProcess:
        return 0, 0
    total = own
    for child in children:
        try:
            total += child.memory_info().rss
        except psutil.NoSuchProcess:
            pass  # ended between listing and reading
    return own, total


def ingest_command(library: Path, data_root: Path) -> list[str]:
    script = Path(sys.executable).parent / "toonface"
    base = [str(script)] if script.is_file() else [sys.executable, "-m", "toonface.cli"]
    return base + ["ingest", "--library", str(library), "--data-root", str(data_root), "--set", "stills_per_shard=1000"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, required=True, help="number of distinct stills")
    parser.add_argument(
        "--workdir",
        type=Path,
        help="where stills, data root and Prefect home go (default: a new temp folder, removed afterwards)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the temp folder")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--interval", type=float, default=0.2, help="RSS sampling period, seconds")
    args = parser.parse_args()

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="toonface_rss_"))
    library, data_root, prefect_home = workdir / "library", workdir / "data", workdir / "prefect_home"
    make_stills(library, args.count, args.seed)
    # A fresh data root and Prefect home each time: cached results from an earlier run would skip work.
    for folder in (data_root, prefect_home):
        shutil.rmtree(folder, ignore_errors=True)
    prefect_home.mkdir(parents=True)

    env = dict(
        os.environ,
        PREFECT_HOME=str(prefect_home),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        DO_NOT_TRACK="1",
        PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="120",
    )
    env.pop("PREFECT_API_URL", None)  # force the run's own temporary server, never a shared one
    cmd = ingest_command(library / "stills", data_root)
    print("running: " + " ".join(cmd))
    log = workdir / f"ingest_{args.count}.log"
    peak_own = peak_tree = samples = 0
    t0 = time.perf_counter()
    next_report = t0 + 30
    with open(log, "w") as out:
        child = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
        proc = psutil.Process(child.pid)
        while child.poll() is None:
            own, total = tree_rss(proc)
            peak_own, peak_tree, samples = max(peak_own, own), max(peak_tree, total), samples + 1
            if time.perf_counter() >= next_report:  # a running trace shows growth within one run too
                print(
                    f"  t={time.perf_counter() - t0:6.0f} s  tree RSS {total / 2**20:7.1f} MiB  "
                    f"(ingest process {own / 2**20:.1f} MiB)",
                    flush=True,
                )
                next_report += 30
            time.sleep(args.interval)
    wall = time.perf_counter() - t0
    output = log.read_text(errors="replace")
    funnel = next((line for line in output.splitlines() if line.startswith("funnel:")), "")
    if child.returncode != 0:
        print(output[-3000:])
        raise SystemExit(f"ingest failed with exit code {child.returncode}; log: {log}")

    result = {
        "images": args.count,
        "wall_s": round(wall, 1),
        "images_per_s": round(args.count / wall, 2),
        "peak_rss_tree_mib": round(peak_tree / 2**20, 1),
        "peak_rss_ingest_process_mib": round(peak_own / 2**20, 1),
        "samples": samples,
        "funnel": funnel,
        "cores": os.cpu_count(),
    }
    print(funnel)
    print(
        f"images: {args.count}  wall: {wall:.1f} s  images/s: {args.count / wall:.2f} (includes Prefect server start)"
    )
    print(
        f"peak RSS, whole process tree: {peak_tree / 2**20:.1f} MiB; ingest process alone: {peak_own / 2**20:.1f} MiB "
        f"({samples} samples every {args.interval} s)"
    )
    if args.workdir is None and not args.keep:
        shutil.rmtree(workdir, ignore_errors=True)
    else:
        print(f"kept: {workdir}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
