"""Average the weights of detector files from one training lineage (``toonface average-detector``).

    toonface average-detector --out FILE.safetensors WEIGHTS WEIGHTS [WEIGHTS...] [--threshold T]

Two short training cycles that start from the same weights end in nearby points of one basin; the mean
of their tensors usually scores better than either (weight averaging, as in SWA and "model soups"),
at no cost at inference. Only files of the same architecture (backbone, tensor names and shapes) can
be averaged; files that do not share a starting point average into nonsense, so give only cycles of
one lineage and evaluate the result (``toonface eval-detector --weights FILE``).

Floating tensors (weights, BatchNorm running statistics) are averaged in fp32; integer tensors
(BatchNorm's batch counters) are taken from the first file. The output keeps the first file's input
size and operating threshold (unless ``--threshold``), every earlier stage's record (``stage_*``) of
the inputs, and under ``recipe.average_of`` each input's model id, sha256, recipe and training log, so
the file says exactly how it was made.
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import torch

from models.detector import FORMAT, build_retinanet, detector_model_id, load_detector, save_detector
from models.embedder import read_meta, weights_sha256


def average_detectors(paths: Sequence[str | Path], out: str | Path, *, threshold: float | None = None) -> Path:
    """Write the tensor mean of ``paths`` (at least two detector files of one architecture) to ``out``."""
    from safetensors.torch import load_file

    if len(paths) < 2:
        raise ValueError("average-detector needs at least two weights files")
    metas = [read_meta(p) for p in paths]
    for p, m in zip(paths, metas):
        if m.get("format") != FORMAT:
            raise ValueError(f"{p}: not a toonface detector file (format={m.get('format')!r})")
    backbones = {m["backbone"] for m in metas}
    if len(backbones) > 1:
        raise ValueError(f"cannot average detectors of different backbones: {sorted(backbones)}")
    states = [load_file(str(p)) for p in paths]
    first = states[0]
    for p, s in zip(paths[1:], states[1:]):
        if s.keys() != first.keys():
            raise ValueError(f"{p}: its tensors are not those of {paths[0]} (a different architecture)")
        bad = [k for k in first if s[k].shape != first[k].shape]
        if bad:
            raise ValueError(
                f"{p}: tensor {bad[0]} has shape {tuple(s[bad[0]].shape)}, {paths[0]} has {tuple(first[bad[0]].shape)}"
            )

    # A running sum from the first tensor, not torch.mean: a sum that starts at +0 turns stored -0.0 into
    # +0.0, so a file averaged with itself would not keep its bytes (nor its model id).
    mean = {
        k: (functools.reduce(torch.add, [s[k].float() for s in states]) / len(states) if v.is_floating_point() else v)
        for k, v in first.items()
    }
    backbone, size = metas[0]["backbone"], int(metas[0]["size"])
    model = build_retinanet(backbone, size)
    ref = model.state_dict()
    model.load_state_dict({k: v.to(ref[k].dtype) for k, v in mean.items()}, strict=True)

    inputs = []
    for p, m in zip(paths, metas):
        digest = weights_sha256(p)
        inputs.append(
            {
                "file": Path(p).name,
                "model_id": detector_model_id(m["backbone"], digest, int(m["size"]), int(m["size"])),
                "weights_sha256": digest,
                "recipe": m.get("recipe"),
                "history": m.get("history"),
            }
        )
    meta: dict = {}
    for m in metas:  # earlier stages' records; the first file wins where two carry the same stage
        for k, v in m.items():
            if k.startswith("stage_") and k not in meta:
                meta[k] = v
    meta["recipe"] = {"average_of": inputs}
    chosen = float(metas[0]["score_threshold"]) if threshold is None else float(threshold)
    return save_detector(model, out, backbone=backbone, size=size, score_threshold=chosen, meta=meta)


def add_arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p.add_argument("weights", nargs="+", help="detector files of one lineage (two or more)")
    p.add_argument("--out", required=True, help="averaged weights file (.safetensors)")
    p.add_argument("--threshold", type=float, help="operating threshold to store (default: the first file's)")
    return p


def run(args: argparse.Namespace) -> int:
    try:
        out = average_detectors(args.weights, args.out, threshold=args.threshold)
    except (ValueError, FileNotFoundError, OSError) as e:
        print(f"average-detector: {e}", file=sys.stderr)
        return 2
    det = load_detector(out)
    print(
        json.dumps(
            {
                "out": str(out),
                "model_id": det.model_id,
                "average_of": [i["model_id"] for i in det.meta["recipe"]["average_of"]],
            }
        )
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="toonface average-detector",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    return run(add_arguments(parser).parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
