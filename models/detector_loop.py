"""The detector's training loop (``models.train_detector.train`` sets it up): the lr schedule, one
optimiser step on a batch, the epochs with their log entries, validation and checkpoints, resuming from a
checkpoint, and the limits (``--max-minutes``, ``max_steps``) that stop a run early.

Schedule: linear warm-up, then cosine decay to zero over all planned steps; gradients clipped at norm 10
(from-scratch detectors spike early). A checkpoint is rewritten after every epoch, every
``--checkpoint-minutes`` within one, and when a limit stops the run, carrying the epoch's loss sums so a
resumed epoch logs whole-epoch means.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from models.detector import compute_loss, normalise
from models.training import EpochBatches, save_checkpoint


def lr_at(step: int, total: int, warmup: int) -> float:
    """Linear warm-up then cosine decay to 0 at ``total`` steps (a factor on the base lr)."""
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total - warmup))))


@dataclasses.dataclass
class Session:
    """One ``train`` call's network, optimiser and schedule, and where the run stands."""

    model: torch.nn.Module
    opt: torch.optim.Optimizer
    dev: torch.device
    use_bf16: bool
    base_lr: float
    total_steps: int
    warmup_steps: int
    ckpt_path: Path | None
    step: int = 0
    history: list[dict] = dataclasses.field(default_factory=list)
    step_losses: list[float] = dataclasses.field(default_factory=list)

    def resume(self, log) -> tuple[int, int, dict | None]:
        """Load the checkpoint; (epoch, batch, that epoch's loss sums so far) to go on from."""
        state = torch.load(self.ckpt_path, map_location=self.dev, weights_only=False)
        self.model.load_state_dict(state["model"])
        self.opt.load_state_dict(state["optimizer"])
        self.step, self.history = state["step"], state["history"]
        torch.set_rng_state(state["torch_rng"])
        log(f"resumed from {self.ckpt_path}: epoch {state['epoch']}, batch {state['batch']}, step {self.step}")
        return state["epoch"], state["batch"], state.get("epoch_sums")

    def save_state(self, epoch: int, batch: int, epoch_sums: dict | None = None) -> None:
        if self.ckpt_path:
            save_checkpoint(
                self.ckpt_path,
                {
                    "model": self.model.state_dict(),
                    "optimizer": self.opt.state_dict(),
                    "step": self.step,
                    "epoch": epoch,
                    "batch": batch,
                    "history": self.history,
                    "epoch_sums": epoch_sums,
                    "torch_rng": torch.get_rng_state(),
                },
            )

    def optimise(self, images: torch.Tensor, targets: list[dict]) -> dict:
        """One optimiser step on a batch; its losses."""
        for g in self.opt.param_groups:
            g["lr"] = self.base_lr * lr_at(self.step, self.total_steps, self.warmup_steps)
        x = normalise(images.to(self.dev, non_blocking=True)).contiguous(memory_format=torch.channels_last)
        targets = [{k: v.to(self.dev) for k, v in t.items()} for t in targets]
        with torch.autocast(self.dev.type, dtype=torch.bfloat16, enabled=self.use_bf16):
            losses = compute_loss(self.model, x, targets)
        loss = losses["classification"] + losses["bbox_regression"]
        if not torch.isfinite(loss):
            raise FloatingPointError(f"loss became {loss.item()} at step {self.step}; lower --lr")
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 10.0)
        self.opt.step()
        self.step += 1
        self.step_losses.append(float(loss.item()))
        return losses


def optimizer_for(model: torch.nn.Module, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    """SGD with momentum 0.9 over ``model``'s parameters."""
    decay, no_decay = [], []
    for p in model.parameters():
        (no_decay if p.ndim == 1 else decay).append(p)  # no weight decay on norms and biases
    return torch.optim.SGD(
        [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=lr,
        momentum=0.9,
    )


@dataclasses.dataclass(frozen=True)
class Limits:
    """When a run stops early (``--max-minutes`` from ``t_start``, ``max_steps``) and how often a
    checkpoint is rewritten within an epoch."""

    t_start: float
    max_minutes: float | None
    max_steps: int | None
    checkpoint_minutes: float

    def reached(self, step: int) -> bool:
        out_of_time = self.max_minutes is not None and time.time() - self.t_start > self.max_minutes * 60
        return out_of_time or (self.max_steps is not None and step >= self.max_steps)


def _train_epoch(
    session: Session, loader: DataLoader, sampler: EpochBatches, epoch: int, sums: dict, limits: Limits, log
) -> tuple[int, bool]:
    """One pass from ``sampler.start_batch`` on, adding to ``sums`` and rewriting the checkpoint every
    ``limits.checkpoint_minutes``; (the batch reached, whether a limit stopped it early)."""
    batch_index = sampler.start_batch
    last_save = time.time()
    for images, targets, skipped in loader:
        batch_index += 1
        sums["skipped"] += skipped
        if images is None:
            continue
        losses = session.optimise(images, targets)
        sums["batches"] += 1
        for k in losses:
            sums[k] += float(losses[k].item())
        if session.step % 50 == 0:
            log(
                f"epoch {epoch + 1} step {session.step}/{session.total_steps} "
                f"loss {np.mean(session.step_losses[-50:]):.4f} "
                f"lr {session.opt.param_groups[0]['lr']:.5f} {time.time() - limits.t_start:.0f}s"
            )
        if session.step >= session.total_steps:  # a fractional last epoch ends here, on schedule
            break
        if limits.reached(session.step):
            return batch_index, True
        if time.time() - last_save > limits.checkpoint_minutes * 60:  # a killed run loses at most this much
            session.save_state(epoch, batch_index, sums)
            last_save = time.time()
    return batch_index, False


def run_epochs(
    session: Session,
    loader: DataLoader,
    sampler: EpochBatches,
    start: tuple[int, int, dict | None],
    limits: Limits,
    validate_fn,
    write_outputs,
    log,
) -> bool:
    """The epochs from ``start`` (epoch, batch, that epoch's loss sums so far) on, each logged,
    validated (``validate_fn``, if any), checkpointed and written out; whether a limit stopped the run."""
    start_epoch, start_batch, resumed_sums = start
    stopped_early = False
    for epoch in range(start_epoch, math.ceil(session.total_steps / sampler.n_batches)):
        sampler.set_epoch(epoch, start_batch if epoch == start_epoch else 0)
        t_epoch = time.time()
        # Sums over this epoch's steps; carried in mid-epoch checkpoints so a resumed epoch logs whole-epoch means.
        sums = {"classification": 0.0, "bbox_regression": 0.0, "batches": 0, "skipped": []}
        if resumed_sums and epoch == start_epoch:
            sums = resumed_sums
        batch_index, stopped_early = _train_epoch(session, loader, sampler, epoch, sums, limits, log)
        entry = {
            "epoch": epoch + 1,
            "steps": session.step,
            "seconds": round(time.time() - t_epoch, 1),
            "partial": stopped_early,
            **{k: sums[k] / max(1, sums["batches"]) for k in ("classification", "bbox_regression")},
        }
        if sums["skipped"]:
            entry["unreadable_images"] = sorted(set(sums["skipped"]))
            log(f"skipped {len(entry['unreadable_images'])} unreadable images: {entry['unreadable_images'][:5]}")
        if validate_fn is not None and not stopped_early:
            entry["val"] = validate_fn(session.model)
        session.history.append(entry)
        log(json.dumps(entry))
        session.save_state(
            epoch + (0 if stopped_early else 1), batch_index if stopped_early else 0, sums if stopped_early else None
        )
        write_outputs()
        if stopped_early:
            break
    return stopped_early
