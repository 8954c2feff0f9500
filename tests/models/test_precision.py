import pytest
import torch

from models.precision import cpu_has_native_bf16, resolve_precision, uses_bf16


def test_explicit_precisions_are_obeyed_on_any_device():
    for device in ("cpu", "cuda"):
        assert uses_bf16("bf16", torch.device(device)) is True
        assert uses_bf16("fp32", torch.device(device)) is False


def test_auto_is_bf16_on_a_gpu_and_on_cpus_that_compute_it():
    assert uses_bf16("auto", torch.device("cuda")) is True
    assert uses_bf16("auto", torch.device("cpu")) is cpu_has_native_bf16()
    assert uses_bf16("auto", torch.device("mps")) is False  # not measured there: fp32
    assert uses_bf16("auto", "cuda:1") is True and uses_bf16("auto", "cpu") is cpu_has_native_bf16()


def test_unknown_precision_is_refused():
    with pytest.raises(ValueError, match="auto, bf16, fp32"):
        uses_bf16("fp16", torch.device("cpu"))


def test_reports_name_the_precision_that_ran():
    assert resolve_precision("fp32", "cuda") == "fp32" and resolve_precision("bf16", "cpu") == "bf16"
    assert resolve_precision("auto", "cpu") == ("bf16" if cpu_has_native_bf16() else "fp32")
