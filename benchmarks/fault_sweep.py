"""Fault sweep: kill a publish at every commit point, and feed the run one bad input at a time.

    python benchmarks/fault_sweep.py [--workdir DIR] [--only kills|inputs]

1. Kills. `toonface ingest` (and `toonface annotate merge`) are SIGKILLed right after each commit
   of their publish (TOONFACE_FAULT_KILL_AFTER_COMMIT), then run again. The rerun's dataset is
   compared table by table with an uninterrupted run's (data_manifest.compare): rows lost or extra
   must be 0 and no staging folder may remain.
2. Bad inputs. A small library of good files (CAVA frames and a short video from ../shared) is
   ingested alone, then with one bad input added: a file name with invalid UTF-8, a sparse 1 GiB
   still, a FIFO, dangling and looping links, a corrupt image, a truncated and a fake video, and web
   sources served on 127.0.0.1 (the crafted search pages of issue 37, a server that trickles its
   headers). Each run must publish, give the bad input its row and reason, lose none of the good
   rows, and stay within 300 MB of the good run's peak memory.

Prints one line per fault and a JSON line. All runs share one temporary Prefect server.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from data_manifest import Manifest  # noqa: E402
from data_manifest.compare import table_differences  # noqa: E402
from data_manifest.store import FAULT_POINTS  # noqa: E402

SHARED = Path(os.environ.get("TOONFACE_SHARED", REPO.parent / "shared"))
SETTINGS = [
    "--set",
    "detector_size=320",
    "--set",
    "episodes_per_album=1",
    "--set",
    "web_min_interval_s=0",
    "--set",
    "web_timeout_s=3",
    "--set",
    'web_allow_private_hosts=["127.0.0.1"]',
]

# Every episode of the bad-input library is sampled, so a bad video never takes a good one's place.
INPUT_SETTINGS = [*SETTINGS, "--set", "episodes_per_album=10"]

# The crafted pages of issue 37 that crashed the parsers (engine, body).
CRAFTED_PAGES = {
    "baidu objURL a number": ("baidu", '{"data": [{"objURL": 5}]}'),
    "bing m a list": ("bing", '<a class="iusc" m="[1,2]"></a>'),
    "bing m 100k nested [": ("bing", '<a class="iusc" m="' + "[" * 100_000 + '"></a>'),
    "baidu 100k nested [": ("baidu", '{"data": ' + "[" * 100_000 + "}"),
    "google ischj, no {": ("google", '<script>var x = "ischj": 1</script>'),
    "google ischj a list": ("google", '<script>"ischj": [1, 2]</script>'),
    "google \\q escape": ("google", '<script>"ischj": {"metadata": "\\q"}</script>'),
}


LOGS: list[Path] = []


def toonface(*args: str, env: dict | None = None, timeout: float = 900) -> tuple[int, float, float]:
    """Run `toonface ARGS`: (exit code, seconds, peak RSS in MB of the process). Its output goes to a
    numbered log file beside the data roots, named when the exit code is unexpected."""
    log = LOGS[0] / f"{len(list(LOGS[0].glob('*.log'))):03d}.log"
    started = time.monotonic()
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "toonface.cli", *args],
            cwd=REPO,
            env={**os.environ, **(env or {})},
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        timer = threading.Timer(timeout, proc.kill)
        timer.start()
        _, status, usage = os.wait4(proc.pid, 0)
        timer.cancel()
    code = os.waitstatus_to_exitcode(status)
    if code not in (0, -9):
        print(f"toonface {' '.join(args[:2])} exited {code}: see {log}")
    return code, time.monotonic() - started, usage.ru_maxrss / 1024


def staging_left(data: Path) -> int:
    folder = data / "manifest" / "staging"
    return len(list(folder.iterdir())) if folder.exists() else 0


def kill_sweep(work: Path, rows: list[dict], points: list[str]) -> None:
    from pipeline.sample import make_sample_library

    library = make_sample_library(work / "sample", seed=0).parent
    clean = work / "kills" / "clean"
    code, seconds, _ = toonface("ingest", "--library", str(library), "--data-root", str(clean), *SETTINGS)
    assert code == 0, f"the uninterrupted run failed ({code})"
    print(f"uninterrupted ingest: {seconds:.1f} s")
    for point in points:
        data = work / "kills" / point
        for folder in ("store", "cache"):
            shutil.copytree(clean / folder, data / folder)
        started = time.monotonic()
        killed, _, _ = toonface(
            "ingest",
            "--library",
            str(library),
            "--data-root",
            str(data),
            *SETTINGS,
            env={"TOONFACE_FAULT_KILL_AFTER_COMMIT": point},
        )
        rerun, _, _ = toonface("ingest", "--library", str(library), "--data-root", str(data), *SETTINGS)
        differences = sum(table_differences(clean, data).values())
        outcome = ("killed, rolled forward" if killed == -9 else "no commit here, finished") + (
            f"; rerun exit {rerun}" if rerun else ""
        )
        rows.append(
            {
                "fault": f"ingest killed after {point}",
                "outcome": outcome,
                "ok": rerun == 0 and differences == 0 and staging_left(data) == 0,
                "rows_lost": differences,
                "seconds": time.monotonic() - started,
            }
        )
    # annotate merge: two decisions on the clean root, merged cleanly and with a kill at each point
    from pipeline.annotate.catalogue import load_catalogue
    from pipeline.annotate.merge import merge_decisions
    from pipeline.annotate.service import AnnotationService, Settings

    decided = work / "kills" / "decided"
    shutil.copytree(clean, decided)
    service = AnnotationService(decided, Settings(order="random", gold_rate=0))
    catalogue = load_catalogue(decided)
    for item in service.queue("ann", 2):
        service.decide("ann", item["face_id"], catalogue.faces[item["face_id"]]["prelabel"] or "Hana", "same")
    merged = work / "kills" / "merged"
    shutil.copytree(decided, merged)
    merge_decisions(merged)
    for point in ("marker", "labels", "runs"):
        data = work / "kills" / f"merge-{point}"
        shutil.copytree(decided, data)
        started = time.monotonic()
        killed, _, _ = toonface(
            "annotate", "merge", "--data-root", str(data), env={"TOONFACE_FAULT_KILL_AFTER_COMMIT": point}
        )
        rerun, _, _ = toonface("annotate", "merge", "--data-root", str(data))
        differences = sum(table_differences(merged, data).values())
        versions = len(Manifest(data).history())
        rows.append(
            {
                "fault": f"merge killed after {point}",
                "outcome": ("killed, rolled forward" if killed == -9 else f"exit {killed}")
                + (f"; rerun exit {rerun}" if rerun else ""),
                "ok": rerun == 0 and differences == 0 and versions == 2 and staging_left(data) == 0,
                "rows_lost": differences,
                "seconds": time.monotonic() - started,
            }
        )


class BadSite:
    """127.0.0.1: /search/<name> answers a crafted page, /trickle.jpg sends its headers a byte a second."""

    def __init__(self):
        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                if self.path.startswith("/trickle"):
                    try:
                        for byte in b"HTTP/1.1 200 OK\r\nContent-Type: image/jpeg\r\n" * 50:
                            self.wfile.write(bytes([byte]))
                            self.wfile.flush()
                            time.sleep(1)
                    except OSError:
                        pass
                    return
                if self.path == "/robots.txt":
                    body = b"User-agent: *\n"
                else:
                    index = int(self.path.split("/")[2].split("?")[0])
                    body = list(CRAFTED_PAGES.values())[index][1].encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/html")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def good_library(root: Path) -> Path:
    stills = root / "good" / "stills"
    stills.mkdir(parents=True)
    for frame in sorted((SHARED / "data/cava/dexters_laboratory/images/val").glob("*.jpg"))[:12]:
        shutil.copy(frame, stills / frame.name)
    episodes = root / "good" / "episodes"
    episodes.mkdir()
    shutil.copy(SHARED / "fixtures/video/big_buck_bunny_opening_2s.mp4", episodes / "opening.mp4")
    return root


def bad_inputs(site: BadSite) -> dict:
    """name -> (function adding the bad input to a copy of the good library, how to find its row)."""

    def still(name: str, make):
        def add(lib: Path):
            make(lib / "good" / "stills" / os.fsdecode(name))

        return add

    def sparse(path: Path):
        with open(path, "wb") as f:
            f.truncate(1 << 30)

    def episode(name: str, make):
        def add(lib: Path):
            make(lib / "good" / "episodes" / name)

        return add

    def albums_with_search(engine: str, index: int):
        def add(lib: Path):
            (lib / "albums.yaml").write_text(
                "albums:\n  - id: good\n    name: Good\n    stills: good/stills\n    episodes: good/episodes\n"
                f"    characters: [{{name: Dee}}]\n"
                f"    search: [{{engine: {engine}, url: '{site.base}/search/{index}'}}]\n"
            )

        return add

    def trickle(lib: Path):
        (lib / "urls.csv").write_text(f"url\n{site.base}/trickle.jpg\n")
        (lib / "albums.yaml").write_text(
            "albums:\n  - id: good\n    name: Good\n    stills: good/stills\n    episodes: good/episodes\n"
            f"    url_lists: [{lib / 'urls.csv'}]\n"
        )

    webm = (SHARED / "fixtures/video/big_buck_bunny_0_30s.webm").read_bytes()
    inputs = {
        "file name with invalid UTF-8": (
            still(
                b"bad\xff\xfe.jpg", lambda p: shutil.copy(SHARED / "data/cava/dexters_laboratory/images/val/050.jpg", p)
            ),
            ("assets", "source", "bad\\xff\\xfe"),
        ),
        "sparse 1 GiB still": (still(b"huge.jpg", sparse), ("assets", "source", "huge.jpg")),
        "FIFO": (still(b"pipe.jpg", lambda p: os.mkfifo(p)), ("assets", "source", "pipe.jpg")),
        "dangling link": (
            still(b"gone.jpg", lambda p: p.symlink_to(p.parent / "nowhere.jpg")),
            ("assets", "source", "gone.jpg"),
        ),
        "link loop": (still(b"loop.jpg", lambda p: p.symlink_to(p)), ("assets", "source", "loop.jpg")),
        "corrupt image": (
            still(b"corrupt.jpg", lambda p: p.write_bytes(b"\xff\xd8\xff" + os.urandom(5000))),
            ("assets", "source", "corrupt.jpg"),
        ),
        "truncated video": (
            episode("cut.webm", lambda p: p.write_bytes(webm[: len(webm) // 3])),
            ("episodes", "episode_path", "cut.webm"),
        ),
        "fake video": (episode("fake.mp4", lambda p: p.write_text("hello")), ("episodes", "episode_path", "fake.mp4")),
        "server trickling its headers": (trickle, ("downloads", "url", "/trickle.jpg")),
    }
    for index, (name, (engine, _)) in enumerate(CRAFTED_PAGES.items()):
        inputs[f"search page: {name}"] = (albums_with_search(engine, index), ("downloads", "url", f"/search/{index}"))
    return inputs


def input_sweep(work: Path, rows: list[dict]) -> None:
    site = BadSite()
    base = good_library(work / "inputs" / "library-good")
    good_data = work / "inputs" / "data-good"
    code, _, _ = toonface("ingest", "--library", str(base), "--data-root", str(good_data), *INPUT_SETTINGS)
    assert code == 0, f"the run over the good files failed ({code})"
    # The baseline each bad-input run is compared with: the good files again, their work cached.
    baseline = work / "inputs" / "data-good-cached"
    for folder in ("store", "cache"):
        shutil.copytree(good_data / folder, baseline / folder)
    code, seconds, good_peak = toonface("ingest", "--library", str(base), "--data-root", str(baseline), *INPUT_SETTINGS)
    good = Manifest(good_data)
    good_assets = set(good.read("assets")["source"])
    print(f"good files alone: {len(good_assets)} assets, {seconds:.1f} s, peak {good_peak:.0f} MB")
    for name, (add, (table, column, needle)) in bad_inputs(site).items():
        lib = work / "inputs" / f"library-{len(rows)}"
        shutil.copytree(base, lib, symlinks=True)
        add(lib)
        data = work / "inputs" / f"data-{len(rows)}"
        for folder in ("store", "cache"):  # the good files' work is cached: the run's time is the bad input's
            shutil.copytree(good_data / folder, data / folder)
        albums = ["--albums", str(lib / "albums.yaml")] if (lib / "albums.yaml").exists() else []
        code, seconds, peak = toonface(
            "ingest", "--library", str(lib), "--data-root", str(data), *albums, *INPUT_SETTINGS
        )
        outcome, lost = f"exit {code}, nothing published", len(good_assets)
        if code == 0:
            m = Manifest(data)
            found = m.read(table)
            hit = found[found[column].astype(str).str.contains(needle, regex=False)]
            reason_column = "reason" if table == "downloads" else "drop_reason"
            reasons = sorted(set(hit[reason_column].dropna())) or ["kept, no drop reason"]
            outcome = f"published; its row: {', '.join(reasons)}" if len(hit) else "published; NO ROW"
            lost = len(good_assets - set(m.read("assets")["source"]))
        rows.append(
            {
                "fault": name,
                "outcome": outcome,
                "rows_lost": lost,
                "seconds": seconds,
                "peak_mb_over_good": peak - good_peak,
                "ok": code == 0 and "NO ROW" not in outcome and lost == 0 and peak - good_peak < 300,
            }
        )
    site.server.shutdown()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--workdir", type=Path, help="where libraries and data roots go (default: a temp folder)")
    p.add_argument("--only", choices=("kills", "inputs"))
    p.add_argument(
        "--points",
        nargs="*",
        default=list(FAULT_POINTS),
        choices=FAULT_POINTS,
        help="the ingest's kill points (default: all)",
    )
    args = p.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="toonface-fault-sweep-"))
    work.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("PREFECT_HOME", str(work / "prefect-home"))
    from flows.local_server import run_api

    rows: list[dict] = []
    LOGS.append(work / "logs")
    LOGS[0].mkdir(exist_ok=True)
    with run_api():  # one Prefect server for every run of the sweep
        if args.only != "inputs":
            kill_sweep(work, rows, args.points)
        if args.only != "kills":
            input_sweep(work, rows)
    print(f"\n{'fault':<40} {'ok':<3} {'rows lost':>9} {'seconds':>8} {'MB over good':>12}  outcome")
    for r in rows:
        extra = f"{r['peak_mb_over_good']:>12.0f}" if "peak_mb_over_good" in r else f"{'':>12}"
        print(
            f"{r['fault']:<40} {'yes' if r['ok'] else 'NO':<3} {r['rows_lost']:>9} {r['seconds']:>8.1f} {extra}  "
            f"{r['outcome']}"
        )
    print(json.dumps({"faults": len(rows), "failed": sum(not r["ok"] for r in rows), "rows": rows}))
    return 0 if all(r["ok"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
