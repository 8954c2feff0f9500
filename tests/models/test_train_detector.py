"""Detector training on real shared frames (tiny: ResNet-18, 192 px, a few CPU steps)."""
from __future__ import annotations

import json

import numpy as np
import torch

from models.det_data import parse_source, read_yolo
from models.detector import load_detector
from models.train_detector import lr_at, main, train
from tests.conftest import CAVA_DEXTER, PROJECT, SHARED

ICF = SHARED / "data" / "icartoonface_det"
TINY = dict(backbone="resnet18", size=192, batch_size=4, device="cpu", warmup_steps=2, lr=0.01)


def some_frames():
    return read_yolo(ICF / "images" / "train", ICF / "labels" / "train")[:6] + parse_source(f"cava:{CAVA_DEXTER}:train")[:2]


def test_a_few_steps_on_real_frames_lower_the_loss():
    # Without augmentation the same 4 frames come back every step: a model that learns fits them.
    result = train(some_frames()[:4], epochs=24, seed=0, augment=False, log=lambda m: None,
                   **{**TINY, "size": 160, "lr": 0.02})
    losses = result["step_losses"]
    assert len(losses) == 24 and all(np.isfinite(losses))
    assert np.mean(losses[-4:]) < 0.8 * np.mean(losses[:4]), losses


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


def test_cli_writes_weights_and_a_log_with_validation_ap(tmp_path, capsys):
    out = tmp_path / "det.safetensors"
    rc = main(["--train", f"yolo:{ICF}/images/train:{ICF}/labels/train", "--val", f"dexter=cava:{CAVA_DEXTER}:val",
               "--backbone", "resnet18", "--size", "128", "--batch-size", "4", "--max-steps", "2", "--device", "cpu",
               "--init-embedder", str(PROJECT / "models" / "weights" / "embedder.safetensors"), "--out", str(out)])
    assert rc == 0
    det = load_detector(out)
    assert det.size == 128 and det.meta["recipe"]["init_embedder"].endswith("embedder.safetensors")
    log = json.loads(out.with_suffix(".train_log.json").read_text())
    assert log["history"][0]["steps"] == 2 and log["history"][0]["partial"]
    assert "stopped_early" in capsys.readouterr().out
    assert main(["--train", "voc:nowhere", "--out", str(out)]) == 2


def test_learning_rate_warms_up_then_decays_to_zero():
    assert lr_at(0, 100, 10) == 0.1 and lr_at(9, 100, 10) == 1.0
    assert lr_at(10, 100, 10) == 1.0 and abs(lr_at(100, 100, 10)) < 1e-12
    assert lr_at(55, 100, 10) < lr_at(30, 100, 10)
