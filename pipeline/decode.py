"""Validate and decode image bytes. Bad input becomes a drop reason, never an exception.

Drop reasons (stable strings, used in the manifest's `drop_reason` column):
  empty_file, file_too_large, not_an_image, decompression_bomb, truncated, corrupt
"""

from __future__ import annotations

import dataclasses
import io
import warnings

import cv2
import numpy as np
from PIL import Image

# Magic bytes of the formats we accept, and the extension we store them under.
_MAGIC = [
    (b"\xff\xd8\xff", "jpeg"),
    (b"\x89PNG\r\n\x1a\n", "png"),
    (b"GIF87a", "gif"),
    (b"GIF89a", "gif"),
    (b"BM", "bmp"),
    (b"II*\x00", "tiff"),
    (b"MM\x00*", "tiff"),
]
EXTENSIONS = {"jpeg": ".jpg", "png": ".png", "gif": ".gif", "bmp": ".bmp", "tiff": ".tif", "webp": ".webp"}


def sniff_format(data: bytes) -> str | None:
    """Image format from the first bytes, whatever the file name or Content-Type claims."""
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    for magic, fmt in _MAGIC:
        if data.startswith(magic):
            return fmt
    return None


@dataclasses.dataclass
class Decoded:
    """An image as a BGR uint8 array, or the reason it could not be decoded."""

    image: np.ndarray | None
    fmt: str | None
    width: int = 0
    height: int = 0
    drop_reason: str | None = None
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.drop_reason is None


def _dropped(reason: str, fmt: str | None = None, detail: str = "", w: int = 0, h: int = 0) -> Decoded:
    return Decoded(None, fmt, w, h, reason, detail)


def _is_truncated(data: bytes, fmt: str) -> bool:
    # OpenCV decodes a cut JPEG/PNG with a grey bottom and only warns: check the end markers.
    if fmt == "jpeg":
        return b"\xff\xd9" not in data[-4096:]
    if fmt == "png":
        return b"IEND" not in data[-64:]
    return False


def decode_image(data: bytes, max_pixels: int = 50_000_000, max_bytes: int = 64 << 20) -> Decoded:
    if not data:
        return _dropped("empty_file")
    if len(data) > max_bytes:
        return _dropped("file_too_large", detail=f"{len(data)} bytes > {max_bytes}")
    fmt = sniff_format(data)
    if fmt is None:
        return _dropped("not_an_image", detail=f"starts with {data[:8]!r}")
    # Read only the header first, so a decompression bomb is refused before any pixel is decoded.
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as header:
                width, height = header.size
    except Image.DecompressionBombError as exc:
        return _dropped("decompression_bomb", fmt, str(exc))
    except Exception as exc:  # PIL raises many types on broken headers
        return _dropped("corrupt", fmt, f"header: {exc}")
    if width * height > max_pixels:
        return _dropped("decompression_bomb", fmt, f"{width}x{height} > {max_pixels} pixels", width, height)
    if _is_truncated(data, fmt):
        return _dropped("truncated", fmt, "end-of-image marker missing", width, height)
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if image is None:  # formats OpenCV lacks (GIF, some TIFF): PIL, first frame
        try:
            with Image.open(io.BytesIO(data)) as im:
                im.load()
                image = cv2.cvtColor(np.asarray(im.convert("RGB")), cv2.COLOR_RGB2BGR)
        except OSError as exc:
            reason = "truncated" if "truncated" in str(exc).lower() else "corrupt"
            return _dropped(reason, fmt, str(exc), width, height)
        except Exception as exc:
            return _dropped("corrupt", fmt, str(exc), width, height)
    h, w = image.shape[:2]
    return Decoded(image, fmt, w, h)
