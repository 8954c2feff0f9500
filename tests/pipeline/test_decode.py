import struct
import zlib

import cv2
import pytest

from pipeline.decode import decode_image, sniff_format
from tests.conftest import CAVA_DEXTER

REAL_JPEG = (sorted((CAVA_DEXTER / "images" / "val").glob("*.jpg")) or [None])[0]  # None: no ../shared, tests skip


def png_claiming(width: int, height: int) -> bytes:
    """A well-formed PNG header announcing a huge picture (a decompression bomb's signature)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")
    )


@pytest.mark.shared_data
def test_real_jpeg_decodes():
    decoded = decode_image(REAL_JPEG.read_bytes())
    assert decoded.ok and decoded.fmt == "jpeg"
    assert decoded.image.shape == (360, 480, 3)


@pytest.mark.shared_data
def test_png_and_webp_decode():
    image = cv2.imread(str(REAL_JPEG))
    for ext, fmt in [(".png", "png"), (".webp", "webp")]:
        data = cv2.imencode(ext, image)[1].tobytes()
        decoded = decode_image(data)
        assert decoded.ok and decoded.fmt == fmt and decoded.width == 480


@pytest.mark.shared_data
@pytest.mark.parametrize(
    "make, reason",
    [
        (lambda b: b"", "empty_file"),
        (lambda b: b[: len(b) // 2], "truncated"),
        (lambda b: b"<html><body>404 not found</body></html>", "not_an_image"),
        (lambda b: b[:3] + bytes(range(256)) * 40, "corrupt"),  # JPEG magic, garbage header
        (lambda b: b[:3] + bytes(range(256)) * 40 + b"\xff\xd9", "corrupt"),
        (lambda b: png_claiming(30000, 30000), "decompression_bomb"),
    ],
)
def test_bad_bytes_become_a_drop_reason_not_a_crash(make, reason):
    decoded = decode_image(make(REAL_JPEG.read_bytes()))
    assert not decoded.ok and decoded.image is None
    assert decoded.drop_reason == reason


@pytest.mark.shared_data
def test_limits_are_settings():
    data = REAL_JPEG.read_bytes()
    assert decode_image(data, max_pixels=480 * 360 - 1).drop_reason == "decompression_bomb"
    assert decode_image(data, max_bytes=len(data) - 1).drop_reason == "file_too_large"


def test_format_comes_from_magic_bytes_not_names():
    assert sniff_format(b"\xff\xd8\xff\xe0rest") == "jpeg"
    assert sniff_format(b"RIFF\x00\x00\x00\x00WEBPVP8 ") == "webp"
    assert sniff_format(b"<!DOCTYPE html>") is None
