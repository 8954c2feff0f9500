"""The picture check on real drawings: a copy is one picture, another drawing of the character is not."""

import cv2
import numpy as np
import pytest

from pipeline.same_picture import CropPictures, agreement, describe, same_picture
from pipeline.store import ContentStore
from tests.conftest import SHARED

HOLO = SHARED / "data" / "anime_identities" / "hololive_danbooru"
pytestmark = pytest.mark.shared_data


def drawings(identity, n):
    return [cv2.imread(str(p)) for p in sorted((HOLO / identity).glob("*.jpg"))[:n]]


def copies(image):
    h, w = image.shape[:2]
    jpeg = cv2.imdecode(cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 40])[1], cv2.IMREAD_COLOR)
    return {
        "jpeg": jpeg,
        "half": cv2.resize(image, (w // 2, h // 2), interpolation=cv2.INTER_AREA),
        "crop": image[h // 14 : h - h // 14, w // 14 : w - w // 14],
        "darker": cv2.convertScaleAbs(image, alpha=1.0, beta=-35),
        "mirror": cv2.flip(image, 1),
        "all at once": cv2.flip(cv2.resize(jpeg[h // 20 : h - h // 20, w // 20 : w - w // 20], (w // 2, h // 2)), 1),
    }


def test_every_kind_of_copy_is_the_same_picture():
    for image in drawings("gura", 3):
        original = describe(image)
        for kind, copy in copies(image).items():
            assert same_picture(original, describe(copy)), kind
            assert same_picture(describe(copy), original), kind


def test_other_drawings_of_one_character_are_not_the_same_picture():
    for identity in ("gura", "ame", "kiara"):
        pictures = [describe(im) for im in drawings(identity, 6)]
        for i, a in enumerate(pictures):
            for b in pictures[i + 1 :]:
                assert not same_picture(a, b), (identity, agreement(a, b))


def test_a_blank_or_tiny_crop_is_a_copy_of_nothing():
    blank = describe(np.full((120, 120, 3), 200, np.uint8))
    assert agreement(blank, blank) == (0, 0.0)
    tiny = describe(cv2.resize(drawings("gura", 1)[0], (8, 8)))
    assert not same_picture(tiny, describe(drawings("gura", 1)[0]))


def test_crops_of_the_content_store_are_described_by_sha_and_a_missing_one_is_no_copy(tmp_path):
    store = ContentStore(tmp_path / "store")
    image = drawings("ame", 1)[0]
    a = store.put(cv2.imencode(".jpg", image)[1].tobytes(), ".jpg")
    b = store.put(cv2.imencode(".jpg", cv2.flip(image, 1))[1].tobytes(), ".jpg")
    pictures = CropPictures(tmp_path)
    assert pictures.same(a, b)
    assert not pictures.same(a, "0" * 64) and not pictures.same(a, None)
