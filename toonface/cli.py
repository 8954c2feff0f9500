"""`toonface` command line."""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
from pathlib import Path

import pandas as pd

# Prefect must never phone home; set before anything imports it.
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")

# Each command imports its stages when it runs: `toonface --help` should not pay for Prefect and torch.


def _config_overrides(pairs: list[str]) -> dict:
    """`--set enlarge_rate=0.6 --set detector=animeface` -> typed dict (JSON values, else strings)."""
    out = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep:
            raise SystemExit(f"--set expects KEY=VALUE, got {pair!r}")
        try:
            out[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            out[key.strip()] = value
    return out


def cmd_ingest(args) -> int:
    from flows.ingest import ingest
    from flows.local_server import run_api
    from flows.runners import make_task_runner
    from pipeline import stopping

    flow = ingest.with_options(task_runner=make_task_runner(args.task_runner)) if args.task_runner else ingest
    try:
        with stopping.stop_on_signals(), run_api():
            summary = flow(
                library=args.library,
                albums=args.albums,
                data_root=args.data_root,
                config=_config_overrides(args.set),
                progress=None,
            )
    except stopping.RunStopped as stop:
        print(f"toonface: run {stop}; nothing partly published (a rerun resumes from its caches)", file=sys.stderr)
        return stop.exit_code
    _print_summary(summary, args.data_root)
    return 0


def _print_summary(summary: dict, data_root: str) -> None:
    counts = summary["counts"]
    print(f"\nmanifest version {summary['manifest_version']} (run {summary['run_id']}) in {summary['manifest']}")
    print(
        "funnel: "
        + ", ".join(
            f"{k}={counts.get(k, 0)}"
            for k in (
                "episodes",
                "frames",
                "stills",
                "images_ok",
                "images_dropped",
                "faces_detected",
                "crops_kept",
                "crops_dropped",
            )
        )
    )
    print(f"rows added: {summary['rows_added']}")
    if summary.get("contact_sheet"):
        print(f"contact sheet: {summary['contact_sheet']}")
    print(
        f"open it in pandas:  from data_manifest import Manifest; "
        f"faces = Manifest({str(Path(data_root).resolve())!r}).read('faces')"
    )


def cmd_manifest(args) -> int:
    from data_manifest import Manifest, ManifestError

    manifest = Manifest(args.data_root)
    pd.set_option("display.width", 200)
    pd.set_option("display.max_columns", 30)
    try:
        if args.action == "history":
            hist = manifest.history()
            cols = ["manifest_version", "run_id", "published_at", "git_commit", "config_hash", "rows_added"]
            frame = hist[cols].assign(git_commit=hist["git_commit"].str[:10])
        elif args.action == "show":
            frame = manifest.read(args.table, version=args.version, as_of=args.as_of)
            if args.limit:
                frame = frame.head(args.limit)
        else:
            frame = manifest.diff(args.table, args.a, args.b)
    except ManifestError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(frame.to_json(orient="records", date_format="iso"))
    else:
        print(frame.to_string(index=False) if len(frame) else "(no rows)")
    return 0


def cmd_sample(args) -> int:
    from pipeline.sample import make_sample_library

    albums_file = make_sample_library(args.out, seed=args.seed)
    print(albums_file)
    return 0


def cmd_report(args) -> int:
    from data_manifest import ManifestError
    from pipeline.annotate.catalogue import tagged_release
    from pipeline.dataset_report.build import write_report

    release = tagged_release(args.data_root, args.release) if args.release else None
    if args.release and release is None:
        print(f"error: no release named {args.release!r} under {args.data_root}", file=sys.stderr)
        return 2
    try:
        print(write_report(args.data_root, release["manifest_version"] if release else args.version, args.out))
    except ManifestError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


def cmd_parse(args) -> int:
    """What a parser extracts from a saved page: for debugging markup changes."""
    from pipeline.sources.encyclopedia import PageShapeError
    from pipeline.sources.parse import parse_page

    text = Path(args.file).read_text(encoding="utf-8", errors="replace")
    try:
        records = parse_page(text, args.url or "", args.kind)
    except PageShapeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except ValueError as exc:  # a --url that is not a URL
        print(f"error: --url {args.url!r}: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(records, ensure_ascii=False, indent=1))
    else:
        fields = ("name", "title", "image_url", "source_url", "found_by")
        for r in records:
            print("\t".join(str(r.get(k) or "") for k in fields if k in r))
    return 0


def cmd_embed(args) -> int:
    """One L2-normalised embedding per image, in argument order, as an (N, dim) float32 .npy."""
    import cv2
    import numpy as np

    from pipeline.identity.embedding import load

    try:
        loaded = load(args.weights)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if loaded is None:
        print("error: --weights none: nothing to embed with", file=sys.stderr)
        return 2
    model, meta = loaded.model, loaded.meta
    images = []
    for path in args.images:
        image = cv2.imread(path)
        if image is None:
            print(f"error: cannot read image {path}", file=sys.stderr)
            return 2
        images.append(image)
    vectors = model.embed(images) if images else np.zeros((0, int(meta.get("dim", 512))), np.float32)
    np.save(args.out, vectors.astype(np.float32))
    print(f"{len(images)} embeddings ({vectors.shape[1]}-d, {meta['model_id']}) -> {args.out}")
    return 0


def detector_size_arg(text: str) -> int:
    """`--size`: 0 (the weights' own) or a side the detector takes, checked before torch is imported."""
    from models.input_size import check_input_size

    try:
        size = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"detector input size must be a whole number, got {text!r}") from None
    try:
        return size and check_input_size(size)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def cmd_detect(args) -> int:
    """Faces in each image: `--json` prints [{"image", "boxes": [[x1, y1, x2, y2, score], ...]}]."""
    import cv2

    from pipeline.detect import get_detector

    try:
        detector = get_detector(args.detector, args.weights, args.size)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    results, failed = [], 0
    batch = max(1, args.batch_size)
    for start in range(0, len(args.images), batch):
        paths = args.images[start : start + batch]
        images = [cv2.imread(p) for p in paths]
        readable = [(p, im) for p, im in zip(paths, images) if im is not None]
        for p, im in zip(paths, images):
            if im is None:
                print(f"error: cannot read image {p}", file=sys.stderr)
                failed += 1
        if not readable:
            continue
        found = detector.detect_many([im for _, im in readable], score_threshold=args.threshold)
        for (p, _), dets in zip(readable, found):
            boxes = [
                [round(d.x1, 1), round(d.y1, 1), round(d.x2, 1), round(d.y2, 1), round(d.score, 4)]
                for d in dets
                if args.threshold is None or d.score >= args.threshold
            ]
            results.append({"image": p, "boxes": boxes})
    if args.json:
        print(json.dumps(results))
    else:
        for r in results:
            print(f"{r['image']}\t{len(r['boxes'])} faces\t" + " ".join(",".join(map(str, b)) for b in r["boxes"]))
    return 1 if failed else 0


def cmd_server(args) -> int:
    from flows import local_server

    return local_server.main(args.action, home=args.home, library=args.library, data_root=args.data_root)


def cmd_annotate(args) -> int:
    from pipeline.annotate.cli import run

    return run(args)


def cmd_release(args) -> int:
    from pipeline.release import run

    return run(args)


# (command, module with add_arguments and run, help)
MODEL_COMMANDS = (
    ("train-embedder", "models.train_embedder", "train the identity embedder on labelled crops"),
    ("eval-embedder", "pipeline.evaluate.embedder", "the paper's identification and verification protocols"),
    ("train-detector", "models.train_detector", "train the RetinaNet face detector on boxed images"),
    ("adapt-detector", "models.adapt_detector", "fine-tune the face detector on a few boxed frames of a new show"),
    ("eval-detector", "pipeline.evaluate.detector", "COCO-style AP of a face detector on boxed images"),
    ("eval-release", "pipeline.evaluate.release", "score a model on a release's challenge protocols"),
    ("average-detector", "models.average_detector", "average the weights of detector files of one lineage"),
)


def _add_data_commands(sub) -> None:
    """ingest, manifest, sample: the commands that make and read data."""
    p = sub.add_parser("ingest", help="run the ingest flow once over a media library")
    p.add_argument(
        "--library",
        required=True,
        help="library folder (albums file inside, album folders, or a folder of stills/videos)",
    )
    p.add_argument("--albums", help="albums file (YAML or CSV); default: albums.yaml|yml|csv in the library")
    p.add_argument("--data-root", default="data", help="where the store, caches and manifests live (default: ./data)")
    p.add_argument(
        "--task-runner", help="thread | thread:N | dask | tcp://HOST:PORT (default: env TOONFACE_TASK_RUNNER or thread)"
    )
    p.add_argument(
        "--set", action="append", metavar="KEY=VALUE", help="override a setting of pipeline.config.IngestConfig"
    )
    p.set_defaults(func=cmd_ingest)

    p = sub.add_parser("manifest", help="read the versioned manifests")
    p.add_argument("--data-root", default="data")
    p.add_argument("--json", action="store_true", help="print JSON records instead of a table")
    msub = p.add_subparsers(dest="action", required=True)
    msub.add_parser("history", help="one line per manifest version")
    s = msub.add_parser("show", help="a table at a version")
    s.add_argument("table")
    s.add_argument("--version", type=int)
    s.add_argument("--as-of", help="date/time: the last version published then")
    s.add_argument("--limit", type=int, default=0)
    d = msub.add_parser("diff", help="rows added/removed/changed between two versions")
    d.add_argument("a", type=int)
    d.add_argument("b", type=int)
    d.add_argument("--table", default="faces")
    p.set_defaults(func=cmd_manifest)

    p = sub.add_parser("sample", help="generate the offline sample library")
    p.add_argument("--out", default="sample_library")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_sample)

    p = sub.add_parser("report", help="the dataset report of a version: one HTML page, plots, figures.json")
    p.add_argument("--data-root", default="data")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--version", type=int, help="manifest version (default: the latest)")
    which.add_argument("--release", help="the version a release tags")
    p.add_argument("--out", help="folder (default: <data-root>/reports/version-N)")
    p.set_defaults(func=cmd_report)


def _add_tool_commands(sub) -> None:
    """parse, embed, detect: one step of the pipeline on files."""
    p = sub.add_parser("parse", help="print what a parser extracts from a saved encyclopedia or search page")
    p.add_argument("file")
    p.add_argument(
        "--kind", default="auto", choices=["auto", "mediawiki", "baike", "generic", "bing", "baidu", "google"]
    )
    p.add_argument("--url", help="the page's address (resolves relative links; helps recognise the site)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_parse)

    p = sub.add_parser("embed", help="embed face crops with the identity model")
    p.add_argument("images", nargs="*")
    p.add_argument("--out", required=True, help="FILE.npy")
    p.add_argument("--weights", default="default", help="embedder weights (default: the shipped ones)")
    p.set_defaults(func=cmd_embed)

    p = sub.add_parser("detect", help="find cartoon faces in images")
    p.add_argument("images", nargs="*")
    p.add_argument("--json", action="store_true", help='print [{"image", "boxes": [[x1,y1,x2,y2,score],...]}]')
    p.add_argument("--detector", default="retinanet", help="retinanet (default) or animeface")
    p.add_argument("--weights", default="default", help="detector weights (default: the shipped ones)")
    p.add_argument(
        "--size",
        type=detector_size_arg,
        default=0,
        help="RetinaNet letterbox side, a multiple of 32 from 128 to 2048 (default: the weights' own)",
    )
    p.add_argument("--threshold", type=float, help="score threshold (default: the detector's operating threshold)")
    p.add_argument("--batch-size", type=int, default=16)
    p.set_defaults(func=cmd_detect)


def _add_model_commands(sub, wanted: list[str]) -> None:
    """Training and evaluation; torch is imported only for the command asked for (keeps the others quick)."""
    for command, module, help_text in MODEL_COMMANDS:
        p = sub.add_parser(command, help=help_text, add_help=False)
        if wanted == [command]:
            entry = importlib.import_module(module)
            p.add_argument("-h", "--help", action="help")
            entry.add_arguments(p)
            p.set_defaults(func=entry.run)


def _add_service_commands(sub) -> None:
    """server, annotate, release."""
    p = sub.add_parser("server", help="the embedded Prefect server + process worker + nightly deployment")
    p.add_argument("action", choices=["start", "stop", "status"])
    p.add_argument("--home", default=None, help="state folder (default: $TOONFACE_HOME or ./.toonface)")
    p.add_argument("--library", help="library the nightly deployment ingests (default: ./sample_library)")
    p.add_argument("--data-root", help="data root of the nightly deployment (default: ./data)")
    p.set_defaults(func=cmd_server)

    from pipeline.annotate.cli import add_arguments as add_annotate_arguments

    p = sub.add_parser("annotate", help="the verification page: serve, add-user, add-gold, merge, stats")
    add_annotate_arguments(p)
    p.set_defaults(func=cmd_annotate)

    from pipeline import release

    p = sub.add_parser("release", help="tag a manifest version and export its verified faces")
    release.add_arguments(p)
    p.set_defaults(func=cmd_release)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="toonface", description="Cartoon-face dataset pipeline (iCartoonFace).")
    sub = parser.add_subparsers(dest="command", required=True)

    _add_data_commands(sub)
    _add_tool_commands(sub)
    _add_model_commands(sub, (argv if argv is not None else sys.argv[1:])[:1])
    _add_service_commands(sub)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
