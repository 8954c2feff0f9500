"""Identity-labelled face crops for the embedder: folders of ``<identity>/<image>`` and CAVA-style face
boxes cut from their frames, and the training dataset over them (augmentation for cartoons).

* ``identity_folders(DIR)``: ``DIR/<identity>/*.jpg|png|...`` (e.g. hololive_danbooru, moeimouto/train).
  The folder name is the identity; the same name under two roots is the same identity.
* ``cava_identity_crops(FOLDER, split)``: a CAVA-style ``FOLDER/boxes.csv`` (split,image,x1,y1,x2,y2,identity).
  Each box of ``split`` is cut from its frame at the paper's enlarged rate 1.0 (``models.crop.enlarged_box``,
  clipped at the frame border); ``unknown`` (minor characters) is skipped. Identities are named
  ``<folder name>/<identity>`` (e.g. ``scooby_doo/fred``).
"""

from __future__ import annotations

import csv
import dataclasses
from collections.abc import Iterable, Sequence
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset
from torchvision.transforms import v2

from models.crop import cut, enlarged_box
from models.embedder import MEAN_RGB, STD_RGB, preprocess

IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}
ENLARGE_RATE = 1.0
# Random resized crops keep at least this share of a crop's area (see `augmentation`).
DEFAULT_MIN_CROP_SCALE = 0.7


@dataclasses.dataclass(frozen=True)
class Sample:
    """One labelled face: a whole image file, or a face box in a frame (cut at ``enlarge_rate``)."""

    path: str
    identity: str
    box: tuple[float, float, float, float] | None = None
    enlarge_rate: float = ENLARGE_RATE

    def load(self) -> np.ndarray:
        """The BGR uint8 crop."""
        img = cv2.imread(self.path, cv2.IMREAD_COLOR)
        if img is None:
            raise OSError(f"cannot read image {self.path}")
        if self.box is not None:
            h, w = img.shape[:2]
            img = cut(img, enlarged_box(self.box, w, h, self.enlarge_rate))
            if img.size == 0:
                raise ValueError(f"empty crop {self.box} in {self.path}")
        return img


def identity_folders(root: str | Path) -> list[Sample]:
    """``root/<identity>/<image>`` -> samples, sorted by identity then file name."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"not a folder: {root}")
    samples = []
    for d in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        for f in sorted(d.iterdir()):
            if f.is_file() and f.suffix.lower() in IMAGE_EXTS:
                samples.append(Sample(str(f), d.name))
    return samples


def cava_identity_crops(
    folder: str | Path,
    split: str = "train",
    enlarge_rate: float = ENLARGE_RATE,
    skip_identities: Iterable[str] = ("unknown",),
) -> list[Sample]:
    """Face boxes of ``split`` in ``folder/boxes.csv`` as samples cut at ``enlarge_rate`` on load.

    Identity names are ``<folder name>/<identity>``; boxes labelled ``unknown`` are skipped.
    """
    folder = Path(folder)
    skip = set(skip_identities)
    samples = []
    with open(folder / "boxes.csv", newline="") as fh:
        for row in csv.DictReader(fh):
            if row["split"] != split or row["identity"] in skip:
                continue
            box = tuple(float(row[k]) for k in ("x1", "y1", "x2", "y2"))
            if box[2] <= box[0] or box[3] <= box[1]:
                continue
            samples.append(Sample(str(folder / row["image"]), f"{folder.name}/{row['identity']}", box, enlarge_rate))
    return samples


def augmentation(input_size: int, min_crop_scale: float = DEFAULT_MIN_CROP_SCALE, degrade: bool = False):
    """Training transform on a uint8 CHW RGB tensor -> normalised float CHW tensor. ``min_crop_scale``:
    the smallest share of the crop's area a random resized crop keeps (a face found by the detector is
    framed differently from a typical image; a low value teaches the model both framings). ``degrade``:
    also what episodes and web images do to a face: a small face upscaled (shrunk to 24-64 px first),
    JPEG at quality 30-95, blur."""
    degradations = [
        v2.RandomApply([v2.RandomResize(24, 64, antialias=True)], p=0.25),
        v2.RandomApply([v2.JPEG((30, 95))], p=0.3),
        v2.RandomApply([v2.GaussianBlur(5, sigma=(0.1, 1.5))], p=0.2),
    ]
    return v2.Compose(
        [
            *(degradations if degrade else []),
            v2.RandomRotation(10, interpolation=v2.InterpolationMode.BILINEAR),
            v2.RandomResizedCrop(input_size, scale=(min_crop_scale, 1.0), ratio=(3 / 4, 4 / 3), antialias=True),
            v2.RandomHorizontalFlip(),
            v2.ColorJitter(brightness=0.3, contrast=0.3, saturation=0.3, hue=0.05),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(MEAN_RGB, STD_RGB),
        ]
    )


class FaceDataset(Dataset):
    """Indexed by ``(index, augmentation_seed)``: each sample's augmentation is a function of its seed."""

    def __init__(
        self,
        samples: Sequence[Sample],
        labels: Sequence[int],
        input_size: int,
        augment: bool = True,
        min_crop_scale: float = DEFAULT_MIN_CROP_SCALE,
        degrade: bool = False,
    ):
        self.samples, self.labels = list(samples), list(labels)
        self.input_size = input_size
        self.transform = augmentation(input_size, min_crop_scale, degrade) if augment else None
        # Decode once at a bounded size: the crop then works on small images (cheap), with head-room
        # above input_size so random resized crops keep detail.
        self.decode_size = int(round(input_size * 1.25))

    def __len__(self):
        return len(self.samples)

    def _image(self, i: int) -> np.ndarray:
        img = self.samples[i].load()
        h, w = img.shape[:2]
        s = self.decode_size / max(h, w)
        if s < 1:
            img = cv2.resize(img, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)
        return np.ascontiguousarray(img[:, :, ::-1])  # RGB

    def __getitem__(self, key):
        i, seed = key
        if self.transform is None:  # evaluation: exactly what inference does
            return preprocess([self.samples[i].load()], self.input_size)[0], self.labels[i]
        x = torch.from_numpy(self._image(i)).permute(2, 0, 1).contiguous()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(seed))
            x = self.transform(x)
        return x, self.labels[i]
