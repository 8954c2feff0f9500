"""Train the RetinaNet cartoon-face detector (``toonface train-detector``).

    toonface train-detector --train yolo:IMAGES:LABELS --train cava:FOLDER:train \\
        --val icartoonface=yolo:VAL_IMAGES:VAL_LABELS --val dexter=cava:FOLDER:val \\
        --out models/weights/detector.safetensors --checkpoint runs/det.ckpt

Sources (``--train``/``--val``, repeatable) are ``yolo:IMAGES:LABELS``, ``cava:FOLDER[:SPLIT]`` or
``coco:FILE.json:IMAGES`` (``models.det_data``). Each epoch logs the mean losses and, per ``--val`` set,
AP50/AP/recall (``models.det_metrics``) to ``<out>.train_log.json``.

Recipe: images augmented to ``--size`` squares (scale jitter 0.6-1.4, random crop/pad, flip, HSV jitter;
``models.det_data.augment``), torchvision's RetinaNet focal loss and a box loss (``--box-loss``: L1 on
the encoded offsets, torchvision's default, or GIoU on the decoded boxes, as its RetinaNet v2 recipe), SGD momentum 0.9, weight decay
1e-4, lr ``--lr`` (default 0.01 * batch / 16) with a linear warm-up over the first ``--warmup-steps`` and
cosine decay to zero over all planned steps, gradients clipped at norm 10 (from-scratch detectors
spike early). ``--init-embedder FILE`` starts a ResNet-18 body from our identity embedder's trunk.

Determinism: ``--seed`` fixes the initial weights, each epoch's order and every sample's augmentation
(drawn from (seed, epoch, position)), so a CPU run is repeatable and a resumed run sees the same data.
The network trains channels_last; ``--precision auto`` (models/precision.py) uses bf16 autocast on CUDA
(seeded, not bitwise repeatable) and on CPUs that compute bf16 natively (about twice as fast as fp32 on
a 2-core AMD EPYC with AVX512-BF16: 3.0 against 6.1 s a step at 576 px, batch 8), fp32 elsewhere.
``--checkpoint`` is rewritten after every epoch, every ``--checkpoint-minutes`` within one, and when
``--max-minutes`` stops the run; a rerun with the same arguments resumes from it, even after a kill.
An unreadable image is left out of its batch and named in the epoch's log entry.
``--init-detector WEIGHTS`` starts from a trained detector (to continue training, or to fine-tune).
A source given twice is sampled twice as often (its images appear twice in every epoch); the recipe
stored with the weights lists the sources as given.
The final weights go to ``--out`` (fp16 safetensors + metadata).
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from models.det_data import AugmentedBoxes, BoxedImage, collate, parse_source, summarise
from models.det_metrics import evaluate
from models.detector import (
    BACKBONES,
    DEFAULT_BACKBONE,
    DEFAULT_SIZE,
    FaceDetector,
    build_retinanet,
    check_input_size,
    init_from_embedder,
    load_detector,
    save_detector,
)
from models.detector_loop import Limits, Session, optimizer_for, run_epochs
from models.precision import PRECISIONS, precision_name, uses_bf16
from models.training import EpochBatches, default_workers, resolve_device, seed_everything

DEFAULT_OPERATING_THRESHOLD = 0.5
BOX_LOSSES = ("l1", "giou")


def validate(
    model,
    size: int,
    device: torch.device,
    val_sets: dict[str, list[BoxedImage]],
    threshold: float,
    batch_size: int = 16,
    precision: str = "auto",
) -> dict:
    was_training = model.training
    det = FaceDetector(model, backbone="", size=size, score_threshold=threshold, device=device, precision=precision)
    out = {}
    try:
        for name, items in val_sets.items():
            r = evaluate(
                lambda imgs: det.detect_many(imgs, batch_size=batch_size, score_threshold=0.05),
                items,
                threshold,
                batch_size,
            )
            out[name] = {k: r[k] for k in ("ap50", "ap", "recall", "precision_at_threshold", "recall_at_threshold")}
    finally:
        model.train(was_training)  # FaceDetector left it channels_last, as training wants it
    return out


def _initial_model(
    backbone: str, size: int, init_embedder, init_detector, box_loss: str, dev: torch.device, log
) -> torch.nn.Module:
    """The RetinaNet to train, on ``dev`` in training mode and channels_last: fresh (seeded by the caller),
    its body from an embedder's trunk, or a trained detector's weights."""
    model = build_retinanet(backbone, size)
    if init_embedder:
        n = init_from_embedder(model, init_embedder)
        log(f"initialised {n} backbone tensors from {init_embedder}")
    if init_detector:
        trained = load_detector(init_detector, fold_norms=False)
        if trained.backbone != backbone:
            raise ValueError(f"{init_detector} is a {trained.backbone} detector, not {backbone}")
        model.load_state_dict(trained.model.state_dict())  # load_detector builds it in fp32
        log(f"initialised from detector {trained.model_id}")
    # torchvision picks the regression head's loss by this attribute (its v2 recipe sets "giou" the same way).
    model.head.regression_head._loss_type = box_loss
    return model.to(dev).train().to(memory_format=torch.channels_last)


def _write_outputs(session: Session, out_path: Path | None, recipe: dict, threshold: float) -> None:
    """The weights with the recipe and history (``save_detector``), and ``<out>.train_log.json``."""
    if out_path is None:
        return
    recipe = dict(recipe, steps=session.step)
    save_detector(
        session.model,
        out_path,
        backbone=recipe["backbone"],
        size=recipe["size"],
        score_threshold=threshold,
        meta={"recipe": recipe, "history": session.history},
    )
    out_path.with_suffix(".train_log.json").write_text(
        json.dumps({"recipe": recipe, "history": session.history}, indent=2)
    )


def _epoch_batches(n_items: int, batch_size: int, seed: int) -> EpochBatches:
    """The seeded order of each epoch's batches; refuses a set smaller than one batch."""
    sampler = EpochBatches(n_items, batch_size, seed)
    if sampler.n_batches == 0:
        raise ValueError(f"{n_items} training images are fewer than one batch of {batch_size}")
    return sampler


def _loader(
    train_items: Sequence[BoxedImage],
    size: int,
    augment: bool,
    sampler: EpochBatches,
    dev: torch.device,
    workers,
    style: bool = False,
) -> DataLoader:
    """The augmented letterboxed batches in ``sampler``'s order (loader processes only on CUDA by default)."""
    n_workers = default_workers(dev) if workers is None else workers
    return DataLoader(
        AugmentedBoxes(train_items, size, augment, style),
        batch_sampler=sampler,
        collate_fn=collate,
        num_workers=n_workers,
        persistent_workers=n_workers > 0,
        pin_memory=dev.type == "cuda",
    )


def _result(session: Session, stopped_early: bool, t_start: float) -> dict:
    """What ``train`` returns."""
    return {
        "model": session.model,
        "history": session.history,
        "step_losses": session.step_losses,
        "steps": session.step,
        "stopped_early": stopped_early,
        "seconds": time.time() - t_start,
    }


# long: one line per keyword argument (the CLI's flags) and per field of the recipe that records them
def train(
    train_items: Sequence[BoxedImage],
    *,
    val_sets: dict[str, list[BoxedImage]] | None = None,
    backbone: str = DEFAULT_BACKBONE,
    size: int = DEFAULT_SIZE,
    epochs: float = 12,
    batch_size: int = 8,
    lr: float | None = None,
    weight_decay: float = 1e-4,
    warmup_steps: int = 300,
    seed: int = 0,
    device: str = "auto",
    out: str | Path | None = None,
    checkpoint: str | Path | None = None,
    max_minutes: float | None = None,
    checkpoint_minutes: float = 10.0,
    max_steps: int | None = None,
    workers: int | None = None,
    init_embedder: str | Path | None = None,
    init_detector: str | Path | None = None,
    threshold: float = DEFAULT_OPERATING_THRESHOLD,
    augment: bool = True,
    style_augment: bool = False,
    sources: Sequence[str] = (),
    precision: str = "auto",
    box_loss: str = "l1",
    log=print,
) -> dict:
    """Train; returns {"model", "history", "step_losses", "steps", "stopped_early", "seconds"}.

    ``epochs`` may be fractional (0.6: the first 60% of one shuffled pass): the lr schedule spans exactly
    the steps planned, so a short fine-tuning cycle still decays to zero."""
    if not epochs > 0:  # refused before any weights are built or loaded
        raise ValueError(f"epochs must be positive, got {epochs!r}")
    if box_loss not in BOX_LOSSES:
        raise ValueError(f"unknown box loss {box_loss!r}; choose one of {', '.join(BOX_LOSSES)}")
    dev = resolve_device(device)
    use_bf16 = uses_bf16(precision, dev)  # refuses an unknown precision before any work
    seed_everything(seed)
    model = _initial_model(backbone, size, init_embedder, init_detector, box_loss, dev, log)
    base_lr = lr if lr is not None else 0.01 * batch_size / 16
    sampler = _epoch_batches(len(train_items), batch_size, seed)
    total_steps = max(1, round(sampler.n_batches * epochs))
    ckpt_path = Path(checkpoint) if checkpoint else None
    opt = optimizer_for(model, base_lr, weight_decay)
    session = Session(model, opt, dev, use_bf16, base_lr, total_steps, warmup_steps, ckpt_path)
    start = session.resume(log) if ckpt_path and ckpt_path.exists() else (0, 0, None)
    loader = _loader(train_items, size, augment, sampler, dev, workers, style_augment)
    # "steps" is filled in when written
    recipe = {
        "backbone": backbone,
        "size": size,
        "epochs": epochs,
        "batch_size": batch_size,
        "lr": base_lr,
        "weight_decay": weight_decay,
        "warmup_steps": warmup_steps,
        "seed": seed,
        "init_embedder": str(init_embedder) if init_embedder else None,
        "init_detector": str(init_detector) if init_detector else None,
        "steps": None,
        "augment": augment,
        "style_augment": style_augment,
        "device": str(dev),
        "precision": precision_name(use_bf16),
        "box_loss": box_loss,
        "train": summarise(train_items),
        "sources": list(sources),
    }
    validate_fn = (lambda m: validate(m, size, dev, val_sets, threshold, precision=precision)) if val_sets else None
    write_outputs = functools.partial(_write_outputs, session, Path(out) if out else None, recipe, threshold)
    limits = Limits(time.time(), max_minutes, max_steps, checkpoint_minutes)
    stopped_early = run_epochs(session, loader, sampler, start, limits, validate_fn, write_outputs, log)
    return _result(session, stopped_early, limits.t_start)


def parse_val(specs: Sequence[str]) -> dict[str, list[BoxedImage]]:
    out = {}
    for spec in specs:
        name, sep, source = spec.partition("=")
        if not sep:
            raise ValueError(f"--val wants NAME=SOURCE, got {spec!r}")
        out[name] = parse_source(source)
    return out


def add_arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p.add_argument(
        "--train",
        action="append",
        required=True,
        metavar="SOURCE",
        help="yolo:IMAGES:LABELS | cava:FOLDER[:SPLIT] | coco:FILE.json:IMAGES (repeatable)",
    )
    p.add_argument("--val", action="append", default=[], metavar="NAME=SOURCE", help="validation set (repeatable)")
    p.add_argument("--backbone", choices=BACKBONES, default=DEFAULT_BACKBONE)
    p.add_argument(
        "--size", type=int, default=DEFAULT_SIZE, help="square training/inference size (a multiple of 32, 128 to 2048)"
    )
    p.add_argument("--epochs", type=float, default=12, help="passes over the data; may be fractional (0.5)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--lr", type=float)
    p.add_argument("--weight-decay", type=float, default=1e-4)
    p.add_argument("--warmup-steps", type=int, default=300)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument(
        "--precision",
        choices=PRECISIONS,
        default="auto",
        help="auto: bf16 on CUDA and on CPUs that compute bf16 natively, else fp32",
    )
    p.add_argument(
        "--box-loss",
        choices=BOX_LOSSES,
        default="l1",
        help="box regression loss: l1 on encoded offsets (default) or giou on decoded boxes",
    )
    p.add_argument("--workers", type=int)
    p.add_argument(
        "--threshold",
        type=float,
        default=DEFAULT_OPERATING_THRESHOLD,
        help="operating score threshold stored with the weights",
    )
    p.add_argument("--init-embedder", help="start a resnet18 body from this embedder's trunk")
    p.add_argument(
        "--init-detector",
        metavar="WEIGHTS",
        help="start from trained detector weights (continue training, or fine-tune on your own frames)",
    )
    p.add_argument("--out", required=True, help="weights file (.safetensors)")
    p.add_argument("--checkpoint", help="resume from / save to this file")
    p.add_argument("--max-minutes", type=float)
    p.add_argument(
        "--checkpoint-minutes",
        type=float,
        default=10.0,
        help="also rewrite --checkpoint this often within an epoch (default 10)",
    )
    p.add_argument("--max-steps", type=int)
    p.add_argument("--no-augment", dest="augment", action="store_false", help="letterbox only (for debugging)")
    p.add_argument("--style-augment", action="store_true", help="also change drawing style (det_data.restyle)")
    return p


def run(args: argparse.Namespace) -> int:
    try:
        check_input_size(args.size)  # the sizes the detector loads and runs at
    except ValueError as e:
        print(f"train-detector: --size: {e}", file=sys.stderr)
        return 2
    if not args.epochs > 0:
        print(f"train-detector: --epochs must be positive, got {args.epochs}", file=sys.stderr)
        return 2
    try:
        items = [it for spec in args.train for it in parse_source(spec)]
        val_sets = parse_val(args.val)
    except (ValueError, FileNotFoundError) as e:
        print(f"train-detector: {e}", file=sys.stderr)
        return 2
    print(f"training on {summarise(items)}; val sets: { {k: summarise(v) for k, v in val_sets.items()} }", flush=True)
    result = train(
        items,
        val_sets=val_sets,
        backbone=args.backbone,
        size=args.size,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        weight_decay=args.weight_decay,
        warmup_steps=args.warmup_steps,
        seed=args.seed,
        device=args.device,
        out=args.out,
        checkpoint=args.checkpoint,
        max_minutes=args.max_minutes,
        checkpoint_minutes=args.checkpoint_minutes,
        max_steps=args.max_steps,
        workers=args.workers,
        init_embedder=args.init_embedder,
        init_detector=args.init_detector,
        threshold=args.threshold,
        augment=args.augment,
        style_augment=args.style_augment,
        sources=args.train,
        precision=args.precision,
        box_loss=args.box_loss,
        log=lambda m: print(m, flush=True),
    )
    print(
        json.dumps(
            {
                "steps": result["steps"],
                "seconds": round(result["seconds"], 1),
                "stopped_early": result["stopped_early"],
                "out": args.out,
            }
        )
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="toonface train-detector",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    return run(add_arguments(parser).parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
