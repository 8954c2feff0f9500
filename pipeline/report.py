"""Run reports: the funnel table and a contact sheet of kept crops."""

from __future__ import annotations

import base64
from pathlib import Path

import cv2
import numpy as np

from pipeline.store import ContentStore

FUNNEL_ORDER = [
    "albums",
    "episodes",
    "frames",
    "stills",
    "encyclopedia_pages",
    "characters",
    "references",
    "search_pages",
    "image_urls",
    "downloads",
    "downloads_cached",
    "images_ok",
    "images_dropped",
    "images_cached",
    "faces_detected",
    "crops_kept",
    "crops_dropped",
]


def funnel_rows(counts: dict[str, int]) -> list[dict]:
    """Counts as rows {stage, count}: stages in funnel order, then each drop reason."""
    rows = [{"stage": k, "count": int(counts.get(k, 0))} for k in FUNNEL_ORDER]
    rows += [{"stage": k, "count": int(v)} for k, v in sorted(counts.items()) if k.startswith("drop.")]
    return rows


def contact_sheet(
    crop_shas: list[str], store: ContentStore, out: Path, thumb: int = 96, columns: int = 8
) -> Path | None:
    """A JPEG grid of up to `columns * 6` crops; None when there is nothing to show."""
    tiles = []
    for sha in crop_shas[: columns * 6]:
        image = cv2.imread(str(store.path_for(sha, ".jpg")))
        if image is not None:
            tiles.append(cv2.resize(image, (thumb, thumb), interpolation=cv2.INTER_AREA))
    if not tiles:
        return None
    rows = -(-len(tiles) // columns)
    sheet = np.full((rows * thumb, min(columns, len(tiles)) * thumb, 3), 255, np.uint8)
    for i, tile in enumerate(tiles):
        r, c = divmod(i, columns)
        sheet[r * thumb : (r + 1) * thumb, c * thumb : (c + 1) * thumb] = tile
    out.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(out), sheet, [cv2.IMWRITE_JPEG_QUALITY, 85])
    return out


def jpeg_data_uri(path: Path, width: int = 384, quality: int = 70) -> str:
    """An image as a small JPEG `data:` URI (at most `width` pixels wide): a web page such as the Prefect
    UI shows it, where a `file://` link is a broken image."""
    image = cv2.imread(str(path))
    if image is None:
        raise ValueError(f"not an image: {path}")
    if image.shape[1] > width:
        height = max(1, round(image.shape[0] * width / image.shape[1]))
        image = cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)
    return data_uri(cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])[1].tobytes(), "image/jpeg")


def data_uri(data: bytes, mime: str) -> str:
    """Bytes as a `data:` URI, which a page shows without a file beside it."""
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"
