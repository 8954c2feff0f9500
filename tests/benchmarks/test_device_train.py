"""The GPU fine-tuning call (benchmarks/device_train.sh) and its data pack, run here on the CPU at a
tiny size: a lent GPU machine gives one try, so the script must already work end to end."""

from __future__ import annotations

import csv
import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from models.det_data import read_yolo
from models.detector import load_detector
from tests.conftest import PROJECT, SHARED

ICF = SHARED / "data" / "icartoonface_det"
SCOOBY = SHARED / "data" / "cava" / "scooby_doo"


def benchmark_module(name: str):
    spec = importlib.util.spec_from_file_location(name, PROJECT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


device_pack, device_plan = benchmark_module("device_pack"), benchmark_module("device_plan")


def small_shared(tmp_path, n: int, cava_frames: int = 0):
    """A ../shared holding the first `n` iCartoonFace training images and the first `cava_frames` Scooby-Doo
    training frames with their boxes.csv rows (links, not copies)."""
    shared = tmp_path / "shared"
    for sub in ("images", "labels"):
        (shared / "data" / "icartoonface_det" / sub / "train").mkdir(parents=True)
    for image in sorted((ICF / "images" / "train").glob("*.jpg"))[:n]:
        label = ICF / "labels" / "train" / f"{image.stem}.txt"
        os.symlink(image, shared / "data" / "icartoonface_det" / "images" / "train" / image.name)
        os.symlink(label, shared / "data" / "icartoonface_det" / "labels" / "train" / label.name)
    if cava_frames:
        scooby = shared / "data" / "cava" / "scooby_doo"
        (scooby / "images" / "train").mkdir(parents=True)
        with open(SCOOBY / "boxes.csv") as f:
            rows = [r for r in csv.DictReader(f) if r["split"] == "train"]
        frames = sorted({r["image"] for r in rows})[:cava_frames]
        for frame in frames:
            os.symlink(SCOOBY / frame, scooby / frame)
        with open(scooby / "boxes.csv", "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(r for r in rows if r["image"] in frames)
    return shared


@pytest.mark.shared_data
def test_the_pack_takes_the_largest_side_that_fits_the_budget(tmp_path):
    shared = small_shared(tmp_path, 40)
    full = sum(len(device_pack.webp(p, 512)) for p in (shared / "data/icartoonface_det/images/train").iterdir())
    side = device_pack.pack_training(shared, tmp_path / "pack", budget=int(full * 0.7))
    assert side < 512
    images = sorted((tmp_path / "pack" / "images").iterdir())
    assert len(images) == 40 and len(list((tmp_path / "pack" / "labels").iterdir())) == 40
    assert sum(f.stat().st_size for f in (tmp_path / "pack").rglob("*") if f.is_file()) <= full * 0.7
    assert max(cv2.imread(str(images[0])).shape[:2]) <= side
    with pytest.raises(SystemExit, match="does not fit"):
        device_pack.pack_training(shared, tmp_path / "pack", budget=1000)


@pytest.mark.shared_data
def test_the_pack_holds_every_fourth_cava_frame_with_its_boxes_as_yolo_labels(tmp_path):
    shared = small_shared(tmp_path, 4, cava_frames=12)
    whole = sum(len(device_pack.webp(src, 512)) for src, _, _ in device_pack.training_sources(shared))
    side = device_pack.pack_training(shared, tmp_path / "pack", budget=int(whole * 0.6))
    assert side < 480  # smaller than the frames, so their boxes had to follow the scale
    packed = read_yolo(tmp_path / "pack" / "images", tmp_path / "pack" / "labels")
    cava = [b for b in packed if b.path.name.startswith("cava_scooby_doo_")]
    assert len(packed) == 4 + 3 and len(cava) == 3  # frames 1, 5 and 9 of the 12
    with open(shared / "data" / "cava" / "scooby_doo" / "boxes.csv") as f:
        truth: dict[str, list] = {}
        for r in csv.DictReader(f):
            truth.setdefault(Path(r["image"]).stem, []).append([float(r[k]) for k in ("x1", "y1", "x2", "y2")])
    for boxed in cava:
        image, boxes = boxed.load()
        original = np.array(truth[boxed.path.stem.removeprefix("cava_scooby_doo_")])
        assert max(image.shape[:2]) <= side
        scale = image.shape[1] / 480  # the frames are 480 x 360
        np.testing.assert_allclose(boxes, original * scale, atol=0.01)


def test_the_plan_times_steps_after_start_up():
    probe = "\n".join(
        [
            "training on ...",
            "epoch 1 step 50/109 loss 0.5 lr 0.01 30s",
            "epoch 1 step 100/109 loss 0.4 lr 0.02 40s",
            '{"steps": 100, "seconds": 41.0, "stopped_early": true, "out": "/tmp/probe.safetensors"}',
            "a warning after the summary",
        ]
    )
    assert device_plan.seconds_per_step(probe) == 0.2  # (40 - 30) s / 50 steps, not 41 s / 100
    assert device_plan.planned_epochs(probe, images=3467, batch=32, minutes=6) == round(6 * 60 / 0.2 / 109, 2)
    short = '{"steps": 2, "seconds": 3.0, "stopped_early": true, "out": "x"}'
    assert device_plan.seconds_per_step(short) == 1.5  # too short for two step lines: its summary
    assert device_plan.planned_epochs(short, images=8, batch=4, minutes=1000) == 60.0  # capped


@pytest.mark.shared_data
def test_the_call_plans_its_epochs_from_a_probe_and_returns_the_weights_in_parts(tmp_path):
    pack = tmp_path / "pack"
    device_pack.pack_training(small_shared(tmp_path, 8), pack, budget=10**8)
    out = tmp_path / "out"
    env = {
        **os.environ,
        "OUT": str(out),
        "PY": sys.executable,
        "PACK": str(pack),
        "DEVICE": "cpu",
        "SIZE": "128",
        "BATCH": "4",
        "MINUTES": "0.05",
        "PROBE_STEPS": "2",
        "OMP_NUM_THREADS": "2",
    }
    done = subprocess.run(
        ["bash", "benchmarks/device_train.sh"], cwd=PROJECT, env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    plan = (out / "plan.txt").read_text()
    epochs = float(plan.split("planned epochs: ")[1].split()[0])
    assert 0.2 <= epochs <= 60 and "train: exit 0" in plan
    parts = sorted(out.glob("detector_gpu.part-*"))
    assert len(parts) == 2 and all(p.stat().st_size <= 15 * 2**20 for p in parts)  # under the 16 MiB a file may have
    joined = tmp_path / "detector_gpu.safetensors"
    with open(joined, "wb") as f:
        for part in parts:
            f.write(part.read_bytes())
    recipe = load_detector(joined).meta["recipe"]
    assert recipe["epochs"] == epochs and recipe["steps"] > 0 and recipe["size"] == 128
    assert recipe["init_detector"] == "models/weights/detector.safetensors"
    assert (out / "detector_gpu.train_log.json").exists()
    shutil.rmtree(out)
