"""Cartoon-face embedder: a torchvision CNN trunk -> L2-normalised embedding.

Architecture (the paper's best baseline is DenseNet-169; its dedup/pre-label feature extractor is
"DenseNet-169 + SphereFace"):

    image (input_size x input_size, RGB, normalised)
      -> trunk: torchvision ``densenet169(weights=None).features`` + ReLU   (1664 channels)
      -> global average pool -> dropout -> Linear(C, dim) -> BatchNorm1d(dim) -> L2 normalise

``backbone`` picks the trunk: "densenet169" (default, as in the paper), "densenet121" (lighter, same
family) or "resnet18" (the lightest; for CPU-only users). Weights always start random: nothing is ever
downloaded (``weights=None``); the project trains its own weights (``models.train_embedder``).

``input_size`` defaults to 112: the usual face-recognition resolution (SphereFace 112x96, ArcFace
112x112) and close to the paper's quality gate (crops under 100 px are dropped), so almost every kept
crop is downscaled, not upscaled. DenseNet's stride of 32 gives a 3x3 map at 112 px. Any multiple of
32 from 64 up works; the value a model was trained with is stored in its file and ``preprocess`` uses it.

Files: ``save_embedder`` writes safetensors with the weights in fp16 (DenseNet-169: ~27 MB) and the
model card fields as safetensors metadata strings; ``load_embedder`` rebuilds the model in fp32.
``weights_sha256`` hashes the tensors only (name, dtype, shape, bytes, in name order), so the id does
not change when metadata strings change or the file is re-saved; ``model_id`` is
``embedder-<backbone>-<first 12 hex of weights_sha256>``, plus ``-flip`` for a file whose
``flip_average`` is on.

``flip_average`` (stored in the file): ``embed`` averages the embeddings of each crop and of its mirror
image, then normalises again. A face and its mirror image are the same character, training already
flips at random, and the average is steadier than either view (on the shipped weights it raised
pre-label recall at equal precision; see the model card). It changes every vector, so it is part of
the model id: an index built without it is never mixed with vectors made with it.

``reference_views`` (for pre-labelling against one typical image): the crop and centred crops of it
at ``REFERENCE_VIEW_SCALES`` of its side. A crop at the enlarged rate shows the face with as much
again around it; a face found in another image is framed a little differently, so matching it against
the typical image at several zooms (the best view counts) finds it more often at the same precision
(model card: "One typical image, several views").
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision

from models.fold import fold_batchnorm, refuse_folded
from models.precision import precision_name, uses_bf16

# Fixed normalisation constants (RGB order, on 0..1 pixel values). These are the ImageNet statistics,
# kept only as a conventional fixed choice: there is no pretrained trunk; what matters is that training
# and inference use the same numbers, so they are constants and recorded in each saved file.
MEAN_RGB = (0.485, 0.456, 0.406)
STD_RGB = (0.229, 0.224, 0.225)

DEFAULT_BACKBONE = "densenet169"
DEFAULT_DIM = 512
DEFAULT_INPUT_SIZE = 112
DEFAULT_DROPOUT = 0.2
FORMAT = "toonface-embedder/1"

BACKBONES = ("densenet169", "densenet121", "resnet18")


def _trunk(backbone: str) -> tuple[nn.Module, int]:
    """Feature extractor without pooling/classifier, and its output channel count."""
    if backbone in ("densenet169", "densenet121"):
        net = getattr(torchvision.models, backbone)(weights=None)
        # torchvision's DenseNet.forward applies ReLU after `features` (which ends in norm5).
        return nn.Sequential(net.features, nn.ReLU(inplace=True)), net.classifier.in_features
    if backbone == "resnet18":
        net = torchvision.models.resnet18(weights=None)
        body = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool, net.layer1, net.layer2, net.layer3, net.layer4)
        return body, net.fc.in_features
    raise ValueError(f"unknown backbone {backbone!r}; choose one of {', '.join(BACKBONES)}")


class Embedder(nn.Module):
    """CNN trunk -> GAP -> dropout -> Linear -> BatchNorm1d -> L2-normalised ``dim``-d embedding."""

    def __init__(
        self,
        backbone: str = DEFAULT_BACKBONE,
        dim: int = DEFAULT_DIM,
        input_size: int = DEFAULT_INPUT_SIZE,
        dropout: float = DEFAULT_DROPOUT,
        flip_average: bool = False,
    ):
        super().__init__()
        self.flip_average = bool(flip_average)
        # Inference in bf16 (``embed``); load_embedder sets it where the hardware computes bf16.
        self.use_bf16 = False
        self.backbone = backbone
        self.dim = int(dim)
        self.input_size = int(input_size)
        self.dropout_p = float(dropout)
        self.trunk, channels = _trunk(backbone)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(self.dropout_p)
        self.fc = nn.Linear(channels, self.dim)
        self.bn = nn.BatchNorm1d(self.dim)

    @property
    def precision(self) -> str:
        return precision_name(self.use_bf16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.pool(self.trunk(x)).flatten(1)
        f = self.bn(self.fc(self.dropout(f)))
        # Normalise in fp32 even under autocast (bf16 norms are coarse).
        return F.normalize(f.float(), dim=1)

    def preprocess(self, images_bgr: Sequence[np.ndarray]) -> torch.Tensor:
        return preprocess(images_bgr, self.input_size)

    @torch.no_grad()
    def embed(self, images_bgr: Sequence[np.ndarray], batch_size: int = 64) -> np.ndarray:
        """Embeddings of BGR images (as cv2 reads them), float32 (N, dim), unit rows. Uses eval mode.
        With ``flip_average``, each row is the normalised mean of the image's and its mirror's embedding."""
        was_training = self.training
        self.eval()
        device = next(self.parameters()).device
        out = []
        try:
            for i in range(0, len(images_bgr), batch_size):
                x = preprocess(images_bgr[i : i + batch_size], self.input_size)
                n = len(x)
                if n < batch_size:
                    # Always the same batch shape: each new shape makes the CPU kernels cache more
                    # memory, and a long ingest (a short last batch per shard) would keep growing.
                    x = torch.cat([x, x[-1:].expand(batch_size - n, -1, -1, -1)])
                x = x.to(device).contiguous(memory_format=torch.channels_last)
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=self.use_bf16):
                    e = self(x)
                    if self.flip_average:  # flip(3): mirror left-right
                        e = F.normalize(e + self(x.flip(3).contiguous(memory_format=torch.channels_last)), dim=1)
                out.append(e.float().cpu()[:n])
        finally:
            self.train(was_training)
        if not out:
            return np.zeros((0, self.dim), np.float32)
        return torch.cat(out).numpy()

    def embed_views(
        self, images_bgr: Sequence[np.ndarray], batch_size: int = 64, plain: np.ndarray | None = None
    ) -> np.ndarray:
        """Embeddings of each image's ``reference_views``: float32 (N, 1 + len(REFERENCE_VIEW_SCALES), dim);
        view 0 is ``embed`` of the image itself. ``plain`` (N, dim), when the caller already has those
        embeddings, becomes view 0 as given, and only the centred crops are embedded."""
        first = 0 if plain is None else 1
        views = [v for img in images_bgr for v in reference_views(np.asarray(img))[first:]]
        per_image = 1 + len(REFERENCE_VIEW_SCALES) - first
        out = self.embed(views, batch_size=batch_size).reshape(len(images_bgr), per_image, self.dim)
        if plain is not None:
            plain = np.asarray(plain, np.float32).reshape(len(images_bgr), 1, self.dim)
            out = np.concatenate([plain, out], axis=1)
        return out


# Centre crops (share of the side) that represent a reference crop beside the crop itself.
REFERENCE_VIEW_SCALES = (0.85, 0.7, 0.55)
# Names the view set wherever view embeddings are cached or fingerprinted.
REFERENCE_VIEWS_ID = "views-" + "-".join(f"{x:g}" for x in REFERENCE_VIEW_SCALES)


def reference_views(image_bgr: np.ndarray, scales: Sequence[float] = REFERENCE_VIEW_SCALES) -> list[np.ndarray]:
    """The image, then a centred crop of it at each of ``scales`` of its height and width."""
    h, w = image_bgr.shape[:2]
    views = [image_bgr]
    for scale in scales:
        ch, cw = max(1, round(h * scale)), max(1, round(w * scale))
        y, x = (h - ch) // 2, (w - cw) // 2
        views.append(image_bgr[y : y + ch, x : x + cw])
    return views


def preprocess(images_bgr: Sequence[np.ndarray], input_size: int = DEFAULT_INPUT_SIZE) -> torch.Tensor:
    """BGR uint8 images (any size; grey and BGRA accepted) -> float32 tensor (N, 3, S, S).

    Resize to S x S (area interpolation when shrinking, linear when enlarging; no aspect-preserving
    padding: face crops are near square), BGR -> RGB, scale to 0..1, normalise with MEAN_RGB/STD_RGB.
    """
    batch = np.empty((len(images_bgr), input_size, input_size, 3), np.float32)
    for i, img in enumerate(images_bgr):
        img = np.asarray(img)
        if img.ndim == 2:
            img = cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
        elif img.shape[2] == 4:
            img = cv2.cvtColor(img, cv2.COLOR_BGRA2BGR)
        if img.dtype != np.uint8:
            img = np.clip(img, 0, 255).astype(np.uint8)
        h, w = img.shape[:2]
        interp = cv2.INTER_AREA if (h > input_size or w > input_size) else cv2.INTER_LINEAR
        img = cv2.resize(img, (input_size, input_size), interpolation=interp)
        batch[i] = img[:, :, ::-1]
    batch /= 255.0
    batch -= np.asarray(MEAN_RGB, np.float32)
    batch /= np.asarray(STD_RGB, np.float32)
    return torch.from_numpy(batch).permute(0, 3, 1, 2).contiguous()


# ---------------------------------------------------------------------------------------------- files


def _meta_strings(model: Embedder, meta: dict) -> dict[str, str]:
    out: dict[str, str] = {}
    for k, v in (meta or {}).items():
        out[str(k)] = v if isinstance(v, str) else json.dumps(v, sort_keys=True)
    # Architecture fields come from the model itself, so a file always rebuilds correctly.
    out.update(
        {
            "format": FORMAT,
            "backbone": model.backbone,
            "dim": str(model.dim),
            "input_size": str(model.input_size),
            "dropout": str(model.dropout_p),
            "flip_average": json.dumps(model.flip_average),
            "mean_rgb": json.dumps(list(MEAN_RGB)),
            "std_rgb": json.dumps(list(STD_RGB)),
        }
    )
    return out


def save_embedder(model: Embedder, path: str | Path, meta: dict | None = None) -> Path:
    """Write ``model`` to ``path`` (safetensors): floating tensors in fp16, ints as they are.

    ``meta`` (model card fields, e.g. ``identities``: list of names trained on, ``recipe``: dict) is
    stored as safetensors metadata; values that are not strings are JSON-encoded. ``backbone``,
    ``dim``, ``input_size``, ``dropout`` and the normalisation constants are always taken from the model.
    """
    from safetensors.torch import save

    refuse_folded(model)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {}
    for name, t in model.state_dict().items():
        t = t.detach().cpu()
        if t.is_floating_point():
            t = t.to(torch.float16)
        tensors[name] = t.contiguous()
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(save(tensors, metadata=_meta_strings(model, meta or {})))  # usual umask permissions
    tmp.replace(path)  # atomic: a stopped run never leaves half a file under the final name
    return path


def read_meta(path: str | Path) -> dict:
    """The metadata of a saved embedder (or detector), JSON values decoded (``identities`` -> list, ``dim`` ->
    int...). A file that is not safetensors at all (truncated, or another format) raises ValueError."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            raw = f.metadata() or {}
    except SafetensorError as e:
        raise ValueError(f"{path}: not a readable safetensors weights file ({e})") from None
    meta: dict = {}
    for k, v in raw.items():
        try:
            meta[k] = json.loads(v)
        except (json.JSONDecodeError, TypeError):
            meta[k] = v
    for k in ("backbone", "format"):  # keep these as the strings they are
        if k in raw:
            meta[k] = raw[k]
    return meta


def weights_sha256(path: str | Path) -> str:
    """sha256 over the stored tensors (name, dtype, shape, raw bytes; sorted by name), metadata excluded."""
    from safetensors import safe_open

    h = hashlib.sha256()
    with safe_open(str(path), framework="pt") as f:
        for name in sorted(f.keys()):
            t = f.get_tensor(name).contiguous()
            h.update(name.encode() + b"\0" + str(t.dtype).encode() + b"\0" + json.dumps(list(t.shape)).encode() + b"\0")
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _model_id(meta: dict, digest: str) -> str:
    return f"embedder-{meta['backbone']}-{digest[:12]}" + ("-flip" if meta.get("flip_average") else "")


def model_id(path: str | Path) -> str:
    """``embedder-<backbone>-<first 12 hex of weights_sha256>``, plus ``-flip`` with ``flip_average``."""
    return _model_id(read_meta(path), weights_sha256(path))


def load_embedder(
    path: str | Path, device: str | torch.device = "cpu", precision: str = "auto", fold_norms: bool = True
) -> tuple[Embedder, dict]:
    """Rebuild the model (fp32 weights, eval mode, channels_last) on ``device``. ``embed`` runs in bf16 where
    ``precision`` says so (models/precision.py: "auto" where the hardware computes bf16; embeddings agree
    with fp32 to a cosine of 0.9998 or more). ``meta`` is ``read_meta`` plus ``weights_sha256`` and ``model_id``.
    ``fold_norms`` folds the trunk's norms into its convolutions for inference (models/fold.py: the same
    embeddings within float rounding, faster); pass False for the stored tensors as they are (to re-save)."""
    from safetensors.torch import load_file

    meta = read_meta(path)
    if meta.get("format") != FORMAT:
        raise ValueError(f"{path}: not a toonface embedder file (format={meta.get('format')!r})")
    model = Embedder(
        backbone=meta["backbone"],
        dim=int(meta["dim"]),
        input_size=int(meta["input_size"]),
        dropout=float(meta.get("dropout", DEFAULT_DROPOUT)),
        flip_average=bool(meta.get("flip_average", False)),
    )
    state = load_file(str(path))
    ref = model.state_dict()
    state = {k: (v.to(ref[k].dtype) if k in ref else v) for k, v in state.items()}
    model.load_state_dict(state, strict=True)
    if fold_norms:
        fold_batchnorm(model.eval(), model.trunk)  # not the embedding's BatchNorm1d: no conv before it
    model.eval().to(device).to(memory_format=torch.channels_last)
    model.use_bf16 = uses_bf16(precision, torch.device(device))
    digest = weights_sha256(path)
    meta["weights_sha256"] = digest
    meta["model_id"] = _model_id(meta, digest)
    return model, meta
