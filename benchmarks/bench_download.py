"""Download throughput: images/s fetched + validated + decoded + stored, over a local HTTP server.

    python benchmarks/bench_download.py [--count 2000] [--ports 4] [--workers 16] [--max-per-domain 8]
                                        [--decode-threads 2] [--download-only]

A separate process runs one http.server.ThreadingHTTPServer per port on 127.0.0.1 (HTTP/1.1
keep-alive) and serves generated ~50 KB JPEGs (a numpy gradient + noise, cv2.imencode; never files
from ../shared). Every URL gets distinct bytes (its number in a JPEG comment segment), so the
content store really writes each one. Each (host name, port) is a domain: the URLs are spread over
127.0.0.1 and localhost on every port (2 x --ports domains), both allow-listed as private hosts.

The client is the real `Downloader` with robots.txt on (one fetch per domain; the server serves a
small robots.txt), the SSRF guard on, and the per-domain rate limit switched OFF
(min_interval_s=0) — a benchmark setting only; the default is 1 request/s per domain. Every body is
checked by magic bytes (in the downloader), decoded with pipeline.decode.decode_image and put in a
ContentStore under a temporary folder, by a small thread pool (cv2 releases the GIL).

The server process shares the machine's cores with the client (2 cores here): the figures are a
lower bound for the client alone. Prints readable lines, then one JSON line.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
import multiprocessing as mp
import os
import resource
import shutil
import struct
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import cv2
import numpy as np
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from anywhere without install

from pipeline.decode import EXTENSIONS, decode_image
from pipeline.sources.download import Downloader, DownloadSettings
from pipeline.store import ContentStore

ROBOTS = b"User-agent: *\nDisallow: /private/\n"


def make_bases(n: int = 16, w: int = 480, h: int = 360, seed: int = 0) -> list[bytes]:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    out = []
    for i in range(n):
        img = np.stack([(x * 255 // w + 16 * i) % 256, y * 255 // h, (x + y) * 255 // (w + h)], -1).astype(np.int16)
        img += rng.integers(-15, 16, (h, w, 3), dtype=np.int16)
        ok, buf = cv2.imencode(".jpg", np.clip(img, 0, 255).astype(np.uint8), [cv2.IMWRITE_JPEG_QUALITY, 90])
        assert ok
        out.append(buf.tobytes())
    return out


def unique_jpeg(bases: list[bytes], i: int) -> bytes:
    """A valid JPEG with distinct bytes: SOI, a COM segment holding i, then the rest of the base."""
    base = bases[i % len(bases)]
    payload = b"toonface-bench %d" % i
    return base[:2] + b"\xff\xfe" + struct.pack(">H", len(payload) + 2) + payload + base[2:]


def serve(ports_out, ready, stop, n_ports: int, stats_out) -> None:
    bases = make_bases()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True

        def log_message(self, *args):
            pass

        def do_GET(self):
            if self.path == "/robots.txt":
                body, ctype = ROBOTS, b"text/plain"
            elif self.path.startswith("/img/"):
                body, ctype = unique_jpeg(bases, int(self.path[5:].split(".", 1)[0])), b"image/jpeg"
            else:
                body, ctype = b"not found", b"text/plain"
                self.wfile.write(
                    b"HTTP/1.1 404 Not Found\r\nContent-Type: text/plain\r\nContent-Length: 9\r\n\r\n" + body
                )
                return
            # One write for status line, headers and body.
            self.wfile.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: %s\r\nContent-Length: %d\r\n\r\n%s" % (ctype, len(body), body)
            )

    class Server(ThreadingHTTPServer):
        daemon_threads = True
        request_queue_size = 128

    servers = [Server(("127.0.0.1", 0), Handler) for _ in range(n_ports)]
    for s in servers:
        threading.Thread(target=s.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True).start()
    ports_out.send([s.server_address[1] for s in servers])
    ready.set()
    stop.wait()
    for s in servers:
        s.shutdown()
    stats_out.send(
        {
            "server_peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "server_cpu_s": sum(os.times()[:2]),
        }
    )


def main() -> None:  # noqa: C901
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--count", type=int, default=2000)
    ap.add_argument("--ports", type=int, default=4, help="server ports; domains = 2 host names x ports")
    ap.add_argument("--workers", type=int, default=16)
    ap.add_argument("--max-per-domain", type=int, default=8)
    ap.add_argument("--decode-threads", type=int, default=2)
    ap.add_argument(
        "--download-only",
        action="store_true",
        help="skip decode_image and the ContentStore: the downloader's own rate (magic bytes still checked)",
    )
    args = ap.parse_args()

    ctx = mp.get_context("spawn")
    ports_rx, ports_tx = ctx.Pipe(duplex=False)
    stats_rx, stats_tx = ctx.Pipe(duplex=False)
    ready, stop = ctx.Event(), ctx.Event()
    server = ctx.Process(target=serve, args=(ports_tx, ready, stop, args.ports, stats_tx), daemon=True)
    server.start()
    if not ready.wait(60):
        raise SystemExit("server did not start")
    ports = ports_rx.recv()
    hosts = [(h, p) for p in ports for h in ("127.0.0.1", "localhost")]
    urls = [f"http://{hosts[i % len(hosts)][0]}:{hosts[i % len(hosts)][1]}/img/{i}.jpg" for i in range(args.count)]

    tmp = Path(tempfile.mkdtemp(prefix="toonface-bench-dl-"))
    store = ContentStore(tmp / "store")
    me = psutil.Process()
    peak = {"rss": me.memory_info().rss}
    sampling = threading.Event()

    def sample():
        while not sampling.wait(0.05):
            peak["rss"] = max(peak["rss"], me.memory_info().rss)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()

    def process(res):
        if not res.ok:
            return res.reason, 0
        if args.download_only:
            return "ok", len(res.data)
        decoded = decode_image(res.data)
        if not decoded.ok:
            return f"decode:{decoded.drop_reason}", 0
        store.put(res.data, EXTENSIONS[res.format])
        return "ok", len(res.data)

    counts: dict[str, int] = {}
    nbytes = 0
    cpu0 = sum(os.times()[:2])
    dl = Downloader(
        DownloadSettings(
            min_interval_s=0.0,
            max_workers=args.workers,
            max_per_domain=args.max_per_domain,
            allow_private_hosts={"127.0.0.1", "localhost"},
            connect_timeout=5,
            read_timeout=10,
            total_timeout=30,
            retries=1,
        )
    )
    t0 = time.perf_counter()

    def tally(done):
        nonlocal nbytes
        for fut in done:
            status, n = fut.result()
            counts[status] = counts.get(status, 0) + 1
            nbytes += n

    with dl, cf.ThreadPoolExecutor(args.decode_threads, thread_name_prefix="decode") as pool:
        pending: set[cf.Future] = set()
        for res in dl.fetch_many(urls):
            pending.add(pool.submit(process, res))
            del res
            if len(pending) >= 4 * args.decode_threads:  # bounded: bodies are not piled up in memory
                done, pending = cf.wait(pending, return_when=cf.FIRST_COMPLETED)
                tally(done)
        tally(cf.wait(pending)[0])
    wall = time.perf_counter() - t0
    cpu = sum(os.times()[:2]) - cpu0
    sampling.set()
    sampler.join()
    stop.set()
    server_stats = stats_rx.recv() if stats_rx.poll(10) else {}
    server.join(10)
    stored = sum(1 for _ in (tmp / "store" / "objects").glob("*/*"))
    shutil.rmtree(tmp, ignore_errors=True)

    ok = counts.get("ok", 0)
    out = {
        "count": args.count,
        "ok": ok,
        "outcomes": counts,
        "stored_files": stored,
        "domains": len(hosts),
        "workers": args.workers,
        "max_per_domain": args.max_per_domain,
        "decode_threads": args.decode_threads,
        "download_only": args.download_only,
        "min_interval_s": 0.0,
        "wall_s": round(wall, 3),
        "images_per_s": round(ok / wall, 1),
        "mb_per_s": round(nbytes / wall / 1e6, 2),
        "mean_kb": round(nbytes / max(ok, 1) / 1e3, 1),
        "client_cpu_s": round(cpu, 2),
        "client_peak_rss_mib": round(peak["rss"] / 2**20, 1),
        "client_ru_maxrss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        **{k: round(v, 2) for k, v in server_stats.items()},
        "cpus": os.cpu_count(),
    }
    what = "downloaded+validated" if args.download_only else "downloaded+validated+decoded+stored"
    print(
        f"{what} {ok}/{args.count} images in {wall:.2f} s "
        f"over {len(hosts)} domains ({args.workers} workers, <= {args.max_per_domain}/domain, rate limit off)"
    )
    print(f"  {out['images_per_s']} images/s, {out['mb_per_s']} MB/s, mean {out['mean_kb']} KB/image")
    print(
        f"  client: peak RSS {out['client_peak_rss_mib']} MiB, CPU {out['client_cpu_s']} s; "
        f"server (separate process, same {os.cpu_count()} cores): peak RSS "
        f"{out.get('server_peak_rss_mib', '?')} MiB, CPU {out.get('server_cpu_s', '?')} s"
    )
    if counts.keys() - {"ok"}:
        print(f"  failures: { {k: v for k, v in counts.items() if k != 'ok'} }")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
