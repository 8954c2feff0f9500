"""The embedder's training loop (``models.train_embedder.train`` sets it up): one optimiser step on a
batch, the epochs with their log entries and checkpoints, resuming from a checkpoint, the limits
(``--max-minutes``, ``max_steps``) that stop a run early, and the weights and training log it ends with.

Schedule (the paper's): linear warm-up, then x0.1 at 40%, 60% and 80% of the planned steps. Per-step
losses and accuracies stay on the device until the epoch ends (no host sync per step on a GPU).
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader

from models.embedder import Embedder, save_embedder
from models.precision import precision_name
from models.training import EpochBatches, save_checkpoint

# Keys a checkpoint must share with the run that resumes from it.
RESUME_KEYS = ("head", "backbone", "dim", "input_size", "batch_size", "seed", "epochs")


def lr_factor(step: int, total_steps: int, warmup_steps: int) -> float:
    """Linear warm-up, then x0.1 at 40%, 60% and 80% of ``total_steps`` (the paper's schedule)."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    frac = step / max(1, total_steps)
    return 0.1 ** sum(frac >= m for m in (0.4, 0.6, 0.8))


@dataclasses.dataclass
class Session:
    """One ``train`` call's networks and optimiser, and where the run stands (``step``, ``history``)."""

    model: Embedder
    classifier: nn.Module
    opt: torch.optim.Optimizer
    dev: torch.device
    use_bf16: bool
    config: dict
    identities: list[str]
    total_steps: int
    step: int = 0
    history: list[dict] = dataclasses.field(default_factory=list)

    @property
    def cuda(self) -> bool:
        return self.dev.type == "cuda"

    @property
    def channels_last(self) -> bool:
        return self.cuda or self.use_bf16  # the layout bf16 kernels (cuDNN, oneDNN) are fastest in

    def optimise(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One optimiser step on a batch; (its loss, its correct predictions), left on the device."""
        x = x.to(self.dev, non_blocking=True)
        y = y.to(self.dev, non_blocking=True)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        for g in self.opt.param_groups:
            g["lr"] = self.config["lr"] * lr_factor(self.step, self.total_steps, self.config["warmup_steps"])
        with torch.autocast(device_type=self.dev.type, dtype=torch.bfloat16, enabled=self.use_bf16):
            emb = self.model(x)
            logits = self.classifier(emb, y)
            loss = F.cross_entropy(logits.float(), y)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        self.step += 1
        with torch.no_grad():
            pred = self.classifier(emb.detach()).argmax(1)  # accuracy on the margin-free logits
            return loss.detach(), (pred == y).sum()

    def checkpoint_state(self, epoch: int, batch: int) -> dict:
        return {
            "model": self.model.state_dict(),
            "head": self.classifier.state_dict(),
            "optimizer": self.opt.state_dict(),
            "epoch": epoch,
            "batch": batch,
            "step": self.step,
            "history": self.history,
            "config": self.config,
            "identities": self.identities,
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state(self.dev) if self.cuda else None,
        }

    def resume(self, ckpt_path: Path, log: Callable[[str], None]) -> tuple[int, int]:
        """Load a checkpoint of this same run; (epoch, batch) to go on from."""
        state = torch.load(ckpt_path, map_location="cpu", weights_only=True)
        for key in RESUME_KEYS:
            if state["config"][key] != self.config[key]:
                raise ValueError(
                    f"checkpoint {ckpt_path} has {key}={state['config'][key]!r}, this run asks for {self.config[key]!r}"
                )
        if state["identities"] != self.identities:
            raise ValueError(f"checkpoint {ckpt_path} was trained on other identities")
        self.model.load_state_dict(state["model"])
        self.classifier.load_state_dict(state["head"])
        self.opt.load_state_dict(state["optimizer"])
        self.step, self.history = state["step"], state["history"]
        torch.set_rng_state(state["torch_rng"])
        if self.cuda and state.get("cuda_rng") is not None:
            torch.cuda.set_rng_state(state["cuda_rng"], self.dev)
        log(f"resumed from {ckpt_path}: epoch {state['epoch'] + 1}, batch {state['batch']}, step {self.step}")
        return state["epoch"], state["batch"]


@dataclasses.dataclass(frozen=True)
class Limits:
    """When a run stops before its planned epochs: a deadline (``time.monotonic``) or a step count."""

    deadline: float | None
    max_minutes: float | None
    max_steps: int | None

    def reason(self, steps_this_call: int) -> str:
        if self.deadline is not None and time.monotonic() >= self.deadline:
            return f"time limit of {self.max_minutes:g} min"
        if self.max_steps is not None and steps_this_call >= self.max_steps:
            return f"step limit of {self.max_steps}"
        return ""


def _train_epoch(
    session: Session, loader: DataLoader, sampler: EpochBatches, limits: Limits, steps_before: int
) -> tuple[list[torch.Tensor], list[torch.Tensor], int, str]:
    """One pass from ``sampler.start_batch`` on: per-step losses and correct counts (on the device: no
    host sync per step on a GPU), the batch reached, and why it stopped early ("" if it did not)."""
    session.model.train()
    session.classifier.train()
    losses, corrects, batches = [], [], sampler.start_batch
    stop_reason = ""
    for x, y in loader:
        loss, correct = session.optimise(x, y)
        batches += 1
        corrects.append(correct)
        losses.append(loss)
        stop_reason = limits.reason(steps_before + len(losses))
        if stop_reason:
            break
    return losses, corrects, batches, stop_reason


def _epoch_entry(
    session: Session, epoch: int, done: bool, batches: int, epoch_losses: list[float], correct: int, dt: float
) -> dict:
    seen = len(epoch_losses) * session.config["batch_size"]
    entry = {
        "epoch": epoch + 1,
        "complete": done,
        "steps": session.step,
        "batches": batches,
        "loss": sum(epoch_losses) / max(1, len(epoch_losses)),
        "train_acc": correct / max(1, seen),
        "lr": session.opt.param_groups[0]["lr"],
        "seconds": round(dt, 2),
        "sec_per_step": round(dt / max(1, len(epoch_losses)), 4),
    }
    if hasattr(session.classifier, "lambda_"):
        entry["sphereface_lambda"] = session.classifier.lambda_
    return entry


def run_epochs(
    session: Session,
    loader: DataLoader,
    sampler: EpochBatches,
    start: tuple[int, int],
    limits: Limits,
    ckpt_path: Path | None,
    log: Callable[[str], None],
) -> tuple[list[float], bool]:
    """The epochs from ``start`` (epoch, batch) on, each logged and checkpointed; (step losses of this
    call, whether a limit stopped the run early)."""
    epochs = session.config["epochs"]
    step_losses: list[float] = []
    stopped = False
    for epoch in range(start[0], epochs):
        sampler.set_epoch(epoch, start[1] if epoch == start[0] else 0)
        t_epoch = time.monotonic()
        losses, corrects, batches, stop_reason = _train_epoch(session, loader, sampler, limits, len(step_losses))
        dt = time.monotonic() - t_epoch
        epoch_losses = torch.stack(losses).float().cpu().tolist() if losses else []
        correct = int(torch.stack(corrects).sum()) if corrects else 0
        if not all(math.isfinite(v) for v in epoch_losses):
            raise FloatingPointError(f"the loss became {epoch_losses} in epoch {epoch + 1}; try a lower --lr")
        step_losses.extend(epoch_losses)
        done = batches >= sampler.n_batches
        stopped = bool(stop_reason) and not (done and epoch + 1 == epochs)
        entry = _epoch_entry(session, epoch, done, batches, epoch_losses, correct, dt)
        session.history.append(entry)
        log(
            f"epoch {epoch + 1}/{epochs}{'' if done else ' (partial)'} loss {entry['loss']:.4f} "
            f"acc {entry['train_acc']:.3f} lr {entry['lr']:.4g} {dt:.1f} s ({entry['sec_per_step']:.3f} s/step)"
        )
        if ckpt_path is not None:
            save_checkpoint(
                ckpt_path, session.checkpoint_state(epoch + 1, 0) if done else session.checkpoint_state(epoch, batches)
            )
        if stopped:
            log(
                f"stopped after {session.step} steps ({stop_reason})"
                + ("; run again with the same arguments to resume" if ckpt_path else "")
            )
            break
    return step_losses, stopped


def save_outputs(
    session: Session, out: Path, log_path: Path, stopped: bool, seconds: float, log: Callable[[str], None]
) -> None:
    """The weights with identities and recipe (``save_embedder``) and the training log beside them."""
    config, history, step = session.config, session.history, session.step
    recipe = dict(
        config,
        steps=step,
        epochs_done=sum(1 for h in history if h["complete"]),
        stopped_early=stopped,
        device=session.dev.type,
        precision=precision_name(session.use_bf16),
        final_loss=history[-1]["loss"] if history else None,
        final_train_acc=history[-1]["train_acc"] if history else None,
        torch=torch.__version__,
    )
    save_embedder(session.model, out, {"identities": session.identities, "recipe": recipe})
    log_path.write_text(
        json.dumps(
            {
                "config": config,
                "identities": session.identities,
                "history": history,
                "device": str(session.dev),
                "threads": torch.get_num_threads(),
                "stopped_early": stopped,
                "steps": step,
                # this process; with resumed runs, the whole run's epochs add up
                "seconds": round(seconds, 1),
                "seconds_all_runs": round(sum(h["seconds"] for h in history), 1),
                "weights": out.name,
            },
            indent=2,
        )
    )
    log(f"saved {out} and {log_path.name}")
