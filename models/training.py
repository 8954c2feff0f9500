"""What both trainers (``models.train_embedder``, ``models.train_detector``) share: seeding, the device,
loader workers, crash-safe checkpoints and the seeded epoch order.

Determinism: the order of each epoch is a permutation drawn from (seed, epoch) and each sample's
augmentation is drawn from its own seed (seed, epoch, position), so results do not depend on the number
of loader workers nor on where a run was stopped and resumed.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Sampler


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


def default_workers(device: torch.device) -> int:
    if device.type == "cuda":
        return min(8, os.cpu_count() or 1)
    return 0  # on the CPU, loader processes would take cores from the model


def save_checkpoint(path: Path, state: dict) -> None:
    """Write ``state`` beside ``path`` and rename it over: a killed run never leaves half a checkpoint."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    tmp.replace(path)


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
