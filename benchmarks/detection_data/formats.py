"""Readers of the box formats public repositories use, each giving ``Box`` rows in pixels.

A part of a source (``sources.json``) names its ``format``, its ``root`` folder in the repository and its
``split``; format-specific keys are documented on each reader. An image with no face gets one row with
``has_box`` False, so it stays in the set as a negative.
"""

from __future__ import annotations

import dataclasses
import json
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import cv2

IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}


@dataclasses.dataclass(frozen=True)
class Box:
    split: str
    image: str  # path in the rebuilt folder: images/<split>/<prefix><file name>
    source_path: Path  # the file in the checkout
    x1: float = 0.0
    y1: float = 0.0
    x2: float = 0.0
    y2: float = 0.0
    label: str = "face"
    has_box: bool = True


def _target(part: dict, path: Path) -> str:
    return f"images/{part['split']}/{part.get('prefix', '')}{path.name}"


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_EXTS)


def read_cava_txt(checkout: Path, part: dict) -> Iterator[Box]:
    """``annotations``: a text file of ``image x1 y1 x2 y2 [label]`` lines, image names relative to
    ``root`` (CAVA course format). Images of ``root`` without a line are negatives."""
    root = checkout / part["root"]
    named = set()
    for line in (checkout / part["annotations"]).read_text().splitlines():
        fields = line.split()
        if len(fields) < 5:
            continue
        path = root / fields[0]
        x1, y1, x2, y2 = (float(v) for v in fields[1:5])
        named.add(path)
        yield Box(part["split"], _target(part, path), path, x1, y1, x2, y2, fields[5] if len(fields) > 5 else "face")
    for path in _images(root):
        if path not in named:
            yield Box(part["split"], _target(part, path), path, has_box=False)


def read_yolo(checkout: Path, part: dict) -> Iterator[Box]:
    """``labels``: folder of ``<image stem>.txt`` with ``class cx cy w h`` (normalised); ``classes``: the
    class numbers that are faces (default: all)."""
    root, labels = checkout / part["root"], checkout / part["labels"]
    faces = set(part.get("classes", []))
    for path in _images(root):
        label = labels / path.relative_to(root).with_suffix(".txt")
        rows = [ln.split() for ln in label.read_text().splitlines()] if label.exists() else []
        rows = [r for r in rows if len(r) >= 5 and (not faces or int(float(r[0])) in faces)]
        if not rows:
            yield Box(part["split"], _target(part, path), path, has_box=False)
            continue
        h, w = cv2.imread(str(path), cv2.IMREAD_UNCHANGED).shape[:2]
        for r in rows:
            cx, cy, bw, bh = (float(v) for v in r[1:5])
            yield Box(
                part["split"],
                _target(part, path),
                path,
                (cx - bw / 2) * w,
                (cy - bh / 2) * h,
                (cx + bw / 2) * w,
                (cy + bh / 2) * h,
            )


def read_voc(checkout: Path, part: dict) -> Iterator[Box]:
    """``annotations``: folder of Pascal VOC xml, one per image (``filename`` relative to ``root``);
    ``classes``: the object names that are faces (default: all)."""
    root = checkout / part["root"]
    faces = set(part.get("classes", []))
    for xml in sorted((checkout / part["annotations"]).glob("*.xml")):
        doc = ET.parse(xml).getroot()
        path = root / doc.findtext("filename", "").strip()
        if not path.exists():
            path = next((p for p in _images(root) if p.stem == xml.stem), path)
        if not path.exists():
            continue
        objects = [o for o in doc.iter("object") if not faces or o.findtext("name", "").strip() in faces]
        if not objects:
            yield Box(part["split"], _target(part, path), path, has_box=False)
        for o in objects:
            b = o.find("bndbox")
            x1, y1, x2, y2 = (float(b.findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax"))
            yield Box(part["split"], _target(part, path), path, x1, y1, x2, y2, o.findtext("name", "face").strip())


def read_coco(checkout: Path, part: dict) -> Iterator[Box]:
    """``json``: COCO detection file; ``classes``: category names that are faces (default: all)."""
    root = checkout / part["root"]
    doc = json.loads((checkout / part["json"]).read_text())
    names = {c["id"]: c["name"] for c in doc.get("categories", [])}
    faces = set(part.get("classes", []))
    per_image: dict[int, list] = {im["id"]: [] for im in doc["images"]}
    for a in doc.get("annotations", []):
        if not a.get("iscrowd") and (not faces or names.get(a["category_id"]) in faces):
            per_image[a["image_id"]].append(a["bbox"])
    for im in doc["images"]:
        path = root / im["file_name"]
        if not path.exists():
            continue
        if not per_image[im["id"]]:
            yield Box(part["split"], _target(part, path), path, has_box=False)
        for x, y, w, h in per_image[im["id"]]:
            yield Box(part["split"], _target(part, path), path, x, y, x + w, y + h)


def read_landmarks(checkout: Path, part: dict) -> Iterator[Box]:
    """One ``<image stem>.txt`` of ``x y`` landmark lines (pixels) per image of ``root``, one face each.
    The box is the points' extent grown upwards by ``forehead`` of its height (68-point sets stop at the
    brows), clipped to the image."""
    root = checkout / part["root"]
    grow = float(part.get("forehead", 0.3))
    for path in _images(root):
        label = path.with_suffix(".txt")
        points = (
            [ln.split()[:2] for ln in label.read_text().splitlines() if len(ln.split()) >= 2] if label.exists() else []
        )
        if not points:
            yield Box(part["split"], _target(part, path), path, has_box=False)
            continue
        xs, ys = [float(p[0]) for p in points], [float(p[1]) for p in points]
        top = max(0.0, min(ys) - grow * (max(ys) - min(ys)))
        yield Box(part["split"], _target(part, path), path, min(xs), top, max(xs), max(ys))


READERS = {
    "cava_txt": read_cava_txt,
    "yolo": read_yolo,
    "voc": read_voc,
    "coco": read_coco,
    "landmarks": read_landmarks,
}
