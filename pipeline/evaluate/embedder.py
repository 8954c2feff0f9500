"""Evaluate a cartoon-face embedder with the iCartoonFace recognition protocols.

Protocols, on L2-normalised embeddings and identity labels, deterministic for a seed:
``identification`` (1:N, CMC) and ``verification`` (1:1 pairs, 10-fold accuracy, ROC, AUC, TAR at FAR)
in ``pipeline.evaluate.recognition``; ``prelabel_precision_recall`` (the paper's pre-labelling step,
under the pipeline's own matching rule and settings) in ``pipeline.evaluate.prelabel``. ``evaluate`` runs
all three on one set of embeddings; the CLI embeds the crops first.

CLI (``toonface eval-embedder``)::

    toonface eval-embedder --weights models/weights/embedder.safetensors \\
        --data /work/shared/data/anime_identities/moeimouto/test \\
        --cava /work/shared/data/cava/scooby_doo --cava-split val --out eval.json

Result dictionaries keep bulky arrays (pair scores, pair labels, per-probe ranks) under keys starting
with ``_``; ``public`` drops them, and the CLI prints only the public part.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import torch

from models.embedder import load_embedder
from models.identity_data import Sample, cava_identity_crops, identity_folders
from models.training import resolve_device
from pipeline.evaluate.prelabel import PRELABEL_THRESHOLD, prelabel_report
from pipeline.evaluate.recognition import DEFAULT_PAIRS, identification, verification

DEFAULT_WEIGHTS = "models/weights/embedder.safetensors"
UNKNOWN = "unknown"


def public(result):
    """``result`` without keys starting with ``_`` (recursively): what is printed / written as JSON."""
    if isinstance(result, dict):
        return {k: public(v) for k, v in result.items() if not (isinstance(k, str) and k.startswith("_"))}
    if isinstance(result, (list, tuple)):
        return [public(v) for v in result]
    return result


def add_arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    _add_data_arguments(p)
    _add_protocol_arguments(p)
    _add_prelabel_arguments(p)
    _add_pipeline_setting_arguments(p)
    _add_run_arguments(p)
    return p


def _add_data_arguments(p: argparse.ArgumentParser) -> None:
    """The embedder, the crops it is evaluated on, and what becomes of CAVA's 'unknown' faces."""
    p.add_argument(
        "--weights",
        default=DEFAULT_WEIGHTS,
        metavar="PATH.safetensors",
        help=f"embedder file (default {DEFAULT_WEIGHTS})",
    )
    p.add_argument(
        "--data", action="append", default=[], metavar="DIR", help="folder of <identity>/<image> crops (repeatable)"
    )
    p.add_argument(
        "--cava",
        action="append",
        default=[],
        metavar="FOLDER",
        help="folder with a CAVA boxes.csv; faces cut at enlarged rate 1.0 (repeatable)",
    )
    p.add_argument("--cava-split", default="val", help="boxes.csv split to evaluate on (default val)")
    g = p.add_mutually_exclusive_group()
    g.add_argument(
        "--unknown-as-distractors",
        dest="unknown",
        action="store_const",
        const="distractors",
        default="distractors",
        help="CAVA 'unknown' faces join the identification gallery as distractors and the "
        "pre-label probes (no reference); never in verification (default)",
    )
    g.add_argument(
        "--exclude-unknown",
        dest="unknown",
        action="store_const",
        const="exclude",
        help="leave CAVA 'unknown' faces out entirely",
    )


def _add_protocol_arguments(p: argparse.ArgumentParser) -> None:
    """The identification and verification protocols' seed, probe counts, pairs and folds."""
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--probes-min", type=int, default=3, help="fewest probes per identity (default 3)")
    p.add_argument("--probes-max", type=int, default=7, help="most probes per identity (default 7)")
    p.add_argument(
        "--pairs",
        type=int,
        default=None,
        help=f"verification pairs of each kind (default min({DEFAULT_PAIRS}, available))",
    )
    p.add_argument("--folds", type=int, default=10)


def _add_prelabel_arguments(p: argparse.ArgumentParser) -> None:
    """The pre-label protocol: threshold, margin, and how references are chosen."""
    p.add_argument("--prelabel-threshold", type=float, default=PRELABEL_THRESHOLD)
    p.add_argument(
        "--prelabel-min-margin",
        type=float,
        default=0.0,
        help="a pre-label also needs this margin over the runner-up identity (default 0: the paper)",
    )
    p.add_argument(
        "--prelabel-reference",
        choices=("first", "random"),
        default="first",
        help="reference per identity: first image in path order, or a seeded random one",
    )
    p.add_argument(
        "--prelabel-references",
        type=int,
        default=1,
        metavar="K",
        help="references per identity: the one above plus K-1 seeded random images "
        "(as verified faces join the references; default 1: the paper)",
    )
    p.add_argument(
        "--reference-draws",
        type=int,
        default=20,
        metavar="N",
        help="also repeat the pre-label with N seeded random reference choices and report mean, "
        "spread and worst draw (default 20; 0: off)",
    )


def _add_pipeline_setting_arguments(p: argparse.ArgumentParser) -> None:
    """The pipeline's matching settings, measured on the pre-label protocol."""
    p.add_argument(
        "--reference-views",
        action="store_true",
        help="match pre-label references by the crop and its centred crops (the pipeline's "
        "reference_views setting); embeds every image 4 times",
    )
    p.add_argument(
        "--candidate-views",
        action="store_true",
        help="match pre-label probes by the mean over the same views of theirs (the pipeline's "
        "candidate_views setting); embeds every image 4 times",
    )
    p.add_argument(
        "--album-mean",
        action="store_true",
        help="subtract each album's mean from what pre-labels match (the pipeline's subtract_album_mean "
        "setting); each --data or --cava source is one album",
    )
    p.add_argument(
        "--within-album",
        action="store_true",
        help="match pre-label probes only against their own album's references (the pipeline's "
        "within_album setting); each --data or --cava source is one album",
    )


def _add_run_arguments(p: argparse.ArgumentParser) -> None:
    """Where the embedder runs and where the report goes."""
    p.add_argument("--device", default="cpu", help="cpu|cuda|auto (default cpu)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's own)")
    p.add_argument("--out", default=None, metavar="FILE.json", help="also write the JSON here")


def _embed_samples(model, samples, batch_size: int, views: bool = False) -> np.ndarray:
    """Embeddings in chunks, so that only one chunk of images is in memory at a time: (N, dim), or
    with ``views`` every image's reference views (N, V, dim)."""
    chunks = []
    step = max(1, batch_size) * 4
    for i in range(0, len(samples), step):
        images = [s.load() for s in samples[i : i + step]]
        chunks.append(model.embed_views(images, batch_size) if views else model.embed(images, batch_size=batch_size))
    if not chunks:
        return np.zeros((0, model.dim), np.float32)
    return np.concatenate(chunks)


def evaluate(
    emb: np.ndarray,
    labels: Sequence[str],
    *,
    unknown_labels: Iterable[str] = (),
    seed: int = 0,
    probes_per_identity: tuple[int, int] = (3, 7),
    pairs: int | None = None,
    folds: int = 10,
    prelabel_threshold: float = PRELABEL_THRESHOLD,
    prelabel_reference: str = "first",
    prelabel_min_margin: float = 0.0,
    prelabel_references: int = 1,
    reference_draws: int = 0,
    reference_views: np.ndarray | None = None,
    candidate_views: np.ndarray | None = None,
    album_mean: bool = False,
    albums: Sequence[str] | None = None,
    within_album: bool = False,
) -> dict:
    """All three protocols on one set of embeddings (``labels`` in the order of ``emb``; for the
    'first' reference choice, pass them sorted by path). ``unknown_labels``: distractors in
    identification, probes without reference in pre-labelling, ignored in verification.
    ``reference_views`` ((N, V, dim)): pre-label references are matched by all their views;
    ``candidate_views`` ((N, V, dim)): pre-label probes are matched by theirs (the mean over them).
    ``albums``: each image's album (None: the set is one album). ``album_mean``: pre-labels match after
    each album's mean is subtracted (the pipeline's ``subtract_album_mean``: the mean of the rows probes
    are matched by, over every image of the album). ``within_album``: probes are matched only against
    their own album's references (the pipeline's ``within_album``)."""
    unknown = sorted({str(x) for x in unknown_labels})
    labels = [str(x) for x in labels]
    ident = identification(emb, labels, seed=seed, probes_per_identity=probes_per_identity, distractor_labels=unknown)
    verif = _verification_or_error(emb, labels, seed, pairs, folds, unknown)
    pre = prelabel_report(
        emb,
        labels,
        unknown,
        seed=seed,
        threshold=prelabel_threshold,
        reference=prelabel_reference,
        min_margin=prelabel_min_margin,
        references=prelabel_references,
        draws=reference_draws,
        reference_views=reference_views,
        candidate_views=candidate_views,
        album_mean=album_mean,
        albums=albums,
        within_album=within_album,
    )
    return {"identification": ident, "verification": verif, "prelabel": pre}


def _verification_or_error(emb, labels: list[str], seed: int, pairs: int | None, folds: int, ignore: list[str]) -> dict:
    """The verification result, or ``{"error": ...}`` where the set cannot give pairs: the other two
    protocols are still reported."""
    try:
        return verification(emb, labels, seed=seed, pairs=pairs, folds=folds, ignore_labels=ignore)
    except ValueError as e:
        return {"error": str(e)}


def load_samples(args: argparse.Namespace) -> tuple[list[Sample], list[str], list[str], set[str]]:
    """The crops of ``--data`` and ``--cava``, sorted by identity, path (then box) so that "first image of
    each identity" is well defined and stable; (samples, each one's album, the sources, 'unknown' labels)."""
    samples, sources, albums = [], [], []  # albums: each sample's source (one album each)
    for d in args.data:
        got = identity_folders(d)
        samples += got
        albums += [f"folders:{d}"] * len(got)
        sources.append(f"folders:{d}")
    unknown: set[str] = set()
    for c in args.cava:
        skip = ("unknown",) if args.unknown == "exclude" else ()
        got = cava_identity_crops(c, args.cava_split, skip_identities=skip)
        unknown |= {s.identity for s in got if s.identity.rsplit("/", 1)[-1] == UNKNOWN}
        samples += got
        albums += [f"cava:{c}:{args.cava_split}"] * len(got)
        sources.append(f"cava:{c}:{args.cava_split}")
    pairs = sorted(zip(samples, albums), key=lambda pair: (pair[0].identity, pair[0].path, pair[0].box or ()))
    return [s for s, _ in pairs], [a for _, a in pairs], sources, unknown


def run(args: argparse.Namespace) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    samples, albums, sources, unknown = load_samples(args)
    if not samples:
        print("eval-embedder: no data; give --data DIR and/or --cava FOLDER", file=sys.stderr)
        return 2
    if not Path(args.weights).is_file():
        print(f"eval-embedder: no weights file {args.weights}", file=sys.stderr)
        return 2
    model, meta = load_embedder(args.weights, resolve_device(args.device))
    need_views = args.reference_views or args.candidate_views
    views = _embed_samples(model, samples, args.batch_size, views=True) if need_views else None
    emb = views[:, 0] if views is not None else _embed_samples(model, samples, args.batch_size)
    labels = [s.identity for s in samples]
    res = evaluate(
        emb,
        labels,
        unknown_labels=unknown,
        seed=args.seed,
        probes_per_identity=(args.probes_min, args.probes_max),
        pairs=args.pairs,
        folds=args.folds,
        prelabel_threshold=args.prelabel_threshold,
        prelabel_reference=args.prelabel_reference,
        prelabel_min_margin=args.prelabel_min_margin,
        prelabel_references=args.prelabel_references,
        reference_draws=args.reference_draws,
        reference_views=views if args.reference_views else None,
        candidate_views=views if args.candidate_views else None,
        album_mean=args.album_mean,
        albums=albums,
        within_album=args.within_album,
    )
    known = {lab for lab in labels if lab not in unknown}
    report = {
        "model_id": meta["model_id"],
        "weights": str(args.weights),
        "sources": sources,
        "images": len(samples),
        "identities": len(known),
        "unknown_images": sum(lab in unknown for lab in labels),
        "unknown": args.unknown,
        **public(res),
    }
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text + "\n")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="toonface eval-embedder",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
