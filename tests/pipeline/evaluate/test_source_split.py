"""The source split refuses every way a test source can leak into training."""

from __future__ import annotations

import cv2
import pytest

from pipeline.evaluate.source_split import Source, SourceSplit, picture
from tests.conftest import CAVA_DEXTER

SCOOBY = CAVA_DEXTER.parent / "scooby_doo"


def frames(folder, split, n):
    return tuple(sorted((folder / "images" / split).glob("*.jpg"))[:n])


def test_a_source_in_two_roles_is_refused():
    split = SourceSplit([Source("dexter", "train"), Source("dexter", "test")])
    with pytest.raises(ValueError, match="source dexter is in"):
        split.check(images=False)


def test_two_sources_from_one_repository_in_two_roles_are_refused():
    split = SourceSplit([Source("show_a", "train", "someone/cartoons"), Source("show_b", "tune", "Someone/Cartoons")])
    with pytest.raises(ValueError, match="repository someone/cartoons is behind"):
        split.check(images=False)


def test_a_reserved_repository_is_refused_in_any_role():
    split = SourceSplit([Source("louie", "test", "CosteaRazvan/LifeWithLouie")])
    with pytest.raises(ValueError, match="reserved for independent evaluation"):
        split.check(images=False)


@pytest.mark.shared_data
def test_a_clean_split_of_two_real_shows_passes():
    SourceSplit(
        [
            Source("dexter", "train", images=frames(CAVA_DEXTER, "val", 20)),
            Source("scooby", "test", images=frames(SCOOBY, "val", 20)),
        ]
    ).check()


@pytest.mark.shared_data
def test_a_re_encoded_smaller_copy_in_another_role_is_refused(tmp_path):
    original = frames(CAVA_DEXTER, "val", 1)[0]
    copy = tmp_path / "copy.jpg"
    img = cv2.imread(str(original))
    cv2.imwrite(str(copy), cv2.resize(img, (240, 180), interpolation=cv2.INTER_AREA), [cv2.IMWRITE_JPEG_QUALITY, 40])
    assert picture(copy) is not None
    split = SourceSplit(
        [Source("dexter", "train", images=frames(CAVA_DEXTER, "val", 10)), Source("other", "test", images=(copy,))]
    )
    with pytest.raises(ValueError, match="is the picture"):
        split.check()


@pytest.mark.shared_data
def test_the_same_file_in_two_roles_is_refused(tmp_path):
    original = frames(SCOOBY, "val", 1)[0]
    copy = tmp_path / "renamed.jpg"
    copy.write_bytes(original.read_bytes())
    split = SourceSplit([Source("scooby", "tune", images=(original,)), Source("other", "test", images=(copy,))])
    with pytest.raises(ValueError, match="is the file"):
        split.check()
