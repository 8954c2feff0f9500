"""Averaging detector weights: the tensor mean of one architecture's files, with a record of its inputs."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from models.average_detector import average_detectors
from models.detector import build_retinanet, load_detector, save_detector
from pipeline.detect import DEFAULT_DETECTOR_WEIGHTS
from toonface import cli

SIZE = 256


def random_detector(tmp_path, name: str, seed: int, backbone: str = "resnet18", **meta) -> str:
    torch.manual_seed(seed)
    model = build_retinanet(backbone, SIZE)
    with torch.no_grad():  # BatchNorm statistics differ between the files too
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_()
                m.running_var.uniform_(0.5, 2.0)
    path = tmp_path / name
    save_detector(
        model,
        path,
        backbone=backbone,
        size=SIZE,
        score_threshold=0.4,
        meta={"recipe": {"seed": seed}, "history": [{"epoch": 1}], **meta},
    )
    return str(path)


def test_average_is_the_tensor_mean_and_records_its_inputs(tmp_path):
    a = random_detector(tmp_path, "a.safetensors", 0, stage_1={"history": "first stage"})
    b = random_detector(tmp_path, "b.safetensors", 1)
    out = average_detectors([a, b], tmp_path / "avg.safetensors")

    ta, tb, tm = load_file(a), load_file(b), load_file(str(out))
    assert tm.keys() == ta.keys()
    for k, v in tm.items():
        if v.is_floating_point():
            expected = ((ta[k].float() + tb[k].float()) / 2).to(v.dtype)
            torch.testing.assert_close(v, expected, rtol=0, atol=1e-3)
        else:
            assert torch.equal(v, ta[k])
    name = "backbone.body.layer1.0.conv1.weight"
    assert not torch.equal(tm[name], ta[name]) and not torch.equal(tm[name], tb[name])

    det = load_detector(out)
    assert det.size == SIZE and det.score_threshold == 0.4
    ids = [load_detector(p).model_id for p in (a, b)]
    assert [i["model_id"] for i in det.meta["recipe"]["average_of"]] == ids
    assert det.model_id not in ids
    assert det.meta["recipe"]["average_of"][1]["recipe"] == {"seed": 1}
    assert det.meta["stage_1"] == {"history": "first stage"}


def test_a_file_averaged_with_itself_is_unchanged():
    """The shipped weights averaged with themselves: the same tensors, so the same model id."""
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as d:
        out = average_detectors(
            [DEFAULT_DETECTOR_WEIGHTS, DEFAULT_DETECTOR_WEIGHTS], Path(d) / "same.safetensors", threshold=0.5
        )
        shipped, same = load_detector(DEFAULT_DETECTOR_WEIGHTS), load_detector(out)
        assert same.model_id == shipped.model_id and same.size == shipped.size
        assert same.score_threshold == 0.5


def test_files_of_different_architectures_are_refused(tmp_path):
    a = random_detector(tmp_path, "a.safetensors", 0)
    with pytest.raises(ValueError, match="at least two"):
        average_detectors([a], tmp_path / "one.safetensors")
    wide = random_detector(tmp_path, "r50.safetensors", 1, backbone="resnet50")
    with pytest.raises(ValueError, match="different backbones"):
        average_detectors([a, wide], tmp_path / "mixed.safetensors")
    assert not (tmp_path / "mixed.safetensors").exists()


def test_cli_writes_the_average_and_exits_2_on_bad_input(tmp_path, capsys):
    a = random_detector(tmp_path, "a.safetensors", 0)
    b = random_detector(tmp_path, "b.safetensors", 1)
    out = tmp_path / "avg.safetensors"
    assert cli.main(["average-detector", a, b, "--out", str(out), "--threshold", "0.45"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["model_id"] == load_detector(out).model_id and len(report["average_of"]) == 2
    assert load_detector(out).score_threshold == 0.45

    not_a_detector = tmp_path / "junk.safetensors"
    not_a_detector.write_bytes(b"not safetensors at all")
    assert cli.main(["average-detector", a, str(not_a_detector), "--out", str(tmp_path / "x.safetensors")]) == 2
    assert "average-detector:" in capsys.readouterr().err
