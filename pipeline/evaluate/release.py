"""`toonface eval-release NAME`: score a model on a release's challenge protocols (see
pipeline/release_protocol.py and the release's PROTOCOL.md): CMC rank-1/5/10 for identification;
10-fold accuracy, ROC AUC and TAR@FAR for verification. Embeddings come from embedder weights or from a
file of them (one row per protocol file, in the order of an ids file)."""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

import cv2
import numpy as np

from pipeline.annotate.catalogue import tagged_release
from pipeline.evaluate.pair_metrics import auc, best_threshold, roc_curve, tar_at_far
from pipeline.identity.embedding import load

RANKS = (1, 5, 10)
FARS = (0.001, 0.01, 0.1)


class ReleaseEvalError(ValueError):
    pass


def read_protocol(release: Path) -> tuple[list[dict], list[dict]]:
    """The identification rows and verification pairs of a release folder."""
    folder = release / "protocol"
    if not (folder / "identification.csv").is_file() or not (folder / "verification.csv").is_file():
        raise ReleaseEvalError(f"{release} has no protocols (made by a toonface release older than them)")
    with open(folder / "identification.csv", encoding="utf-8") as f:
        identification = list(csv.DictReader(f))
    with open(folder / "verification.csv", encoding="utf-8") as f:
        pairs = list(csv.DictReader(f))
    return identification, pairs


def protocol_files(identification: list[dict], pairs: list[dict]) -> list[str]:
    """Every file the protocols name, sorted: the order of `--ids` files written for `--embeddings`."""
    return sorted({r["file"] for r in identification} | {p[k] for p in pairs for k in ("file_a", "file_b")})


def identification_scores(identification: list[dict], vectors: dict[str, np.ndarray]) -> dict:
    """CMC: the share of probes whose identity's gallery face ranks within the first k gallery faces."""
    gallery = [r for r in identification if r["role"] in ("gallery", "distractor")]
    probes = [r for r in identification if r["role"] == "probe"]
    if not probes:
        return {"probes": 0, "gallery": len(gallery), "cmc": [], **{f"rank{k}": None for k in RANKS}}
    matrix = np.stack([vectors[r["file"]] for r in gallery])
    position = {r["identity"]: i for i, r in enumerate(gallery) if r["role"] == "gallery"}
    ranks = []
    for probe in probes:
        similarity = matrix @ vectors[probe["file"]]
        own = similarity[position[probe["identity"]]]
        ranks.append(int(np.sum(similarity >= own)))  # its own gallery face included; ties count against it
    ranks = np.asarray(ranks)
    cmc = [float(np.mean(ranks <= k)) for k in range(1, min(len(gallery), 50) + 1)]
    return {"probes": len(probes), "gallery": len(gallery), "cmc": cmc,
            **{f"rank{k}": float(np.mean(ranks <= k)) for k in RANKS}}  # fmt: skip


def verification_scores(pairs: list[dict], vectors: dict[str, np.ndarray]) -> dict:
    """Accuracy over folds (threshold chosen on the other folds), ROC AUC and TAR@FAR over all pairs."""
    if not pairs or len({p["same"] for p in pairs}) < 2:
        return {"pairs": len(pairs), "accuracy": None, "auc": None, "note": "needs positive and negative pairs"}
    scores = np.array([float(vectors[p["file_a"]] @ vectors[p["file_b"]]) for p in pairs])
    same = np.array([p["same"] == "1" for p in pairs])
    folds = np.array([int(p["fold"]) for p in pairs])
    accuracies = []
    for fold in sorted(set(folds)):
        held = folds == fold
        threshold, _ = best_threshold(scores[~held], same[~held]) if (~held).any() else (0.0, 0.0)
        accuracies.append(float(np.mean((scores[held] >= threshold) == same[held])))
    fpr, tpr, _ = roc_curve(scores, same)
    return {
        "pairs": len(pairs),
        "accuracy": float(np.mean(accuracies)),
        "accuracy_std": float(np.std(accuracies)),
        "fold_accuracies": accuracies,
        "auc": auc(fpr, tpr),
        **{f"tar_at_far_{far:g}": tar_at_far(fpr, tpr, far) for far in FARS},
    }


def embed_files(release: Path, files: list[str], weights: str) -> tuple[dict[str, np.ndarray], str]:
    loaded = load(weights)
    if loaded is None:
        raise ReleaseEvalError("--weights none: nothing to embed with")
    images = [cv2.imread(str(release / f)) for f in files]
    missing = [f for f, image in zip(files, images) if image is None]
    if missing:
        raise ReleaseEvalError(f"cannot read {len(missing)} protocol files, e.g. {missing[0]}")
    vectors = loaded.model.embed(images) if images else np.zeros((0, 1), np.float32)
    return dict(zip(files, vectors.astype(np.float64))), loaded.model_id


def given_embeddings(files: list[str], embeddings: Path, ids: Path) -> dict[str, np.ndarray]:
    matrix = np.load(embeddings).astype(np.float64)
    names = json.loads(ids.read_text())
    if len(names) != len(matrix):
        raise ReleaseEvalError(f"{len(names)} ids for {len(matrix)} embeddings")
    lacking = sorted(set(files) - set(names))
    if lacking:
        raise ReleaseEvalError(f"{len(lacking)} protocol files have no embedding, e.g. {lacking[0]}")
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return dict(zip(names, matrix / np.where(norms > 0, norms, 1.0)))


def evaluate_release(release: Path, weights: str | None, embeddings: Path | None, ids: Path | None) -> dict:
    identification, pairs = read_protocol(release)
    files = protocol_files(identification, pairs)
    if embeddings is not None:
        vectors, model = given_embeddings(files, embeddings, ids), f"embeddings {embeddings.name}"
    else:
        vectors, model = embed_files(release, files, weights or "default")
    return {
        "release": release.name,
        "model": model,
        "identification": identification_scores(identification, vectors),
        "verification": verification_scores(pairs, vectors),
    }


def release_folder(data_root: str, name: str) -> Path:
    release = tagged_release(data_root, name)
    if release is None:
        raise ReleaseEvalError(f"no release named {name!r} under {data_root}")
    return Path(release["path"])


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", help="release name")
    p.add_argument("--data-root", default="data")
    given = p.add_mutually_exclusive_group()
    given.add_argument("--weights", help="embedder weights (default: the shipped ones)")
    given.add_argument("--embeddings", type=Path, help="X.npy: one embedding per protocol file (needs --ids)")
    p.add_argument("--ids", type=Path, help="I.json: the release-relative file of each row of --embeddings")
    p.add_argument("--out", type=Path, help="write the figures as JSON here too")


def run(args) -> int:
    if (args.embeddings is None) != (args.ids is None):
        print("error: --embeddings and --ids go together", file=sys.stderr)
        return 2
    try:
        result = evaluate_release(release_folder(args.data_root, args.name), args.weights, args.embeddings, args.ids)
    except (ReleaseEvalError, FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    text = json.dumps(result, indent=1)
    if args.out:
        args.out.write_text(text + "\n", encoding="utf-8")
    print(text)
    return 0
