from __future__ import annotations

import re

import cv2
import numpy as np
import pytest
import torch

from models.embedder import (
    MEAN_RGB,
    REFERENCE_VIEW_SCALES,
    STD_RGB,
    Embedder,
    load_embedder,
    model_id,
    preprocess,
    read_meta,
    reference_views,
    save_embedder,
    weights_sha256,
)
from tests.conftest import SHARED

HOLO = SHARED / "data" / "anime_identities" / "hololive_danbooru"


def real_crops(n: int) -> list[np.ndarray]:
    files = sorted((HOLO / "gura").glob("*.jpg"))[: n // 2] + sorted((HOLO / "ame").glob("*.jpg"))[: n - n // 2]
    return [cv2.imread(str(f)) for f in files]


@pytest.fixture(scope="module")
def densenet169():
    """One default model for the module (a DenseNet's first CPU forward passes are slow: kernel set-up)."""
    torch.manual_seed(1)
    model = Embedder().eval()
    # Non-trivial BatchNorm statistics, so that they must round-trip too.
    with torch.no_grad():
        model.bn.running_mean.uniform_(-0.5, 0.5)
        model.bn.running_var.uniform_(0.5, 2.0)
    return model


@pytest.mark.shared_data
def test_default_is_densenet169_512d_unit_norm(densenet169):
    model = densenet169
    assert (model.backbone, model.dim, model.input_size) == ("densenet169", 512, 112)
    x = model.preprocess(real_crops(3))
    assert x.shape == (3, 3, 112, 112) and x.dtype == torch.float32
    with torch.no_grad():
        e = model(x)
    assert e.shape == (3, 512)
    torch.testing.assert_close(e.norm(dim=1), torch.ones(3), atol=1e-5, rtol=0)


@pytest.mark.parametrize("backbone", ["resnet18", "densenet121"])
def test_light_backbones_train_mode_batch(backbone):
    model = Embedder(backbone=backbone, dim=64, input_size=64).train()
    e = model(torch.randn(4, 3, 64, 64))
    assert e.shape == (4, 64)
    torch.testing.assert_close(e.norm(dim=1), torch.ones(4), atol=1e-5, rtol=0)
    e.sum().backward()


def test_unknown_backbone():
    with pytest.raises(ValueError):
        Embedder(backbone="vit_b_16")


def test_preprocess_channel_order_sizes_and_constants():
    blue_bgr = np.zeros((50, 80, 3), np.uint8)
    blue_bgr[..., 0] = 255
    grey = np.full((200, 120), 128, np.uint8)
    bgra = np.dstack([blue_bgr, np.full((50, 80), 7, np.uint8)])
    x = preprocess([blue_bgr, grey, bgra], 32)
    assert x.shape == (3, 3, 32, 32)
    # RGB order: blue lands in channel 2; the values follow the fixed mean/std constants.
    want_blue = torch.tensor(
        [(0 - MEAN_RGB[0]) / STD_RGB[0], (0 - MEAN_RGB[1]) / STD_RGB[1], (1 - MEAN_RGB[2]) / STD_RGB[2]]
    )
    torch.testing.assert_close(x[0, :, 16, 16], want_blue)
    torch.testing.assert_close(x[2], x[0])
    torch.testing.assert_close(
        x[1, :, 5, 5], torch.tensor([(128 / 255 - m) / s for m, s in zip(MEAN_RGB, STD_RGB)]), atol=1e-5, rtol=0
    )


@pytest.mark.shared_data
def test_save_load_round_trip_densenet169(densenet169, tmp_path):
    model = densenet169
    images = real_crops(3)
    before = model.embed(images)
    path = save_embedder(
        model, tmp_path / "e.safetensors", {"identities": ["gura", "ame"], "recipe": {"head": "cosface", "epochs": 0}}
    )
    assert path.stat().st_size < 30e6  # fp16 weights keep DenseNet-169 under 30 MB

    loaded, meta = load_embedder(path, precision="fp32")  # the module's model runs fp32
    assert not loaded.training
    after = loaded.embed(images)
    assert after.shape == (3, 512) and after.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(after, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(after, before, atol=5e-3)  # fp16 weights
    assert (np.sum(after * before, axis=1) > 0.9999).all()

    assert meta["backbone"] == "densenet169" and meta["dim"] == 512 and meta["input_size"] == 112
    assert meta["identities"] == ["gura", "ame"]
    assert meta["recipe"] == {"head": "cosface", "epochs": 0}
    assert re.fullmatch(r"embedder-densenet169-[0-9a-f]{12}", meta["model_id"])
    assert meta["model_id"] == model_id(path)
    assert meta["weights_sha256"] == weights_sha256(path)
    assert meta["model_id"].endswith(weights_sha256(path)[:12])

    # Re-saving the loaded model (other metadata) keeps the id: it hashes the weights only.
    stored, _ = load_embedder(path, fold_norms=False)  # as stored: a model folded for inference cannot be saved
    again = save_embedder(stored, tmp_path / "again.safetensors", {"identities": ["x"], "note": "re-saved"})
    assert model_id(again) == meta["model_id"]
    assert read_meta(again)["identities"] == ["x"]


def test_different_weights_different_id(tmp_path):
    torch.manual_seed(0)
    a = save_embedder(Embedder("resnet18", dim=32, input_size=64), tmp_path / "a.safetensors")
    torch.manual_seed(1)
    b = save_embedder(Embedder("resnet18", dim=32, input_size=64), tmp_path / "b.safetensors")
    assert model_id(a) != model_id(b)
    assert model_id(a).startswith("embedder-resnet18-")
    model, meta = load_embedder(a)
    assert (model.backbone, model.dim, model.input_size) == ("resnet18", 32, 64)


def test_load_rejects_other_safetensors(tmp_path):
    from safetensors.torch import save_file

    p = tmp_path / "other.safetensors"
    save_file({"w": torch.zeros(2)}, str(p))
    with pytest.raises(ValueError):
        load_embedder(p)


@pytest.mark.shared_data
def test_flip_average_is_mirror_invariant_and_part_of_the_model_id(tmp_path):
    torch.manual_seed(0)
    net = Embedder("resnet18", dim=32, input_size=64)
    plain_path = save_embedder(net, tmp_path / "plain.safetensors")
    net.flip_average = True
    flip_path = save_embedder(net, tmp_path / "flip.safetensors")
    plain, _ = load_embedder(plain_path)
    model, meta = load_embedder(flip_path)
    assert plain.flip_average is False
    assert model.flip_average and read_meta(flip_path)["flip_average"] is True

    crops = real_crops(4)
    mirrored = [np.ascontiguousarray(c[:, ::-1]) for c in crops]
    # One view: a crop and its mirror image embed differently (an untrained net is not symmetric).
    one, one_mirrored = plain.embed(crops), plain.embed(mirrored)
    assert np.abs(one - one_mirrored).max() > 1e-3

    # Averaged: the normalised mean of both views, so a crop and its mirror get the same vector.
    both = model.embed(crops)
    expected = (one + one_mirrored) / np.linalg.norm(one + one_mirrored, axis=1, keepdims=True)
    np.testing.assert_allclose(both, expected, atol=1e-5)
    np.testing.assert_allclose(model.embed(mirrored), both, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(both, axis=1), 1.0, atol=1e-5)

    # Same tensors, other vectors: the id says which, so the two never share a published index.
    assert weights_sha256(flip_path) == weights_sha256(plain_path)
    assert meta["model_id"] == model_id(flip_path) == model_id(plain_path) + "-flip"


@pytest.mark.shared_data
def test_reference_views_are_the_crop_then_centred_crops_and_embed_in_one_call():
    crop = real_crops(1)[0][:90, :120]  # not square: each side is cut by the same share
    views = reference_views(crop)
    assert len(views) == 1 + len(REFERENCE_VIEW_SCALES) and views[0] is crop
    for view, scale in zip(views[1:], REFERENCE_VIEW_SCALES):
        h, w = view.shape[:2]
        assert (h, w) == (round(90 * scale), round(120 * scale))
        y, x = (90 - h) // 2, (120 - w) // 2
        np.testing.assert_array_equal(view, crop[y : y + h, x : x + w])  # centred

    torch.manual_seed(0)
    net = Embedder("resnet18", dim=32, input_size=64)
    crops = real_crops(3)
    per_image = net.embed_views(crops, batch_size=4)
    assert per_image.shape == (3, len(views), 32)
    np.testing.assert_allclose(per_image[:, 0], net.embed(crops), atol=1e-5)  # view 0: the crop itself
    np.testing.assert_allclose(per_image[1], net.embed(reference_views(crops[1])), atol=1e-5)
    assert np.abs(per_image[:, 1] - per_image[:, 0]).max() > 1e-3  # the zooms are other vectors
    plain = net.embed(crops)  # a caller that has the plain embeddings saves the forward pass of view 0
    reused = net.embed_views(crops, batch_size=4, plain=plain)
    np.testing.assert_array_equal(reused[:, 0], plain)
    np.testing.assert_allclose(reused, per_image, atol=1e-5)


@pytest.mark.shared_data
def test_bf16_embeddings_agree_with_fp32():
    """bf16 (what "auto" runs on CUDA and on CPUs with native bf16; forced here, so any CPU checks it)
    changes the shipped model's embeddings of real crops by far less than any threshold could notice."""
    from pipeline.identity.embedding import DEFAULT_WEIGHTS

    fp32, meta32 = load_embedder(DEFAULT_WEIGHTS, precision="fp32")
    bf16, meta16 = load_embedder(DEFAULT_WEIGHTS, precision="bf16")
    assert (fp32.use_bf16, bf16.use_bf16) == (False, True) and meta32["model_id"] == meta16["model_id"]
    crops = real_crops(16)
    a, b = fp32.embed(crops), bf16.embed(crops)
    assert b.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(b, axis=1), 1.0, atol=1e-5)
    cosine = (a * b).sum(1)
    assert cosine.min() > 0.999, cosine.min()
    assert np.abs(a - b).max() > 0  # it did run in another precision
    with pytest.raises(ValueError, match="precision"):
        load_embedder(DEFAULT_WEIGHTS, precision="fp16")
