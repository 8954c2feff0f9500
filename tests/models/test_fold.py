"""Norms folded into convolutions (models/fold.py): the loaders do it for inference; nothing changes
but float rounding, and a folded model is never written back to a file."""

from __future__ import annotations

import cv2
import pytest
import torch

from models.embedder import Embedder, load_embedder, save_embedder
from models.fold import fold_batchnorm
from pipeline.identity.embedding import DEFAULT_WEIGHTS
from tests.conftest import SHARED

MOE_TEST = SHARED / "data" / "anime_identities" / "moeimouto" / "test"


def norms(model: torch.nn.Module) -> int:
    return sum(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())


@pytest.mark.shared_data
def test_the_shipped_embedder_folded_gives_the_same_embeddings():
    crops = [cv2.imread(str(p)) for p in sorted(MOE_TEST.glob("*/*"))[:48]]
    folded, meta = load_embedder(DEFAULT_WEIGHTS, precision="fp32")
    stored, stored_meta = load_embedder(DEFAULT_WEIGHTS, precision="fp32", fold_norms=False)
    assert norms(folded) == 0 and norms(stored) == 20  # ResNet-18: the stem, 16 in the blocks, 3 shortcuts
    assert meta["model_id"] == stored_meta["model_id"]
    cosines = (folded.embed(crops) * stored.embed(crops)).sum(1)
    assert cosines.min() > 0.9999


def test_a_folded_model_is_not_saved_and_a_training_one_is_not_folded(tmp_path):
    torch.manual_seed(0)
    net = Embedder("resnet18", dim=32, input_size=64)
    with pytest.raises(ValueError, match="eval mode"):
        fold_batchnorm(net)  # a new model is in training mode: its norms still learn
    path = save_embedder(net, tmp_path / "e.safetensors")
    folded, _ = load_embedder(path)
    with pytest.raises(ValueError, match="fold_norms=False"):
        save_embedder(folded, tmp_path / "again.safetensors")
    assert not (tmp_path / "again.safetensors").exists()
    save_embedder(load_embedder(path, fold_norms=False)[0], tmp_path / "again.safetensors")


def test_norms_before_their_convolution_stay():
    """DenseNet normalises before each convolution: only its stem (conv0 then norm0) can be folded."""
    torch.manual_seed(0)
    net = Embedder("densenet121", dim=32, input_size=64).eval()
    x = torch.rand(2, 3, 64, 64)
    before = net(x)
    total = norms(net)
    assert fold_batchnorm(net, net.trunk) == 1 and norms(net) == total - 1
    torch.testing.assert_close(net(x), before, rtol=0, atol=1e-4)
