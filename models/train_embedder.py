"""Train the cartoon-face embedder on identity-labelled crops (``toonface train-embedder``).

Data sources (any mix, repeatable):
* ``--data DIR``: folders of ``DIR/<identity>/*.jpg|png|...`` (e.g. hololive_danbooru, moeimouto/train).
  The folder name is the identity; the same name under two ``--data`` roots is the same identity.
* ``--cava FOLDER``: a CAVA-style ``FOLDER/boxes.csv`` (split,image,x1,y1,x2,y2,identity). Each box of
  ``--cava-split`` (default train) is cut from its frame at the paper's enlarged rate 1.0
  (``models.crop.enlarged_box``, clipped at the frame border); ``unknown`` (minor characters) is skipped.
  Identities are named ``<folder name>/<identity>`` (e.g. ``scooby_doo/fred``). (``models.identity_data``)

Recipe (paper: SGD, lr 0.1 at batch 128, x0.1 at 40/60/80% of the epochs): SGD momentum 0.9, weight decay
5e-4, default lr = 0.1 * batch_size / 128 (linear scaling), linear warm-up over the first
``min(500, 2 epochs)`` steps, then x0.1 at 40%, 60% and 80% of the planned steps. Augmentation for cartoons:
small rotation (+-10 deg), random resized crop (area scale ``--min-crop-scale``-1.0, default 0.7; aspect
3/4-4/3) to input_size,
horizontal flip, colour jitter (brightness/contrast/saturation 0.3, hue 0.05: cartoons re-colour
characters between episodes and styles).

Determinism: ``--seed`` seeds torch, numpy and random; the order of each epoch is a permutation drawn
from (seed, epoch) and each sample's augmentation is drawn from its own seed (seed, epoch, position), so
results do not depend on the number of loader workers nor on where a run was stopped and resumed. On the
CPU a run is bit-for-bit repeatable; on CUDA (bf16 autocast, channels_last, cuDNN autotuning) it is seeded
but not bitwise repeatable.

Device: ``--device auto`` uses CUDA when present, else the CPU with ``torch.get_num_threads()`` threads
(set with ``--threads`` or OMP_NUM_THREADS; not overridden otherwise). ``--precision auto``
(models/precision.py) trains in bf16 autocast, channels_last, on CUDA and on CPUs that compute bf16
natively (AVX512-BF16 or AMX: 1.6x faster a step for ResNet-18, 1.8x for DenseNet-169 on a 2-core
AMD EPYC with AVX512-BF16), in fp32 elsewhere; the recipe says which.

Outputs: ``--out model.safetensors`` (``models.embedder.save_embedder``: fp16 weights, identities and the
recipe as metadata) and ``model.train_log.json`` beside it (config, identities, one entry per epoch).
``--checkpoint ckpt.pt``: resume from it when it exists; it is rewritten after every epoch and when
``--max-minutes`` stops the run (which also saves ``--out``), so a run can continue over several sessions.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
import torch.nn as nn
from torch.utils.data import DataLoader

from models.embedder import BACKBONES, DEFAULT_BACKBONE, DEFAULT_DIM, DEFAULT_DROPOUT, DEFAULT_INPUT_SIZE, Embedder
from models.embedder_loop import Limits, Session, run_epochs, save_outputs
from models.identity_data import (
    DEFAULT_MIN_CROP_SCALE,
    ENLARGE_RATE,
    FaceDataset,
    Sample,
    cava_identity_crops,
    identity_folders,
)
from models.margins import HEADS, make_head
from models.precision import PRECISIONS, precision_name, uses_bf16
from models.training import EpochBatches, default_workers, resolve_device, seed_everything


@dataclasses.dataclass
class TrainResult:
    model: Embedder
    head: nn.Module
    identities: list[str]
    history: list[dict]  # one dict per epoch (finished or partial)
    step_losses: list[float]  # every optimiser step of this call, in order
    steps: int  # optimiser steps taken in total (including resumed ones)
    stopped_early: bool  # --max-minutes or max_steps ended the run before all epochs
    out: Path | None
    log_path: Path | None
    seconds: float


def build_model(
    *,
    backbone: str,
    dim: int,
    input_size: int,
    dropout: float,
    head: str,
    classes: int,
    head_kwargs: dict | None = None,
    seed: int = 0,
) -> tuple[Embedder, nn.Module]:
    """The untrained embedder and head exactly as ``train`` starts them for this ``seed``."""
    seed_everything(seed)
    model = Embedder(backbone=backbone, dim=dim, input_size=input_size, dropout=dropout)
    classifier = make_head(head, dim, classes, **(head_kwargs or {}))
    return model, classifier


def _start_session(config: dict, identities: list[str], dev: torch.device, use_bf16: bool) -> Session:
    """The seeded untrained networks on ``dev`` and their SGD optimiser (no weight decay on norms and biases)."""
    model, classifier = build_model(
        backbone=config["backbone"],
        dim=config["dim"],
        input_size=config["input_size"],
        dropout=config["dropout"],
        head=config["head"],
        classes=len(identities),
        head_kwargs=config["head_kwargs"],
        seed=config["seed"],
    )
    model.to(dev)
    classifier.to(dev)
    if dev.type == "cuda" or use_bf16:  # as Session.channels_last
        model.to(memory_format=torch.channels_last)
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True
    params = list(model.parameters()) + list(classifier.parameters())
    # No weight decay on BatchNorm/bias parameters.
    decay = [p for p in params if p.ndim > 1]
    no_decay = [p for p in params if p.ndim <= 1]
    opt = torch.optim.SGD(
        [{"params": decay, "weight_decay": config["weight_decay"]}, {"params": no_decay, "weight_decay": 0.0}],
        lr=config["lr"],
        momentum=config["momentum"],
        nesterov=True,
    )
    total_steps = config["samples"] // config["batch_size"] * config["epochs"]
    return Session(model, classifier, opt, dev, use_bf16, config, identities, total_steps)


def _loader(
    samples: Sequence[Sample], identities: list[str], config: dict, min_crop_scale: float, workers: int, cuda: bool
) -> tuple[DataLoader, EpochBatches]:
    """The augmented training batches, in the seeded order of each epoch, and their sampler."""
    label_of = {name: i for i, name in enumerate(identities)}
    dataset = FaceDataset(
        samples,
        [label_of[s.identity] for s in samples],
        config["input_size"],
        augment=True,
        min_crop_scale=min_crop_scale,
        degrade=config.get("degrade", False),
    )
    sampler = EpochBatches(len(samples), config["batch_size"], config["seed"])
    # The loader gets its own generator: creating its iterator would otherwise draw from the global RNG
    # (which dropout uses), and a resumed run would then diverge from an uninterrupted one.
    loader = DataLoader(
        dataset,
        batch_sampler=sampler,
        num_workers=workers,
        pin_memory=cuda,
        persistent_workers=workers > 0,
        generator=torch.Generator().manual_seed(config["seed"]),
    )
    return loader, sampler


def _identities(samples: Sequence[Sample], min_crop_scale: float) -> list[str]:
    identities = sorted({s.identity for s in samples})
    if len(identities) < 2:
        raise ValueError(f"need at least 2 identities, got {identities}")
    if not 0 < min_crop_scale <= 1:
        raise ValueError(f"min_crop_scale must be in (0, 1], got {min_crop_scale}")
    return identities


def _announce(
    config: dict, identities: list[str], dev: torch.device, use_bf16: bool, workers: int, log: Callable[[str], None]
) -> None:
    """One log line with what is about to be trained, on what, and how fast it steps through the data."""
    n, batch_size = config["samples"], config["batch_size"]
    log(
        f"training {config['backbone']} {config['input_size']}px dim {config['dim']} + {config['head']} on {n} crops "
        f"of {len(identities)} identities, {dev.type} {precision_name(use_bf16)}, batch {batch_size}, "
        f"{n // batch_size} steps/epoch, {config['epochs']} epochs, lr {config['lr']:g}, "
        f"threads {torch.get_num_threads()}, workers {workers}"
    )


def _finish(
    session: Session,
    out: Path | None,
    step_losses: list[float],
    stopped: bool,
    t_start: float,
    log: Callable[[str], None],
) -> TrainResult:
    """The trained model in eval mode with its stored ``flip_average``, its files written when ``out`` is given."""
    session.model.eval()
    session.model.flip_average = session.config["flip_average"]
    seconds = time.monotonic() - t_start
    log_path = out.with_name(out.name.removesuffix(".safetensors") + ".train_log.json") if out else None
    if out is not None:
        save_outputs(session, out, log_path, stopped, seconds, log)
    return TrainResult(
        session.model,
        session.classifier,
        session.identities,
        session.history,
        step_losses,
        session.step,
        stopped,
        out,
        log_path,
        seconds,
    )


# long: one line per keyword argument (the CLI's flags) and per field of the config that records them
def train(
    samples: Sequence[Sample],
    *,
    head: str = "cosface",
    epochs: int = 30,
    batch_size: int = 32,
    lr: float | None = None,
    input_size: int = DEFAULT_INPUT_SIZE,
    backbone: str = DEFAULT_BACKBONE,
    dim: int = DEFAULT_DIM,
    dropout: float = DEFAULT_DROPOUT,
    seed: int = 0,
    out: str | Path | None = None,
    device: str = "auto",
    max_minutes: float | None = None,
    checkpoint: str | Path | None = None,
    workers: int | None = None,
    momentum: float = 0.9,
    weight_decay: float = 5e-4,
    warmup_steps: int | None = None,
    head_kwargs: dict | None = None,
    max_steps: int | None = None,
    sources: Sequence[str] = (),
    flip_average: bool = True,
    min_crop_scale: float = DEFAULT_MIN_CROP_SCALE,
    degrade: bool = False,
    precision: str = "auto",
    log: Callable[[str], None] = print,
) -> TrainResult:
    """Train an ``Embedder`` + margin head on ``samples``; save to ``out`` (safetensors) when given.

    ``flip_average`` is stored in the saved file: the model's ``embed`` then averages each crop with its
    mirror image (``models.embedder``); training itself is unaffected.

    ``max_steps`` (for tests and smoke runs) stops after that many optimiser steps in this call, like
    ``max_minutes`` does after that much time; both save ``out`` and ``checkpoint`` before returning.
    """
    t_start = time.monotonic()
    if not samples:
        raise ValueError("no training samples")
    seed_everything(seed)
    dev = resolve_device(device)
    use_bf16 = uses_bf16(precision, dev)  # refuses an unknown precision before any work
    identities = _identities(samples, min_crop_scale)
    n, batch_size = len(samples), min(batch_size, len(samples))
    steps_per_epoch = n // batch_size
    config = {
        "head": head,
        "head_kwargs": dict(head_kwargs or {}),
        "epochs": epochs,
        "batch_size": batch_size,
        "lr": 0.1 * batch_size / 128 if lr is None else lr,
        "momentum": momentum,
        "weight_decay": weight_decay,
        "warmup_steps": min(500, 2 * steps_per_epoch) if warmup_steps is None else warmup_steps,
        "schedule": "linear warm-up, x0.1 at 40/60/80% of steps",
        "optimizer": "SGD nesterov",
        "input_size": input_size,
        "backbone": backbone,
        "dim": dim,
        "dropout": dropout,
        "seed": seed,
        "augmentation": f"rotate +-10, random resized crop {min_crop_scale:g}-1.0 ratio 3/4-4/3, hflip, "
        "colour jitter 0.3/0.3/0.3/0.05"
        + ("; first 25% shrunk to 24-64 px, 30% JPEG q30-95, 20% blur sigma 0.1-1.5" if degrade else ""),
        "degrade": degrade,
        "enlarge_rate": ENLARGE_RATE,
        "sources": list(sources),
        "samples": n,
        "flip_average": flip_average,
    }
    session = _start_session(config, identities, dev, use_bf16)
    ckpt_path = Path(checkpoint) if checkpoint else None
    start = session.resume(ckpt_path, log) if ckpt_path is not None and ckpt_path.exists() else (0, 0)
    workers = default_workers(dev) if workers is None else workers
    out = Path(out) if out else None
    if start[0] >= epochs:
        log(f"checkpoint {ckpt_path} has finished all {epochs} epochs; saving its weights")
    _announce(config, identities, dev, use_bf16, workers, log)
    loader, sampler = _loader(samples, identities, config, min_crop_scale, workers, session.cuda)
    limits = Limits(t_start + max_minutes * 60 if max_minutes else None, max_minutes, max_steps)
    step_losses, stopped = run_epochs(session, loader, sampler, start, limits, ckpt_path, log)
    return _finish(session, out, step_losses, stopped, t_start, log)


# ------------------------------------------------------------------------------------------------- CLI


def add_arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
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
    p.add_argument("--cava-split", default="train", help="boxes.csv split to train on (default train)")
    p.add_argument("--head", choices=sorted(HEADS), default="cosface", help="margin head (default cosface)")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=None, help="default 0.1 * batch-size / 128")
    p.add_argument("--input-size", type=int, default=DEFAULT_INPUT_SIZE)
    p.add_argument(
        "--min-crop-scale",
        type=float,
        default=DEFAULT_MIN_CROP_SCALE,
        help=f"smallest area share kept by the random resized crop (default {DEFAULT_MIN_CROP_SCALE})",
    )
    p.add_argument("--degrade", action="store_true", help="also augment with small faces upscaled, JPEG and blur")
    p.add_argument("--backbone", choices=BACKBONES, default=DEFAULT_BACKBONE)
    p.add_argument("--dim", type=int, default=DEFAULT_DIM)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, metavar="PATH.safetensors")
    p.add_argument("--device", default="auto", help="auto|cpu|cuda (default auto)")
    p.add_argument(
        "--precision",
        choices=PRECISIONS,
        default="auto",
        help="auto (bf16 on CUDA and on CPUs with native bf16, else fp32), bf16 or fp32",
    )
    p.add_argument("--max-minutes", type=float, default=None, help="stop cleanly after N minutes and save")
    p.add_argument(
        "--checkpoint",
        default=None,
        metavar="PATH",
        help="resume from PATH when it exists; rewritten every epoch and on stop",
    )
    p.add_argument("--workers", type=int, default=None, help="data loader processes (default 0 on CPU, 8 on CUDA)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's own)")
    p.add_argument(
        "--no-flip-average",
        dest="flip_average",
        action="store_false",
        help="the saved model embeds each crop once, not averaged with its mirror image (half the embedding cost)",
    )
    return p


def run(args: argparse.Namespace) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    samples: list[Sample] = []
    sources: list[str] = []
    for d in args.data:
        samples += identity_folders(d)
        sources.append(f"folders:{d}")
    for c in args.cava:
        samples += cava_identity_crops(c, args.cava_split)
        sources.append(f"cava:{c}:{args.cava_split}")
    if not samples:
        print("train-embedder: no data; give --data DIR and/or --cava FOLDER", file=sys.stderr)
        return 2
    train(
        samples,
        head=args.head,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        input_size=args.input_size,
        backbone=args.backbone,
        dim=args.dim,
        seed=args.seed,
        out=args.out,
        device=args.device,
        max_minutes=args.max_minutes,
        checkpoint=args.checkpoint,
        workers=args.workers,
        sources=sources,
        flip_average=args.flip_average,
        min_crop_scale=args.min_crop_scale,
        degrade=args.degrade,
        precision=args.precision,
        log=lambda s: print(s, flush=True),
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="toonface train-embedder",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
