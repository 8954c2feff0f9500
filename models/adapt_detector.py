"""Adapt the face detector to a new show from a few boxed frames (``toonface adapt-detector``).

    toonface adapt-detector --train cava:MY_SHOW:train --out runs/my_show_detector.safetensors
    toonface ingest --library /media --set detector_weights=runs/my_show_detector.safetensors

A short fine-tune of the shipped weights (or ``--init-detector``) on the user's frames, sized by how many
frames there are: ``steps_for(n)`` optimiser steps of 8 frames (at least 40, at most 150: about 2 to 8
minutes on a 2-core CPU at 576 px), lr 0.003 with a 10-step warm-up and cosine decay, the usual
augmentation without drawing-style changes (the frames are the style). ``--frames N`` takes a seeded
random N of the frames given (for learning curves). The operating threshold of the starting weights is
kept. Everything else is ``toonface train-detector``'s (checkpoint and resume, bf16 where native).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from models.det_data import BoxedImage, parse_source, summarise
from models.detector import load_detector
from models.train_detector import train

SHIPPED_WEIGHTS = Path(__file__).resolve().parent / "weights" / "detector.safetensors"
BATCH_SIZE = 8
LEARNING_RATE = 0.003
WARMUP_STEPS = 10
MIN_STEPS, MAX_STEPS = 40, 150


def steps_for(n_frames: int) -> int:
    """About one step per frame: few frames are seen many times, many frames a few times each."""
    return int(np.clip(n_frames, MIN_STEPS, MAX_STEPS))


def choose_frames(items: list[BoxedImage], n: int | None, seed: int) -> list[BoxedImage]:
    """A seeded random ``n`` of the frames (all of them when ``n`` is None); refuses fewer than a batch."""
    if n is not None:
        if n > len(items):
            raise ValueError(f"--frames {n}: only {len(items)} boxed frames given")
        picked = np.random.default_rng(seed).choice(len(items), size=n, replace=False)
        items = [items[i] for i in sorted(picked)]
    if len(items) < BATCH_SIZE:
        raise ValueError(f"{len(items)} boxed frames: adapting needs at least {BATCH_SIZE}")
    return items


def adapt(
    items: list[BoxedImage],
    *,
    init_detector: str | Path = SHIPPED_WEIGHTS,
    out: str | Path | None = None,
    checkpoint: str | Path | None = None,
    seed: int = 0,
    size: int | None = None,
    steps: int | None = None,
    device: str = "auto",
    log=print,
) -> dict:
    """Fine-tune ``init_detector`` on ``items``; returns ``models.train_detector.train``'s result."""
    start = load_detector(init_detector, fold_norms=False)
    steps = steps or steps_for(len(items))
    # Repeat the frames so that one "epoch" of the schedule is exactly the steps wanted.
    repeats = -(-steps * BATCH_SIZE // len(items))
    pool = items * repeats
    return train(
        pool,
        backbone=start.backbone,
        size=size or start.size,
        epochs=steps / (len(pool) // BATCH_SIZE),
        batch_size=BATCH_SIZE,
        lr=LEARNING_RATE,
        warmup_steps=WARMUP_STEPS,
        seed=seed,
        device=device,
        out=out,
        checkpoint=checkpoint,
        init_detector=init_detector,
        threshold=start.score_threshold,
        sources=[f"adapt: {len(items)} frames x {repeats}"],
        log=log,
    )


def add_arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p.add_argument("--train", action="append", required=True, metavar="SOURCE", help="the new show's boxed frames")
    p.add_argument("--frames", type=int, help="a seeded random N of the frames (default: all)")
    p.add_argument("--init-detector", default=str(SHIPPED_WEIGHTS), help="weights to adapt (default: shipped)")
    p.add_argument("--out", required=True, help="adapted weights (.safetensors)")
    p.add_argument("--checkpoint", help="resume from / save to this file")
    p.add_argument("--steps", type=int, help=f"optimiser steps (default: frames, {MIN_STEPS} to {MAX_STEPS})")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    return p


def run(args: argparse.Namespace) -> int:
    try:
        items = choose_frames([it for spec in args.train for it in parse_source(spec)], args.frames, args.seed)
    except (ValueError, FileNotFoundError) as e:
        print(f"adapt-detector: {e}", file=sys.stderr)
        return 2
    print(f"adapting {Path(args.init_detector).name} on {summarise(items)}", flush=True)
    result = adapt(
        items,
        init_detector=args.init_detector,
        out=args.out,
        checkpoint=args.checkpoint,
        seed=args.seed,
        steps=args.steps,
        device=args.device,
        log=lambda m: print(m, flush=True),
    )
    print(json.dumps({"steps": result["steps"], "seconds": round(result["seconds"], 1), "out": args.out}))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="toonface adapt-detector", description=__doc__.split("\n\n")[0])
    return run(add_arguments(parser).parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
