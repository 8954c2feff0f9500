"""Training on real cartoon crops (tiny and fast: resnet18 trunk, 64 px, a few dozen steps on the CPU)."""

from __future__ import annotations

import csv
import json
from collections import defaultdict

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from models.crop import enlarged_box
from models.embedder import load_embedder, preprocess
from models.identity_data import FaceDataset, Sample, cava_identity_crops, identity_folders
from models.precision import cpu_has_native_bf16, resolve_precision
from models.train_embedder import build_model, main, train
from models.training import epoch_order
from tests.conftest import SHARED

HOLO = SHARED / "data" / "anime_identities" / "hololive_danbooru"
DEXTER = SHARED / "data" / "cava" / "dexters_laboratory"
TINY = dict(backbone="resnet18", input_size=64, dim=64, device="cpu")


def three_identities(per_identity: int = 8) -> list[Sample]:
    by = defaultdict(list)
    for s in identity_folders(HOLO):
        by[s.identity].append(s)
    return [s for name in ("ame", "gura", "kiara") for s in by[name][:per_identity]]


def quiet(_msg: str) -> None:
    pass


@pytest.mark.shared_data
def test_identity_folders_hololive():
    samples = identity_folders(HOLO)
    assert len(samples) == 14 * 60
    assert len({s.identity for s in samples}) == 14
    assert all(s.box is None for s in samples)
    img = samples[0].load()
    assert img.shape == (256, 256, 3) and img.dtype == np.uint8


@pytest.mark.shared_data
def test_cava_crops_enlarged_and_unknown_skipped():
    samples = cava_identity_crops(DEXTER, "train")
    with open(DEXTER / "boxes.csv", newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r["split"] == "train"]
    assert len(samples) == sum(r["identity"] != "unknown" for r in rows)
    assert {s.identity for s in samples} == {
        "dexters_laboratory/" + r["identity"] for r in rows if r["identity"] != "unknown"
    }
    assert len(cava_identity_crops(DEXTER, "val")) < len(samples)
    # A box well inside its frame: the crop is the box doubled in width and height, around its centre.
    for s in samples:
        x1, y1, x2, y2 = s.box
        frame = cv2.imread(s.path)
        h, w = frame.shape[:2]
        box = enlarged_box(s.box, w, h, 1.0)
        if not box.clipped:
            break
    assert not box.clipped
    crop = s.load()
    assert crop.shape[:2] == (box.height, box.width)
    assert abs(box.width - 2 * (x2 - x1)) <= 2 and abs(box.height - 2 * (y2 - y1)) <= 2
    np.testing.assert_array_equal(crop, frame[box.y1 : box.y2, box.x1 : box.x2])


def test_epoch_order_is_seeded():
    a, sa = epoch_order(10, 0, 0)
    b, sb = epoch_order(10, 0, 0)
    c, _ = epoch_order(10, 0, 1)
    assert (a == b).all() and (sa == sb).all() and sorted(a) == list(range(10))
    assert not (a == c).all()


def fixed_batch_loss(model, head, samples, labels) -> float:
    """Margin loss on the un-augmented crops (BatchNorm on batch statistics, no dropout)."""
    x = preprocess([s.load() for s in samples], 64)
    model.train()
    head.eval()
    with torch.no_grad():
        return float(F.cross_entropy(head(model(x), labels), labels))


# bf16 runs where `auto` picks it, on CPUs that compute it natively; elsewhere it is emulated (7x slower)
# and never chosen by itself, so that variant is left to such machines.
@pytest.mark.shared_data
@pytest.mark.parametrize(
    "precision",
    [
        "fp32",
        pytest.param(
            "bf16",
            marks=pytest.mark.skipif(
                not cpu_has_native_bf16(), reason="bf16 is emulated on this CPU; auto trains in fp32 here"
            ),
        ),
    ],
)
def test_short_training_lowers_loss(tmp_path, precision):
    samples = three_identities(8)
    labels = torch.tensor([i // 8 for i in range(24)])  # identities sorted: ame, gura, kiara
    kw = dict(TINY, dropout=0.0, head="cosface")
    before_model, before_head = build_model(classes=3, seed=0, **{k: v for k, v in kw.items() if k != "device"})
    before = fixed_batch_loss(before_model, before_head, samples, labels)

    out = tmp_path / "tiny.safetensors"
    result = train(
        samples, epochs=10, batch_size=8, lr=0.01, warmup_steps=0, seed=0, out=out, log=quiet, precision=precision, **kw
    )
    assert result.identities == ["ame", "gura", "kiara"]
    assert len(result.step_losses) == 30 and result.steps == 30 and not result.stopped_early
    after = fixed_batch_loss(result.model, result.head, samples, labels)
    assert after < 0.75 * before, (before, after)

    log = json.loads(result.log_path.read_text())
    assert result.log_path.name == "tiny.train_log.json"
    assert [e["epoch"] for e in log["history"]] == list(range(1, 11))
    assert all(e["complete"] for e in log["history"])
    assert {"loss", "train_acc", "lr", "sec_per_step"} <= set(log["history"][0])
    model, meta = load_embedder(out)
    assert meta["identities"] == ["ame", "gura", "kiara"]
    assert meta["recipe"]["head"] == "cosface" and meta["recipe"]["steps"] == 30
    assert meta["recipe"]["precision"] == precision
    assert model.flip_average and meta["model_id"].endswith("-flip")  # the default: crop and mirror averaged


@pytest.mark.shared_data
def test_seeded_run_resumes_exactly(tmp_path):
    """Stopping after 4 steps and resuming from the checkpoint gives the same run as going straight
    through (SphereFace: its lambda schedule lives in the checkpoint too; dropout uses the saved RNG)."""
    samples = three_identities(4)  # 12 crops, batch 4: 3 steps per epoch
    kw = dict(TINY, head="sphereface", epochs=2, batch_size=4, lr=0.01, seed=3, log=quiet)
    straight = train(samples, **kw)
    ckpt = tmp_path / "run.ckpt"
    first = train(samples, checkpoint=ckpt, max_steps=4, **kw)
    assert first.stopped_early and ckpt.exists()
    assert first.history[-1]["epoch"] == 2 and not first.history[-1]["complete"]
    rest = train(samples, checkpoint=ckpt, **kw)
    assert not rest.stopped_early and rest.steps == 6
    assert first.step_losses + rest.step_losses == straight.step_losses  # bit-for-bit on the CPU
    assert int(rest.head.iteration) == int(straight.head.iteration) == 6
    for a, b in zip(straight.model.state_dict().values(), rest.model.state_dict().values()):
        torch.testing.assert_close(a, b, atol=0, rtol=0)

    with pytest.raises(ValueError, match="checkpoint"):
        train(samples, checkpoint=ckpt, **dict(kw, head="cosface"))


def crop_folders(data, per_identity):
    """`<identity>/<image>` folders (links to shared crops), as `--data` reads them."""
    for s in three_identities(per_identity):
        d = data / s.identity
        d.mkdir(parents=True, exist_ok=True)
        (d / (s.identity + "_" + s.path.rsplit("/", 1)[1])).symlink_to(s.path)
    return data


@pytest.mark.shared_data
def test_cli_trains_stops_on_time_and_resumes(tmp_path, capsys):
    data = crop_folders(tmp_path / "crops", 4)
    out = tmp_path / "m.safetensors"
    ckpt = tmp_path / "m.ckpt"
    args = [
        "--data",
        str(data),
        "--head",
        "arcface",
        "--epochs",
        "2",
        "--batch-size",
        "4",
        "--input-size",
        "64",
        "--backbone",
        "resnet18",
        "--dim",
        "32",
        "--device",
        "cpu",
        "--seed",
        "1",
        "--out",
        str(out),
        "--checkpoint",
        str(ckpt),
    ]
    # A time limit that has passed after the first step: stops cleanly, saves weights and checkpoint.
    assert main(args + ["--max-minutes", "0.00001"]) == 0
    _, meta = load_embedder(out)
    assert meta["recipe"]["stopped_early"] is True and meta["recipe"]["steps"] == 1
    assert meta["recipe"]["sources"] == [f"folders:{data}"]
    # Same arguments without the limit: resumes from the checkpoint and finishes.
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "resumed from" in printed and "epoch 2/2 loss" in printed
    model, meta = load_embedder(out)
    assert meta["recipe"]["stopped_early"] is False and meta["recipe"]["steps"] == 6
    assert meta["identities"] == ["ame", "gura", "kiara"]
    assert (model.backbone, model.dim, model.input_size) == ("resnet18", 32, 64)
    assert model.flip_average
    log = json.loads(out.with_name("m.train_log.json").read_text())
    assert log["history"][-1]["complete"] and log["history"][-1]["epoch"] == 2
    # The stopped first run's partial epoch counts in the whole run's time, not in this process's.
    assert log["seconds_all_runs"] == pytest.approx(sum(h["seconds"] for h in log["history"]), abs=0.11)
    assert log["history"][0]["complete"] is False


@pytest.mark.shared_data
def test_cli_no_flip_average(tmp_path):
    data = crop_folders(tmp_path / "crops", 2)
    out = tmp_path / "one_view.safetensors"
    assert (
        main(
            [
                "--data",
                str(data),
                "--epochs",
                "1",
                "--batch-size",
                "6",
                "--input-size",
                "64",
                "--backbone",
                "resnet18",
                "--dim",
                "32",
                "--device",
                "cpu",
                "--out",
                str(out),
                "--no-flip-average",
            ]
        )
        == 0
    )
    model, meta = load_embedder(out)
    assert not model.flip_average and not meta["model_id"].endswith("-flip")
    assert meta["recipe"]["flip_average"] is False


@pytest.mark.shared_data
def test_min_crop_scale_reaches_the_crops_and_the_recipe(tmp_path):
    from torchvision.transforms import v2

    crop = next(
        t
        for t in FaceDataset(three_identities(1), [0, 1, 2], 64, min_crop_scale=0.3).transform.transforms
        if isinstance(t, v2.RandomResizedCrop)
    )
    assert crop.scale == (0.3, 1.0)
    data = crop_folders(tmp_path / "crops", 2)
    out = tmp_path / "wide.safetensors"
    args = [
        "--data",
        str(data),
        "--epochs",
        "1",
        "--batch-size",
        "6",
        "--input-size",
        "64",
        "--backbone",
        "resnet18",
        "--dim",
        "32",
        "--device",
        "cpu",
        "--out",
        str(out),
    ]
    assert main(args + ["--min-crop-scale", "0.3"]) == 0
    _, meta = load_embedder(out)
    assert "random resized crop 0.3-1.0" in meta["recipe"]["augmentation"]
    with pytest.raises(ValueError, match="min_crop_scale"):
        main(args + ["--min-crop-scale", "0"])


def test_cli_needs_data(tmp_path, capsys):
    assert main(["--out", str(tmp_path / "x.safetensors")]) == 2


@pytest.mark.shared_data
def test_precision_auto_follows_the_cpu_and_unknown_is_refused(tmp_path):
    # auto: bf16 where this CPU computes it natively (AVX512-BF16, AMX), else fp32; the recipe says which.
    out = tmp_path / "auto.safetensors"
    train(three_identities(4), epochs=1, batch_size=4, seed=0, out=out, max_steps=1, log=quiet, **TINY)
    assert load_embedder(out)[1]["recipe"]["precision"] == resolve_precision("auto", "cpu")
    with pytest.raises(ValueError, match="precision"):
        train(three_identities(2), precision="fp16", log=quiet, **TINY)


@pytest.mark.shared_data
def test_one_identity_is_an_error():
    with pytest.raises(ValueError, match="2 identities"):
        train(three_identities(2)[:2], log=quiet, **TINY)


def test_degrade_shrinks_recompresses_and_blurs_some_crops_and_is_in_the_recipe(tmp_path):
    # Seeded: over 40 draws of one real crop, some come out blurrier than any plain draw (shrunk, JPEG, blur).
    samples = three_identities(1)
    plain = FaceDataset(samples, [0, 1, 2], 64)
    degraded = FaceDataset(samples, [0, 1, 2], 64, degrade=True)

    def detail(x):
        grey = x.mean(0)
        return float((grey[1:, :] - grey[:-1, :]).abs().mean())

    plain_detail = [detail(plain[0, seed][0]) for seed in range(40)]
    degraded_detail = [detail(degraded[0, seed][0]) for seed in range(40)]
    assert degraded[0, 7][0].shape == plain[0, 7][0].shape == (3, 64, 64)
    assert sum(d < min(plain_detail) for d in degraded_detail) >= 3

    data = crop_folders(tmp_path / "crops", 2)
    out = tmp_path / "degraded.safetensors"
    args = ["--data", str(data), "--epochs", "1", "--batch-size", "6", "--input-size", "64", "--backbone", "resnet18"]
    assert main([*args, "--dim", "32", "--device", "cpu", "--degrade", "--out", str(out)]) == 0
    recipe = load_embedder(out)[1]["recipe"]
    assert recipe["degrade"] is True and "JPEG" in recipe["augmentation"]
