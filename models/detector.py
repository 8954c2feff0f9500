"""Cartoon-face detector: torchvision RetinaNet with one class, and a fast batched inference path.

Architecture (the paper detects faces with a ResNet-50 RetinaNet):

    letterboxed image (size x size, RGB, normalised)
      -> backbone: torchvision ResNet body -> FPN (P3-P5) + P6/P7            (BatchNorm, trained from scratch;
                                                                             folded into the convs to infer)
      -> torchvision RetinaNetHead: 4 conv + cls_logits (1 class), 4 conv + box regression
      -> torchvision's anchors (sizes 32..512 x 3 scales x 3 ratios), BoxCoder(1, 1, 1, 1)

``backbone`` picks the trunk: "resnet50" (the paper's, FPN width 256 — exactly torchvision's
``retinanet_resnet50_fpn(num_classes=1)``) or "resnet18" (FPN and head width 128: about 6x fewer
multiply-adds, the one a CPU can train and run). Weights always start random (nothing is downloaded);
``init_from_embedder`` may seed a ResNet-18 body with our own identity embedder's trunk, which has
already learned what cartoon faces look like.

Inference (``FaceDetector.detect``): images are letterboxed to one fixed square size (scaled to fit,
padded right/bottom with the mean colour), so a batch is one tensor, the anchors are computed once, and
the whole post-processing — sigmoid, score threshold, per-level top-k, box decoding, clipping, NMS and
the per-image cap — runs as batched tensor operations on the model's device, with no per-image Python
loop (``batched_postprocess``, in models/det_postprocess.py). It returns exactly what torchvision's ``RetinaNet.postprocess_detections``
returns for the same head outputs (a test checks it). The network runs channels_last, in bf16 on CUDA and on
CPUs that compute bf16 natively (models/precision.py), else in fp32.

Files: safetensors, floating tensors in fp16, architecture and model-card fields as metadata.
``model_id`` is ``retinanet-<backbone>-<first 12 hex of the tensors' sha256>``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn as nn
import torchvision
from torchvision.models.detection import RetinaNet
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.backbone_utils import _resnet_fpn_extractor
from torchvision.models.detection.image_list import ImageList
from torchvision.ops.feature_pyramid_network import LastLevelP6P7

from models.det_postprocess import CANDIDATE_SCORE, DETECTIONS_PER_IMAGE, NMS_IOU, TOPK_CANDIDATES, batched_postprocess
from models.embedder import MEAN_RGB, STD_RGB, read_meta, weights_sha256  # same file conventions
from models.fold import fold_batchnorm, refuse_folded
from models.input_size import check_input_size  # noqa: F401 - part of this module's interface
from models.precision import precision_name, uses_bf16

FORMAT = "toonface-detector/1"
BACKBONES = ("resnet18", "resnet50")
DEFAULT_BACKBONE = "resnet18"
DEFAULT_SIZE = 512
# Mean colour (RGB 0..255) used for letterbox padding: it normalises to ~0, i.e. "no signal".
PAD_RGB = tuple(int(round(m * 255)) for m in MEAN_RGB)


def _anchor_generator() -> AnchorGenerator:
    # torchvision's RetinaNet anchors (retinanet._default_anchorgen), written out so they are explicit.
    sizes = tuple((x, int(x * 2 ** (1.0 / 3)), int(x * 2 ** (2.0 / 3))) for x in [32, 64, 128, 256, 512])
    return AnchorGenerator(sizes, ((0.5, 1.0, 2.0),) * len(sizes))


def build_retinanet(backbone: str = DEFAULT_BACKBONE, size: int = DEFAULT_SIZE) -> RetinaNet:
    """A one-class torchvision RetinaNet, random weights, trainable BatchNorm everywhere."""
    if backbone == "resnet50":
        trunk, width = torchvision.models.resnet50(weights=None, norm_layer=nn.BatchNorm2d), 256
    elif backbone == "resnet18":
        trunk, width = torchvision.models.resnet18(weights=None, norm_layer=nn.BatchNorm2d), 128
    else:
        raise ValueError(f"unknown detector backbone {backbone!r}; choose one of {', '.join(BACKBONES)}")
    body = _resnet_fpn_extractor(trunk, 5, returned_layers=[2, 3, 4], extra_blocks=LastLevelP6P7(width, width))
    if width != 256:  # the extractor always builds a 256-wide FPN; rebuild it at the chosen width
        from torchvision.ops.feature_pyramid_network import FeaturePyramidNetwork

        in_channels = [trunk.inplanes // 8 * 2 ** (i - 1) for i in (2, 3, 4)]
        body.fpn = FeaturePyramidNetwork(in_channels, width, extra_blocks=LastLevelP6P7(width, width))
        body.out_channels = width
    return RetinaNet(
        body,
        num_classes=1,
        min_size=size,
        max_size=size,
        image_mean=list(MEAN_RGB),
        image_std=list(STD_RGB),
        anchor_generator=_anchor_generator(),
        score_thresh=CANDIDATE_SCORE,
        nms_thresh=NMS_IOU,
        detections_per_img=DETECTIONS_PER_IMAGE,
        topk_candidates=TOPK_CANDIDATES,
    )


def init_from_embedder(model: RetinaNet, embedder_path: str | Path) -> int:
    """Copy a ResNet-18 embedder's trunk (conv1, bn1, layer1-4) into the detector body; returns tensors copied."""
    from safetensors.torch import load_file

    names = {"0": "conv1", "1": "bn1", "4": "layer1", "5": "layer2", "6": "layer3", "7": "layer4"}
    body = model.backbone.body.state_dict()
    copied = {}
    for key, t in load_file(str(embedder_path)).items():
        parts = key.split(".")
        if parts[0] != "trunk" or parts[1] not in names:
            continue
        target = ".".join([names[parts[1]]] + parts[2:])
        if target in body and body[target].shape == t.shape:
            copied[target] = t.to(body[target].dtype)
    if not copied:
        raise ValueError(f"{embedder_path}: no ResNet-18 trunk tensors matched the detector backbone")
    model.backbone.body.load_state_dict(copied, strict=False)
    return len(copied)


# ------------------------------------------------------------------------------------------ letterbox


def letterbox(image_bgr: np.ndarray, size: int) -> tuple[np.ndarray, float]:
    """BGR/grey/BGRA uint8 image -> (size x size x 3 RGB uint8, scale). Content at top-left, scaled to fit."""
    img = np.asarray(image_bgr)
    if img.ndim == 2:
        img = cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
    elif img.shape[2] == 4:
        img = cv2.cvtColor(img, cv2.COLOR_BGRA2BGR)
    h, w = img.shape[:2]
    scale = size / max(h, w)
    nh, nw = max(1, min(size, round(h * scale))), max(1, min(size, round(w * scale)))
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    resized = cv2.resize(img, (nw, nh), interpolation=interp) if (nh, nw) != (h, w) else img
    out = np.empty((size, size, 3), np.uint8)
    out[:] = PAD_RGB
    out[:nh, :nw] = resized[:, :, ::-1]
    return out, scale


def to_tensor(batch_rgb: np.ndarray) -> torch.Tensor:
    """(N, S, S, 3) uint8 RGB -> (N, 3, S, S) uint8 tensor; normalisation happens on the device."""
    return torch.from_numpy(np.ascontiguousarray(batch_rgb)).permute(0, 3, 1, 2)


def normalise(x_uint8: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    mean = torch.tensor(MEAN_RGB, device=x_uint8.device, dtype=torch.float32).view(1, 3, 1, 1) * 255
    std = torch.tensor(STD_RGB, device=x_uint8.device, dtype=torch.float32).view(1, 3, 1, 1) * 255
    return ((x_uint8.float() - mean) / std).to(dtype)


# ------------------------------------------------------------------------------- network forward parts


def head_outputs(model: RetinaNet, x: torch.Tensor) -> tuple[dict[str, torch.Tensor], list[torch.Tensor]]:
    """Backbone + heads on an already normalised (N, 3, S, S) batch; returns (head outputs, features)."""
    features = list(model.backbone(x).values())
    return model.head(features), features


def level_sizes(features: Sequence[torch.Tensor], num_anchors_per_location: int) -> list[int]:
    return [f.shape[-2] * f.shape[-1] * num_anchors_per_location for f in features]


def anchors_for(model: RetinaNet, x: torch.Tensor, features: Sequence[torch.Tensor]) -> torch.Tensor:
    """Anchors of one image of x's size (all images of a letterboxed batch share them), (A, 4)."""
    image_list = ImageList(x[:1], [tuple(x.shape[-2:])])
    return model.anchor_generator(image_list, list(features))[0]


def compute_loss(model: RetinaNet, x: torch.Tensor, targets: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """torchvision's RetinaNet training loss on a normalised letterboxed batch (its transform skipped)."""
    outputs, features = head_outputs(model, x)
    anchors = anchors_for(model, x, features)
    outputs = {k: v.float() for k, v in outputs.items()}
    return model.compute_loss(targets, outputs, [anchors] * len(x))


# ------------------------------------------------------------------------------------------ inference


class FaceDetector:
    """A loaded RetinaNet plus its fixed input size and operating threshold: images in, boxes out."""

    def __init__(
        self,
        model: RetinaNet,
        *,
        backbone: str,
        size: int,
        score_threshold: float = 0.5,
        model_id: str = "retinanet-untrained",
        device: str | torch.device = "cpu",
        meta: dict | None = None,
        precision: str = "auto",
    ):
        self.device = torch.device(device)
        self.model = model.eval().to(self.device)
        self.backbone, self.size = backbone, int(size)
        self.score_threshold = float(score_threshold)
        self.model_id = model_id
        self.meta = dict(meta or {})
        # bf16 where the hardware computes it (models/precision.py); channels_last is the layout the fast
        # convolution kernels want on a GPU and on a CPU alike (on a CPU fp32 gains ~20% from it too).
        self.use_bf16 = uses_bf16(precision, self.device)
        self.model = self.model.to(memory_format=torch.channels_last)
        self._anchors: torch.Tensor | None = None
        self._levels: list[int] | None = None

    @property
    def precision(self) -> str:
        return precision_name(self.use_bf16)

    @torch.no_grad()
    def network_outputs(
        self, x_uint8: torch.Tensor
    ) -> tuple[dict[str, torch.Tensor], list[torch.Tensor], torch.Tensor]:
        """The network alone on a (N, 3, S, S) uint8 RGB batch, in this detector's precision and layout:
        (head outputs, FPN features, the normalised input)."""
        x = normalise(x_uint8.to(self.device, non_blocking=True), torch.bfloat16 if self.use_bf16 else torch.float32)
        x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.use_bf16):
            outputs, features = head_outputs(self.model, x)
        return outputs, features, x

    @torch.no_grad()
    def forward_letterboxed(self, x_uint8: torch.Tensor, score_thresh: float | None = None) -> list[torch.Tensor]:
        """(N, 3, S, S) uint8 RGB tensor (any device) -> per image (K, 6) [x1,y1,x2,y2,score,label] letterboxed."""
        outputs, features, x = self.network_outputs(x_uint8)
        if self._anchors is None:
            self._anchors = anchors_for(self.model, x, features).float()
            self._levels = level_sizes(features, self.model.anchor_generator.num_anchors_per_location()[0])
        thresh = CANDIDATE_SCORE if score_thresh is None else score_thresh
        return batched_postprocess(
            outputs["cls_logits"],
            outputs["bbox_regression"],
            self._anchors,
            self._levels,
            (self.size, self.size),
            score_thresh=thresh,
            nms_thresh=self.model.nms_thresh,
            topk_candidates=self.model.topk_candidates,
            detections_per_img=self.model.detections_per_img,
        )

    def detect_many(
        self, images_bgr: Sequence[np.ndarray], batch_size: int = 16, score_threshold: float | None = None
    ) -> list[np.ndarray]:
        """Per image a float32 (K, 5) array [x1, y1, x2, y2, score] in that image's pixels, score-sorted."""
        thresh = self.score_threshold if score_threshold is None else float(score_threshold)
        results: list[np.ndarray] = []
        for i in range(0, len(images_bgr), batch_size):
            chunk = images_bgr[i : i + batch_size]
            boxed = [letterbox(img, self.size) for img in chunk]
            batch = np.stack([b for b, _ in boxed])
            # A short batch is padded to the next power of two (at most batch_size): few distinct shapes keep
            # the CPU kernel caches from growing (see Embedder.embed), and one image does not cost a full batch.
            padded = min(batch_size, 1 << (len(batch) - 1).bit_length())
            if len(batch) < padded:
                batch = np.concatenate([batch, np.repeat(batch[-1:], padded - len(batch), 0)])
            rows = self.forward_letterboxed(to_tensor(batch), score_thresh=thresh)
            for (_, scale), img, r in zip(boxed, chunk, rows):
                r = r.float().cpu().numpy()
                h, w = np.asarray(img).shape[:2]
                out = np.empty((len(r), 5), np.float32)
                out[:, :4] = r[:, :4] / scale
                out[:, [0, 2]] = out[:, [0, 2]].clip(0, w)
                out[:, [1, 3]] = out[:, [1, 3]].clip(0, h)
                out[:, 4] = r[:, 4]
                results.append(out)
        return results


# ------------------------------------------------------------------------------------------------ files


def save_detector(
    model: RetinaNet, path: str | Path, *, backbone: str, size: int, score_threshold: float, meta: dict | None = None
) -> Path:
    """Write safetensors (floating tensors fp16) with architecture + model-card metadata; atomic."""
    from safetensors.torch import save

    refuse_folded(model)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {}
    for name, t in model.state_dict().items():
        t = t.detach().cpu()
        tensors[name] = (t.to(torch.float16) if t.is_floating_point() else t).contiguous()
    strings = {str(k): (v if isinstance(v, str) else json.dumps(v, sort_keys=True)) for k, v in (meta or {}).items()}
    strings.update(
        {
            "format": FORMAT,
            "backbone": backbone,
            "size": str(int(size)),
            "score_threshold": json.dumps(float(score_threshold)),
            "mean_rgb": json.dumps(list(MEAN_RGB)),
            "std_rgb": json.dumps(list(STD_RGB)),
        }
    )
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(save(tensors, metadata=strings))
    tmp.replace(path)
    return path


def detector_model_id(backbone: str, digest: str, size: int, stored: int) -> str:
    """``retinanet-<backbone>-<12 hex of the tensors' sha256>``, plus ``-<size>px`` when run at another side."""
    return f"retinanet-{backbone}-{digest[:12]}" + (f"-{size}px" if size != stored else "")


def load_detector(
    path: str | Path,
    device: str | torch.device = "cpu",
    score_threshold: float | None = None,
    size: int | None = None,
    precision: str = "auto",
    fold_norms: bool = True,
) -> FaceDetector:
    """``size`` (None/0: the size stored with the weights) runs the fully convolutional network at another
    letterbox side: larger finds smaller faces, smaller runs faster. It changes the boxes, so a size other
    than the stored one is part of the model id (``-<size>px``). ``precision`` (models/precision.py):
    "auto" runs bf16 where the hardware computes it, else fp32; "fp32" for bit-for-bit comparisons.
    ``fold_norms`` folds the body's norms into its convolutions for inference (models/fold.py: the same outputs
    within float rounding, faster); pass False to get the stored tensors as they are (to train on)."""
    from safetensors.torch import load_file

    meta = read_meta(path)
    if meta.get("format") != FORMAT:
        raise ValueError(f"{path}: not a toonface detector file (format={meta.get('format')!r})")
    stored = int(meta["size"])
    size = check_input_size(size) if size else stored
    model = build_retinanet(meta["backbone"], size)
    ref = model.state_dict()
    state = {k: (v.to(ref[k].dtype) if k in ref else v) for k, v in load_file(str(path)).items()}
    model.load_state_dict(state, strict=True)
    if fold_norms:
        fold_batchnorm(model.eval(), model.backbone.body)  # FPN and heads have no norms
    digest = weights_sha256(path)
    meta["weights_sha256"] = digest
    thresh = float(meta.get("score_threshold", 0.5)) if score_threshold is None else float(score_threshold)
    model_id = detector_model_id(meta["backbone"], digest, size, stored)
    return FaceDetector(
        model,
        backbone=meta["backbone"],
        size=size,
        score_threshold=thresh,
        model_id=model_id,
        device=device,
        meta=meta,
        precision=precision,
    )
