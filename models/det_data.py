"""Face boxes for detector training and evaluation, in the three formats users have.

* YOLO txt (``yolo:IMAGES_DIR:LABELS_DIR``): one ``LABELS_DIR/<image stem>.txt`` per image, lines
  ``class cx cy w h`` normalised to 0..1 (every class is a face). An image without a label file has no faces.
* CAVA ``boxes.csv`` (``cava:FOLDER[:SPLIT]``): ``split,image,x1,y1,x2,y2,identity`` in pixels, image
  paths relative to FOLDER; SPLIT (e.g. ``train``) keeps that split's rows only.
* COCO JSON (``coco:FILE.json:IMAGES_DIR``): ``images[].file_name``/``id``, ``annotations[].bbox``
  ``[x, y, w, h]`` in pixels; every category is a face; ``iscrowd`` annotations are skipped.

All sources give ``BoxedImage`` rows: the image path and its boxes as ``x1, y1, x2, y2`` pixels
(YOLO boxes are converted once the image size is known, when the image is read). A malformed line
raises ``ValueError`` naming the file and line: labels that changed shape must not train silently.
"""

from __future__ import annotations

import csv
import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from models.detector import PAD_RGB, letterbox, to_tensor

IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}


@dataclasses.dataclass(frozen=True)
class BoxedImage:
    path: Path
    boxes: tuple[tuple[float, float, float, float], ...]  # pixels, or 0..1 of (w, h) when `normalised`
    normalised: bool = False

    def load(self) -> tuple[np.ndarray, np.ndarray]:
        """(BGR uint8 image, float32 (K, 4) pixel boxes). Raises ValueError when the image cannot be read."""
        img = cv2.imread(str(self.path), cv2.IMREAD_COLOR)
        if img is None:
            raise ValueError(f"{self.path}: cannot decode image")
        return img, self.pixel_boxes(img.shape[1], img.shape[0])

    def pixel_boxes(self, width: int, height: int) -> np.ndarray:
        b = np.asarray(self.boxes, np.float32).reshape(-1, 4)
        if self.normalised:
            b = b * np.asarray([width, height, width, height], np.float32)
        return b


def read_yolo(images_dir: str | Path, labels_dir: str | Path) -> list[BoxedImage]:
    images_dir, labels_dir = Path(images_dir), Path(labels_dir)
    if not images_dir.is_dir():
        raise ValueError(f"{images_dir}: not a folder of images")
    out = []
    for path in sorted(p for p in images_dir.iterdir() if p.suffix.lower() in IMAGE_EXTS):
        label = labels_dir / f"{path.stem}.txt"
        boxes = []
        if label.exists():
            for n, line in enumerate(label.read_text().splitlines(), 1):
                if not line.strip():
                    continue
                parts = line.split()
                try:
                    _, cx, cy, w, h = (float(v) for v in parts[:5])
                    if len(parts) != 5:
                        raise ValueError
                except ValueError:
                    raise ValueError(f"{label}:{n}: expected 'class cx cy w h', got {line!r}") from None
                boxes.append((cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2))
        out.append(BoxedImage(path, tuple(boxes), normalised=True))
    return out


def read_cava(
    boxes_csv: str | Path, split: str | None = None, images_root: str | Path | None = None
) -> list[BoxedImage]:
    boxes_csv = Path(boxes_csv)
    root = Path(images_root) if images_root else boxes_csv.parent
    per_image: dict[str, list] = {}
    with boxes_csv.open(newline="") as f:
        reader = csv.DictReader(f)
        missing = {"image", "x1", "y1", "x2", "y2"} - set(reader.fieldnames or [])
        if missing:
            raise ValueError(f"{boxes_csv}: missing columns {sorted(missing)}")
        for n, row in enumerate(reader, 2):
            if split and row.get("split") != split:
                continue
            try:
                box = tuple(float(row[k]) for k in ("x1", "y1", "x2", "y2"))
            except (TypeError, ValueError):
                raise ValueError(f"{boxes_csv}:{n}: bad box {row!r}") from None
            per_image.setdefault(row["image"], []).append(box)
    if not per_image:
        raise ValueError(f"{boxes_csv}: no rows" + (f" for split {split!r}" if split else ""))
    return [BoxedImage(root / name, tuple(b)) for name, b in sorted(per_image.items())]


def read_coco(json_path: str | Path, images_dir: str | Path) -> list[BoxedImage]:
    json_path, images_dir = Path(json_path), Path(images_dir)
    try:
        doc = json.loads(json_path.read_text())
        images = {im["id"]: im["file_name"] for im in doc["images"]}
        per_image: dict = {i: [] for i in images}
        for ann in doc.get("annotations", []):
            if ann.get("iscrowd"):
                continue
            x, y, w, h = (float(v) for v in ann["bbox"])
            per_image[ann["image_id"]].append((x, y, x + w, y + h))
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"{json_path}: not COCO detection JSON ({e!r})") from None
    return [BoxedImage(images_dir / images[i], tuple(per_image[i])) for i in sorted(images, key=lambda i: images[i])]


def read_boxes_file(
    path: str | Path, images_dir: str | Path | None = None, split: str | None = None
) -> list[BoxedImage]:
    """``--boxes FILE``: COCO JSON (``.json``) or a CAVA-style CSV; image paths relative to images_dir
    when given, else to the file's folder."""
    path = Path(path)
    if path.suffix.lower() == ".json":
        return read_coco(path, images_dir or path.parent)
    return read_cava(path, split=split, images_root=images_dir)


def parse_source(spec: str) -> list[BoxedImage]:
    """``yolo:IMAGES:LABELS`` | ``cava:FOLDER[:SPLIT]`` | ``coco:FILE.json:IMAGES``."""
    kind, _, rest = spec.partition(":")
    parts = rest.split(":") if rest else []
    if kind == "yolo" and len(parts) == 2:
        return read_yolo(*parts)
    if kind == "cava" and len(parts) in (1, 2):
        return read_cava(Path(parts[0]) / "boxes.csv", split=parts[1] if len(parts) == 2 else None)
    if kind == "coco" and len(parts) == 2:
        return read_coco(*parts)
    raise ValueError(f"bad box source {spec!r}: use yolo:IMAGES:LABELS, cava:FOLDER[:SPLIT] or coco:FILE.json:IMAGES")


# ----------------------------------------------------------------------------------------- augmentation


def augment(
    image_bgr: np.ndarray,
    boxes: np.ndarray,
    size: int,
    rng: np.random.Generator,
    scale_range: tuple[float, float] = (0.6, 1.4),
    min_kept_area: float = 0.4,
    style: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Cartoon-friendly training view: (size x size x 3 RGB uint8, (K, 4) boxes).

    Scale jitter around "long side = size" (zooming in gives small faces more pixels), a random
    placement that crops or pads, horizontal flip, and colour jitter (cartoons recolour characters
    between styles and episodes). A box cut by the crop is kept, clipped, when at least
    ``min_kept_area`` of it remains; otherwise dropped. ``style`` adds ``restyle``'s drawing-style changes.
    """
    h, w = image_bgr.shape[:2]
    s = size / max(h, w) * rng.uniform(*scale_range)
    nw, nh = max(1, round(w * s)), max(1, round(h * s))
    img = cv2.resize(image_bgr, (nw, nh), interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR)
    b = boxes.astype(np.float32) * s
    ox = int(rng.integers(min(0, size - nw), max(0, size - nw) + 1))  # image's offset on the canvas
    oy = int(rng.integers(min(0, size - nh), max(0, size - nh) + 1))
    canvas = np.empty((size, size, 3), np.uint8)
    canvas[:] = PAD_RGB[::-1]  # BGR until the final flip to RGB
    sx, sy = max(0, -ox), max(0, -oy)
    dx, dy = max(0, ox), max(0, oy)
    cw, ch = min(nw - sx, size - dx), min(nh - sy, size - dy)
    canvas[dy : dy + ch, dx : dx + cw] = img[sy : sy + ch, sx : sx + cw]
    if len(b):
        b += np.asarray([ox, oy, ox, oy], np.float32)
        area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
        c = b.copy()
        c[:, [0, 2]] = c[:, [0, 2]].clip(0, size)
        c[:, [1, 3]] = c[:, [1, 3]].clip(0, size)
        kept = (c[:, 2] - c[:, 0]) * (c[:, 3] - c[:, 1])
        ok = (kept >= min_kept_area * np.maximum(area, 1e-6)) & (c[:, 2] - c[:, 0] >= 2) & (c[:, 3] - c[:, 1] >= 2)
        b = c[ok]
    if rng.random() < 0.5:
        canvas = canvas[:, ::-1]
        if len(b):
            b = np.stack([size - b[:, 2], b[:, 1], size - b[:, 0], b[:, 3]], 1)
    hsv = cv2.cvtColor(np.ascontiguousarray(canvas), cv2.COLOR_BGR2HSV).astype(np.float32)
    hsv[..., 0] = (hsv[..., 0] + rng.uniform(-5, 5)) % 180
    hsv[..., 1] *= rng.uniform(0.7, 1.3)
    hsv[..., 2] *= rng.uniform(0.7, 1.3)
    canvas = cv2.cvtColor(hsv.clip(0, 255).astype(np.uint8), cv2.COLOR_HSV2BGR)
    if style:
        canvas = restyle(canvas, rng)
    return np.ascontiguousarray(canvas[:, :, ::-1]), b.reshape(-1, 4).astype(np.float32)


def restyle(image_bgr: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Drawing-style changes a new show brings (each drawn at random): any skin or hair colour (a hue turned
    by any angle), flat shading (colours quantised), thicker or thinner outlines (dark lines eroded or
    dilated), no colour at all, and softer lines (blur)."""
    img = image_bgr
    if rng.random() < 0.3:
        hsv = cv2.cvtColor(img, cv2.COLOR_BGR2HSV)
        hsv[..., 0] = ((hsv[..., 0].astype(np.int16) + int(rng.integers(0, 180))) % 180).astype(np.uint8)
        img = cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)
    if rng.random() < 0.2:
        step = int(rng.choice([32, 48, 64]))
        img = (img // step * step + step // 2).astype(np.uint8)
    outline = rng.random()
    if outline < 0.15:
        img = cv2.erode(img, np.ones((2, 2), np.uint8))  # dark lines grow
    elif outline < 0.3:
        img = cv2.dilate(img, np.ones((2, 2), np.uint8))  # dark lines thin out
    if rng.random() < 0.1:
        img = cv2.cvtColor(cv2.cvtColor(img, cv2.COLOR_BGR2GRAY), cv2.COLOR_GRAY2BGR)
    if rng.random() < 0.1:
        img = cv2.GaussianBlur(img, (3, 3), 0)
    return np.ascontiguousarray(img)


def letterbox_with_boxes(image_bgr: np.ndarray, boxes: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    img, scale = letterbox(image_bgr, size)
    return img, boxes.astype(np.float32) * scale


def summarise(sources: Sequence[BoxedImage]) -> dict:
    return {"images": len(sources), "boxes": int(sum(len(s.boxes) for s in sources))}


class AugmentedBoxes(Dataset):
    """Item (index, seed) -> (RGB uint8 size x size x 3, (K, 4) float boxes); augmentation from the seed."""

    def __init__(self, items: Sequence[BoxedImage], size: int, augment_: bool = True, style: bool = False):
        self.items, self.size, self.augment, self.style = list(items), size, augment_, style

    def __len__(self):
        return len(self.items)

    def __getitem__(self, key):
        """A sample, or (None, path) for an unreadable image: the step goes on without it, the log names it."""
        index, seed = key
        try:
            img, boxes = self.items[index].load()
        except ValueError:
            return None, str(self.items[index].path)
        if self.augment:
            return augment(img, boxes, self.size, np.random.default_rng(seed), style=self.style)
        return letterbox_with_boxes(img, boxes, self.size)


def collate(batch):
    """-> (images, targets, paths of unreadable images); images is None when none could be read."""
    skipped = [path for img, path in batch if img is None]
    batch = [(img, boxes) for img, boxes in batch if img is not None]
    if not batch:
        return None, [], skipped
    images = to_tensor(np.stack([img for img, _ in batch]))
    targets = [{"boxes": torch.from_numpy(b), "labels": torch.zeros(len(b), dtype=torch.int64)} for _, b in batch]
    return images, targets, skipped
