"""Detector training on real shared frames (tiny: ResNet-18, 192 px, a few CPU steps)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from models.det_data import parse_source, read_yolo
from models.detector import load_detector
from models.detector_loop import lr_at
from models.precision import resolve_precision
from models.train_detector import main, train
from tests.conftest import CAVA_DEXTER, PROJECT, SHARED

ICF = SHARED / "data" / "icartoonface_det"
TINY = dict(backbone="resnet18", size=192, batch_size=4, device="cpu", warmup_steps=2, lr=0.01)


def some_frames():
    return (
        read_yolo(ICF / "images" / "train", ICF / "labels" / "train")[:6]
        + parse_source(f"cava:{CAVA_DEXTER}:train")[:2]
    )


@pytest.mark.shared_data
def test_a_few_steps_on_real_frames_lower_the_loss():
    # Without augmentation the same 4 frames come back every step: a model that learns fits them.
    # (lr 0.01: at 0.02 the loss jumped at step 9 on one CPU and fell only 17% in 24 steps.)
    result = train(some_frames()[:4], epochs=24, seed=0, augment=False, log=lambda m: None, **{**TINY, "size": 160})
    losses = result["step_losses"]
    assert len(losses) == 24 and all(np.isfinite(losses))
    assert np.mean(losses[-4:]) < 0.8 * np.mean(losses[:4]), losses


@pytest.mark.shared_data
def test_a_few_steps_on_frames_of_two_sources_lower_the_loss():
    frames = some_frames()
    two_sources = frames[:2] + frames[-2:]  # two iCartoonFace images, two Dexter frames
    result = train(two_sources, epochs=24, seed=0, augment=False, log=lambda m: None, **{**TINY, "size": 160})
    losses = result["step_losses"]
    assert np.all(np.isfinite(losses)) and np.mean(losses[-4:]) < 0.9 * np.mean(losses[:4]), losses


@pytest.mark.shared_data
def test_a_stopped_run_resumes_to_the_same_weights(tmp_path):
    frames = some_frames()
    straight = train(frames, epochs=2, seed=3, log=lambda m: None, **TINY)
    ckpt = tmp_path / "ckpt.pt"
    first = train(frames, epochs=2, seed=3, checkpoint=ckpt, max_steps=3, log=lambda m: None, **TINY)
    assert first["stopped_early"] and ckpt.exists()
    resumed = train(frames, epochs=2, seed=3, checkpoint=ckpt, log=lambda m: None, **TINY)
    assert resumed["steps"] == straight["steps"] == 4
    for (name, a), b in zip(straight["model"].state_dict().items(), resumed["model"].state_dict().values()):
        torch.testing.assert_close(a, b, msg=name)


@pytest.mark.shared_data
def test_cli_writes_weights_and_a_log_with_validation_ap(tmp_path, capsys):
    out = tmp_path / "det.safetensors"
    rc = main(
        [
            "--train",
            f"yolo:{ICF}/images/train:{ICF}/labels/train",
            "--val",
            f"dexter=cava:{CAVA_DEXTER}:val",
            "--backbone",
            "resnet18",
            "--size",
            "128",
            "--batch-size",
            "4",
            "--max-steps",
            "2",
            "--device",
            "cpu",
            "--box-loss",
            "giou",
            "--init-embedder",
            str(PROJECT / "models" / "weights" / "embedder.safetensors"),
            "--out",
            str(out),
        ]
    )
    assert rc == 0
    det = load_detector(out)
    assert det.size == 128 and det.meta["recipe"]["init_embedder"].endswith("embedder.safetensors")
    assert det.meta["recipe"]["sources"] == [f"yolo:{ICF}/images/train:{ICF}/labels/train"]
    assert det.meta["recipe"]["box_loss"] == "giou"
    # --precision auto: bf16 where this CPU computes it natively, and the recipe says which.
    assert det.meta["recipe"]["precision"] == resolve_precision("auto", "cpu")
    log = json.loads(out.with_suffix(".train_log.json").read_text())
    assert log["history"][0]["steps"] == 2 and log["history"][0]["partial"]
    assert "stopped_early" in capsys.readouterr().out
    assert main(["--train", "voc:nowhere", "--out", str(out)]) == 2
    assert main(["--train", f"cava:{CAVA_DEXTER}:train", "--epochs", "0", "--out", str(out)]) == 2
    with pytest.raises(ValueError, match="box loss"):
        train(some_frames(), epochs=1, box_loss="smooth_l1", log=lambda m: None, **TINY)
    with pytest.raises(ValueError, match="precision"):
        train(some_frames(), epochs=1, precision="fp16", log=lambda m: None, **TINY)
    for size in ("100", "96", "4096"):  # not a multiple of 32, or outside what the detector runs at
        assert main(["--train", f"cava:{CAVA_DEXTER}:train", "--size", size, "--out", str(out)]) == 2
    assert "between 128 and 2048" in capsys.readouterr().err


@pytest.mark.shared_data
def test_a_fractional_epoch_trains_that_share_of_a_pass():
    frames = some_frames()  # 8 frames, batch 4: 2 batches an epoch
    result = train(frames, epochs=1.5, seed=0, log=lambda m: None, **{**TINY, "size": 128, "warmup_steps": 1})
    assert result["steps"] == 3 and not result["stopped_early"]
    assert [h["steps"] for h in result["history"]] == [2, 3] and not result["history"][-1]["partial"]
    half = train(frames, epochs=0.5, seed=0, log=lambda m: None, **{**TINY, "size": 128})
    assert half["steps"] == 1 and len(half["history"]) == 1
    for bad in (0, -1.0):
        try:
            train(frames, epochs=bad, log=lambda m: None, **TINY)
        except ValueError as e:
            assert "epochs" in str(e)
        else:
            raise AssertionError(f"epochs={bad} must be refused")


def test_learning_rate_warms_up_then_decays_to_zero():
    assert lr_at(0, 100, 10) == 0.1 and lr_at(9, 100, 10) == 1.0
    assert lr_at(10, 100, 10) == 1.0 and abs(lr_at(100, 100, 10)) < 1e-12
    assert lr_at(55, 100, 10) < lr_at(30, 100, 10)


@pytest.mark.shared_data
def test_training_from_shipped_detector_weights_starts_where_they_left_off():
    frames = some_frames()[:4]
    settings = {**TINY, "size": 384, "max_steps": 1, "epochs": 1, "augment": False, "log": lambda m: None}
    shipped = PROJECT / "models" / "weights" / "detector.safetensors"
    fresh = train(frames, **settings)["step_losses"][0]
    continued = train(frames, init_detector=shipped, **settings)
    assert continued["step_losses"][0] < 0.7 * fresh, (continued["step_losses"], fresh)
    try:
        train(frames, init_detector=shipped, **{**settings, "backbone": "resnet50"})
    except ValueError as e:
        assert "resnet18" in str(e)
    else:
        raise AssertionError("a resnet18 file must not load into a resnet50 model")


@pytest.mark.shared_data
def test_an_unreadable_training_image_is_skipped_and_named_in_the_log(tmp_path):
    images, labels = tmp_path / "images", tmp_path / "labels"
    images.mkdir()
    labels.mkdir()
    for item in some_frames()[:3]:
        (images / item.path.name).symlink_to(item.path)
        (labels / f"{item.path.stem}.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    (images / "broken.jpg").write_bytes(b"this is not a jpeg")
    (labels / "broken.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    result = train(
        read_yolo(images, labels), epochs=1, seed=0, log=lambda m: None, **{**TINY, "size": 128, "batch_size": 2}
    )
    assert result["steps"] == 2 and all(np.isfinite(result["step_losses"]))
    assert result["history"][0]["unreadable_images"] == [str(images / "broken.jpg")]


@pytest.mark.shared_data
def test_a_killed_run_resumes_from_its_last_mid_epoch_checkpoint(tmp_path):
    """SIGKILL mid-epoch, then the same command again: it resumes and ends with the uninterrupted run's weights."""

    def command(out, ckpt):
        return [
            sys.executable,
            "-m",
            "toonface.cli",
            "train-detector",
            "--train",
            f"cava:{CAVA_DEXTER}:train",
            "--backbone",
            "resnet18",
            "--size",
            "128",
            "--batch-size",
            "2",
            "--epochs",
            "1",
            "--max-steps",
            "12",
            "--seed",
            "5",
            "--device",
            "cpu",
            "--workers",
            "0",
            "--out",
            str(out),
            "--checkpoint",
            str(ckpt),
            "--checkpoint-minutes",
            "0",
        ]

    straight = tmp_path / "straight.safetensors"
    subprocess.run(command(straight, tmp_path / "straight.ckpt"), cwd=PROJECT, check=True, capture_output=True)
    out, ckpt = tmp_path / "killed.safetensors", tmp_path / "killed.ckpt"
    proc = subprocess.Popen(command(out, ckpt), cwd=PROJECT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        seen = None  # read the checkpoint only when it was rewritten: loading it is not free on 2 cores
        while time.time() < deadline:
            stamp = ckpt.stat().st_mtime_ns if ckpt.exists() else None
            if stamp != seen:
                seen = stamp
                if stamp is not None and torch.load(ckpt, weights_only=False)["step"] >= 3:
                    break
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    killed_at = torch.load(ckpt, weights_only=False)
    assert 3 <= killed_at["step"] < 12 and killed_at["batch"] == killed_at["step"]
    subprocess.run(command(out, ckpt), cwd=PROJECT, check=True, capture_output=True)
    a, b = load_detector(straight, fold_norms=False), load_detector(out, fold_norms=False)
    for (name, x), y in zip(a.model.state_dict().items(), b.model.state_dict().values()):
        torch.testing.assert_close(x, y, msg=name)
    history = json.loads(out.with_suffix(".train_log.json").read_text())["history"]
    assert history[-1]["steps"] == 12
