"""Train the cartoon-face embedder on identity-labelled crops (``toonface train-embedder``).

Data sources (any mix, repeatable):
* ``--data DIR``: folders of ``DIR/<identity>/*.jpg|png|...`` (e.g. hololive_danbooru, moeimouto/train).
  The folder name is the identity; the same name under two ``--data`` roots is the same identity.
* ``--cava FOLDER``: a CAVA-style ``FOLDER/boxes.csv`` (split,image,x1,y1,x2,y2,identity). Each box of
  ``--cava-split`` (default train) is cut from its frame at the paper's enlarged rate 1.0
  (``pipeline.crop.enlarged_box``, clipped at the frame border); ``unknown`` (minor characters) is skipped.
  Identities are named ``<folder name>/<identity>`` (e.g. ``scooby_doo/fred``).

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
import csv
import dataclasses
import json
import math
import os
import random
import sys
import time
from pathlib import Path
from typing import Callable, Iterable, Sequence

import cv2
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, Sampler

from models.embedder import (BACKBONES, DEFAULT_BACKBONE, DEFAULT_DIM, DEFAULT_DROPOUT, DEFAULT_INPUT_SIZE,
                             MEAN_RGB, STD_RGB, Embedder, preprocess, save_embedder)
from models.margins import HEADS, make_head
from models.precision import PRECISIONS, precision_name, uses_bf16
from pipeline.crop import cut, enlarged_box

IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}
ENLARGE_RATE = 1.0
# Random resized crops keep at least this share of a crop's area (see `augmentation`).
DEFAULT_MIN_CROP_SCALE = 0.7


# ----------------------------------------------------------------------------------------------- data

@dataclasses.dataclass(frozen=True)
class Sample:
    """One labelled face: a whole image file, or a face box in a frame (cut at ``enlarge_rate``)."""
    path: str
    identity: str
    box: tuple[float, float, float, float] | None = None
    enlarge_rate: float = ENLARGE_RATE

    def load(self) -> np.ndarray:
        """The BGR uint8 crop."""
        img = cv2.imread(self.path, cv2.IMREAD_COLOR)
        if img is None:
            raise OSError(f"cannot read image {self.path}")
        if self.box is not None:
            h, w = img.shape[:2]
            img = cut(img, enlarged_box(self.box, w, h, self.enlarge_rate))
            if img.size == 0:
                raise ValueError(f"empty crop {self.box} in {self.path}")
        return img


def identity_folders(root: str | Path) -> list[Sample]:
    """``root/<identity>/<image>`` -> samples, sorted by identity then file name."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"not a folder: {root}")
    samples = []
    for d in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        for f in sorted(d.iterdir()):
            if f.is_file() and f.suffix.lower() in IMAGE_EXTS:
                samples.append(Sample(str(f), d.name))
    return samples


def cava_identity_crops(folder: str | Path, split: str = "train", enlarge_rate: float = ENLARGE_RATE,
                        skip_identities: Iterable[str] = ("unknown",)) -> list[Sample]:
    """Face boxes of ``split`` in ``folder/boxes.csv`` as samples cut at ``enlarge_rate`` on load.

    Identity names are ``<folder name>/<identity>``; boxes labelled ``unknown`` are skipped.
    """
    folder = Path(folder)
    skip = set(skip_identities)
    samples = []
    with open(folder / "boxes.csv", newline="") as fh:
        for row in csv.DictReader(fh):
            if row["split"] != split or row["identity"] in skip:
                continue
            box = tuple(float(row[k]) for k in ("x1", "y1", "x2", "y2"))
            if box[2] <= box[0] or box[3] <= box[1]:
                continue
            samples.append(Sample(str(folder / row["image"]), f"{folder.name}/{row['identity']}", box,
                                  enlarge_rate))
    return samples


def augmentation(input_size: int, min_crop_scale: float = DEFAULT_MIN_CROP_SCALE):
    """Training transform on a uint8 CHW RGB tensor -> normalised float CHW tensor. ``min_crop_scale``:
    the smallest share of the crop's area a random resized crop keeps (a face found by the detector is
    framed differently from a typical image; a low value teaches the model both framings)."""
    from torchvision.transforms import v2

    return v2.Compose([
        v2.RandomRotation(10, interpolation=v2.InterpolationMode.BILINEAR),
        v2.RandomResizedCrop(input_size, scale=(min_crop_scale, 1.0), ratio=(3 / 4, 4 / 3), antialias=True),
        v2.RandomHorizontalFlip(),
        v2.ColorJitter(brightness=0.3, contrast=0.3, saturation=0.3, hue=0.05),
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(MEAN_RGB, STD_RGB),
    ])


class FaceDataset(Dataset):
    """Indexed by ``(index, augmentation_seed)``: each sample's augmentation is a function of its seed."""

    def __init__(self, samples: Sequence[Sample], labels: Sequence[int], input_size: int, augment: bool = True,
                 min_crop_scale: float = DEFAULT_MIN_CROP_SCALE):
        self.samples, self.labels = list(samples), list(labels)
        self.input_size = input_size
        self.transform = augmentation(input_size, min_crop_scale) if augment else None
        # Decode once at a bounded size: the crop then works on small images (cheap), with head-room
        # above input_size so random resized crops keep detail.
        self.decode_size = int(round(input_size * 1.25))

    def __len__(self):
        return len(self.samples)

    def _image(self, i: int) -> np.ndarray:
        img = self.samples[i].load()
        h, w = img.shape[:2]
        s = self.decode_size / max(h, w)
        if s < 1:
            img = cv2.resize(img, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)
        return np.ascontiguousarray(img[:, :, ::-1])  # RGB

    def __getitem__(self, key):
        i, seed = key
        if self.transform is None:  # evaluation: exactly what inference does
            return preprocess([self.samples[i].load()], self.input_size)[0], self.labels[i]
        x = torch.from_numpy(self._image(i)).permute(2, 0, 1).contiguous()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(seed))
            x = self.transform(x)
        return x, self.labels[i]


def epoch_order(n: int, seed: int, epoch: int) -> tuple[np.ndarray, np.ndarray]:
    """The permutation of ``n`` samples for ``epoch`` and one augmentation seed per position."""
    rng = np.random.default_rng([int(seed), int(epoch)])
    return rng.permutation(n), rng.integers(0, 2**62, size=n)


class EpochBatches(Sampler):
    """Batches of (index, seed) for the current epoch, from ``start_batch`` on (resume); the last partial
    batch is dropped. ``set_epoch`` before each pass (one sampler serves a persistent loader)."""

    def __init__(self, n: int, batch_size: int, seed: int):
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self.n_batches = n // batch_size
        self.set_epoch(0)

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        self.epoch, self.start_batch = epoch, start_batch
        self.order, self.seeds = epoch_order(self.n, self.seed, epoch)

    def __len__(self):
        return max(0, self.n_batches - self.start_batch)

    def __iter__(self):
        for b in range(self.start_batch, self.n_batches):
            sl = slice(b * self.batch_size, (b + 1) * self.batch_size)
            yield [(int(i), int(s)) for i, s in zip(self.order[sl], self.seeds[sl])]


# -------------------------------------------------------------------------------------------- training

@dataclasses.dataclass
class TrainResult:
    model: Embedder
    head: nn.Module
    identities: list[str]
    history: list[dict]           # one dict per epoch (finished or partial)
    step_losses: list[float]      # every optimiser step of this call, in order
    steps: int                    # optimiser steps taken in total (including resumed ones)
    stopped_early: bool           # --max-minutes or max_steps ended the run before all epochs
    out: Path | None
    log_path: Path | None
    seconds: float


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError("--device cuda asked for, but torch sees no CUDA device")
    return torch.device(device)


def lr_factor(step: int, total_steps: int, warmup_steps: int) -> float:
    """Linear warm-up, then x0.1 at 40%, 60% and 80% of ``total_steps`` (the paper's schedule)."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    frac = step / max(1, total_steps)
    return 0.1 ** sum(frac >= m for m in (0.4, 0.6, 0.8))


def _default_workers(device: torch.device) -> int:
    if device.type == "cuda":
        return min(8, os.cpu_count() or 1)
    return 0  # on the CPU, loader processes would take cores from the model


def _save_checkpoint(path: Path, state: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    tmp.replace(path)


def build_model(*, backbone: str, dim: int, input_size: int, dropout: float, head: str, classes: int,
                head_kwargs: dict | None = None, seed: int = 0) -> tuple[Embedder, nn.Module]:
    """The untrained embedder and head exactly as ``train`` starts them for this ``seed``."""
    seed_everything(seed)
    model = Embedder(backbone=backbone, dim=dim, input_size=input_size, dropout=dropout)
    classifier = make_head(head, dim, classes, **(head_kwargs or {}))
    return model, classifier


def train(samples: Sequence[Sample], *, head: str = "cosface", epochs: int = 30, batch_size: int = 32,
          lr: float | None = None, input_size: int = DEFAULT_INPUT_SIZE, backbone: str = DEFAULT_BACKBONE,
          dim: int = DEFAULT_DIM, dropout: float = DEFAULT_DROPOUT, seed: int = 0,
          out: str | Path | None = None, device: str = "auto", max_minutes: float | None = None,
          checkpoint: str | Path | None = None, workers: int | None = None, momentum: float = 0.9,
          weight_decay: float = 5e-4, warmup_steps: int | None = None, head_kwargs: dict | None = None,
          max_steps: int | None = None, sources: Sequence[str] = (), flip_average: bool = True,
          min_crop_scale: float = DEFAULT_MIN_CROP_SCALE, precision: str = "auto",
          log: Callable[[str], None] = print) -> TrainResult:
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
    identities = sorted({s.identity for s in samples})
    if len(identities) < 2:
        raise ValueError(f"need at least 2 identities, got {identities}")
    if not 0 < min_crop_scale <= 1:
        raise ValueError(f"min_crop_scale must be in (0, 1], got {min_crop_scale}")
    label_of = {name: i for i, name in enumerate(identities)}
    labels = [label_of[s.identity] for s in samples]
    n = len(samples)
    batch_size = min(batch_size, n)
    steps_per_epoch = n // batch_size
    total_steps = steps_per_epoch * epochs
    if lr is None:
        lr = 0.1 * batch_size / 128
    if warmup_steps is None:
        warmup_steps = min(500, 2 * steps_per_epoch)
    head_kwargs = dict(head_kwargs or {})

    model, classifier = build_model(backbone=backbone, dim=dim, input_size=input_size, dropout=dropout,
                                    head=head, classes=len(identities), head_kwargs=head_kwargs, seed=seed)
    cuda = dev.type == "cuda"
    model.to(dev)
    classifier.to(dev)
    channels_last = cuda or use_bf16  # the layout bf16 kernels (cuDNN, oneDNN) are fastest in
    if channels_last:
        model.to(memory_format=torch.channels_last)
    if cuda:
        torch.backends.cudnn.benchmark = True
    params = list(model.parameters()) + list(classifier.parameters())
    # No weight decay on BatchNorm/bias parameters.
    decay = [p for p in params if p.ndim > 1]
    no_decay = [p for p in params if p.ndim <= 1]
    opt = torch.optim.SGD([{"params": decay, "weight_decay": weight_decay},
                           {"params": no_decay, "weight_decay": 0.0}], lr=lr, momentum=momentum, nesterov=True)

    config = {
        "head": head, "head_kwargs": head_kwargs, "epochs": epochs, "batch_size": batch_size, "lr": lr,
        "momentum": momentum, "weight_decay": weight_decay, "warmup_steps": warmup_steps,
        "schedule": "linear warm-up, x0.1 at 40/60/80% of steps", "optimizer": "SGD nesterov",
        "input_size": input_size, "backbone": backbone, "dim": dim, "dropout": dropout, "seed": seed,
        "augmentation": f"rotate +-10, random resized crop {min_crop_scale:g}-1.0 ratio 3/4-4/3, hflip, "
                        "colour jitter 0.3/0.3/0.3/0.05",
        "enlarge_rate": ENLARGE_RATE, "sources": list(sources), "samples": n, "flip_average": flip_average,
    }

    start_epoch, start_batch, step, history = 0, 0, 0, []
    ckpt_path = Path(checkpoint) if checkpoint else None
    if ckpt_path is not None and ckpt_path.exists():
        state = torch.load(ckpt_path, map_location="cpu", weights_only=True)
        for key in ("head", "backbone", "dim", "input_size", "batch_size", "seed", "epochs"):
            if state["config"][key] != config[key]:
                raise ValueError(f"checkpoint {ckpt_path} has {key}={state['config'][key]!r}, "
                                 f"this run asks for {config[key]!r}")
        if state["identities"] != identities:
            raise ValueError(f"checkpoint {ckpt_path} was trained on other identities")
        model.load_state_dict(state["model"])
        classifier.load_state_dict(state["head"])
        opt.load_state_dict(state["optimizer"])
        start_epoch, start_batch, step = state["epoch"], state["batch"], state["step"]
        history = state["history"]
        torch.set_rng_state(state["torch_rng"])
        if cuda and state.get("cuda_rng") is not None:
            torch.cuda.set_rng_state(state["cuda_rng"], dev)
        log(f"resumed from {ckpt_path}: epoch {start_epoch + 1}, batch {start_batch}, step {step}")

    dataset = FaceDataset(samples, labels, input_size, augment=True, min_crop_scale=min_crop_scale)
    if workers is None:
        workers = _default_workers(dev)
    amp = torch.autocast(device_type=dev.type, dtype=torch.bfloat16, enabled=use_bf16)
    deadline = t_start + max_minutes * 60 if max_minutes else None
    out = Path(out) if out else None
    log_path = out.with_name(out.name.removesuffix(".safetensors") + ".train_log.json") if out else None
    step_losses: list[float] = []
    stopped = False
    if start_epoch >= epochs:
        log(f"checkpoint {ckpt_path} has finished all {epochs} epochs; saving its weights")
    log(f"training {backbone} {input_size}px dim {dim} + {head} on {n} crops of {len(identities)} identities, "
        f"{dev.type} {precision_name(use_bf16)}, batch {batch_size}, {steps_per_epoch} steps/epoch, "
        f"{epochs} epochs, lr {lr:g}, threads {torch.get_num_threads()}, workers {workers}")

    def checkpoint_state(epoch: int, batch: int) -> dict:
        return {"model": model.state_dict(), "head": classifier.state_dict(), "optimizer": opt.state_dict(),
                "epoch": epoch, "batch": batch, "step": step, "history": history, "config": config,
                "identities": identities, "torch_rng": torch.get_rng_state(),
                "cuda_rng": torch.cuda.get_rng_state(dev) if cuda else None}

    sampler = EpochBatches(n, batch_size, seed)
    # The loader gets its own generator: creating its iterator would otherwise draw from the global RNG
    # (which dropout uses), and a resumed run would then diverge from an uninterrupted one.
    loader = DataLoader(dataset, batch_sampler=sampler, num_workers=workers, pin_memory=cuda,
                        persistent_workers=workers > 0, generator=torch.Generator().manual_seed(seed))
    stop_reason = ""
    for epoch in range(start_epoch, epochs):
        sampler.set_epoch(epoch, start_batch if epoch == start_epoch else 0)
        model.train()
        classifier.train()
        t_epoch = time.monotonic()
        # Per-step values stay on the device until the epoch ends (no host sync per step on a GPU).
        losses, corrects, batches = [], [], sampler.start_batch
        for x, y in loader:
            x = x.to(dev, non_blocking=True)
            y = y.to(dev, non_blocking=True)
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            for g in opt.param_groups:
                g["lr"] = lr * lr_factor(step, total_steps, warmup_steps)
            with amp:
                emb = model(x)
                logits = classifier(emb, y)
                loss = F.cross_entropy(logits.float(), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            batches += 1
            with torch.no_grad():
                pred = classifier(emb.detach()).argmax(1)  # accuracy on the margin-free logits
                corrects.append((pred == y).sum())
                losses.append(loss.detach())
            if deadline is not None and time.monotonic() >= deadline:
                stop_reason = f"time limit of {max_minutes:g} min"
            elif max_steps is not None and len(step_losses) + len(losses) >= max_steps:
                stop_reason = f"step limit of {max_steps}"
            if stop_reason:
                break
        dt = time.monotonic() - t_epoch
        epoch_losses = torch.stack(losses).float().cpu().tolist() if losses else []
        correct = int(torch.stack(corrects).sum()) if corrects else 0
        if not all(math.isfinite(v) for v in epoch_losses):
            raise FloatingPointError(f"the loss became {epoch_losses} in epoch {epoch + 1}; try a lower --lr")
        step_losses.extend(epoch_losses)
        seen = len(epoch_losses) * batch_size
        done = batches >= sampler.n_batches
        stopped = bool(stop_reason) and not (done and epoch + 1 == epochs)
        entry = {"epoch": epoch + 1, "complete": done, "steps": step, "batches": batches,
                 "loss": sum(epoch_losses) / max(1, len(epoch_losses)), "train_acc": correct / max(1, seen),
                 "lr": opt.param_groups[0]["lr"], "seconds": round(dt, 2),
                 "sec_per_step": round(dt / max(1, len(epoch_losses)), 4)}
        if hasattr(classifier, "lambda_"):
            entry["sphereface_lambda"] = classifier.lambda_
        history.append(entry)
        log(f"epoch {epoch + 1}/{epochs}{'' if done else ' (partial)'} loss {entry['loss']:.4f} "
            f"acc {entry['train_acc']:.3f} lr {entry['lr']:.4g} {dt:.1f} s ({entry['sec_per_step']:.3f} s/step)")
        if ckpt_path is not None:
            _save_checkpoint(ckpt_path, checkpoint_state(epoch + 1, 0) if done else
                             checkpoint_state(epoch, batches))
        if stopped:
            log(f"stopped after {step} steps ({stop_reason})"
                + ("; run again with the same arguments to resume" if ckpt_path else ""))
            break

    model.eval()
    model.flip_average = flip_average
    seconds = time.monotonic() - t_start
    if out is not None:
        recipe = dict(config, steps=step, epochs_done=sum(1 for h in history if h["complete"]),
                      stopped_early=stopped, device=dev.type, precision=precision_name(use_bf16),
                      final_loss=history[-1]["loss"] if history else None,
                      final_train_acc=history[-1]["train_acc"] if history else None,
                      torch=torch.__version__)
        save_embedder(model, out, {"identities": identities, "recipe": recipe})
        log_path.write_text(json.dumps({"config": config, "identities": identities, "history": history,
                                        "device": str(dev), "threads": torch.get_num_threads(),
                                        "stopped_early": stopped, "steps": step,
                                        # this process; with resumed runs, the whole run's epochs add up
                                        "seconds": round(seconds, 1),
                                        "seconds_all_runs": round(sum(h["seconds"] for h in history), 1),
                                        "weights": out.name}, indent=2))
        log(f"saved {out} and {log_path.name}")
    return TrainResult(model, classifier, identities, history, step_losses, step, stopped, out, log_path,
                       seconds)


# ------------------------------------------------------------------------------------------------- CLI

def add_arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p.add_argument("--data", action="append", default=[], metavar="DIR",
                   help="folder of <identity>/<image> crops (repeatable)")
    p.add_argument("--cava", action="append", default=[], metavar="FOLDER",
                   help="folder with a CAVA boxes.csv; faces cut at enlarged rate 1.0 (repeatable)")
    p.add_argument("--cava-split", default="train", help="boxes.csv split to train on (default train)")
    p.add_argument("--head", choices=sorted(HEADS), default="cosface", help="margin head (default cosface)")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=None, help="default 0.1 * batch-size / 128")
    p.add_argument("--input-size", type=int, default=DEFAULT_INPUT_SIZE)
    p.add_argument("--min-crop-scale", type=float, default=DEFAULT_MIN_CROP_SCALE,
                   help=f"smallest area share kept by the random resized crop (default {DEFAULT_MIN_CROP_SCALE})")
    p.add_argument("--backbone", choices=BACKBONES, default=DEFAULT_BACKBONE)
    p.add_argument("--dim", type=int, default=DEFAULT_DIM)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, metavar="PATH.safetensors")
    p.add_argument("--device", default="auto", help="auto|cpu|cuda (default auto)")
    p.add_argument("--precision", choices=PRECISIONS, default="auto",
                   help="auto (bf16 on CUDA and on CPUs with native bf16, else fp32), bf16 or fp32")
    p.add_argument("--max-minutes", type=float, default=None, help="stop cleanly after N minutes and save")
    p.add_argument("--checkpoint", default=None, metavar="PATH",
                   help="resume from PATH when it exists; rewritten every epoch and on stop")
    p.add_argument("--workers", type=int, default=None, help="data loader processes (default 0 on CPU, 8 on CUDA)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's own)")
    p.add_argument("--no-flip-average", dest="flip_average", action="store_false",
                   help="the saved model embeds each crop once, not averaged with its mirror image "
                        "(half the embedding cost)")
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
    train(samples, head=args.head, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
          input_size=args.input_size, backbone=args.backbone, dim=args.dim, seed=args.seed, out=args.out,
          device=args.device, max_minutes=args.max_minutes, checkpoint=args.checkpoint, workers=args.workers,
          sources=sources, flip_average=args.flip_average, min_crop_scale=args.min_crop_scale,
          precision=args.precision, log=lambda s: print(s, flush=True))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="toonface train-embedder", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
