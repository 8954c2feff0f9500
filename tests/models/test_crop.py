import numpy as np
import pytest

from models.crop import cut, enlarged_box


def test_rate_one_doubles_width_and_height_around_the_centre():
    box = enlarged_box((100, 100, 140, 160), 1000, 1000, enlarge_rate=1.0)
    assert (box.x1, box.y1, box.x2, box.y2, box.clipped) == (80, 70, 160, 190, False)
    # the face spans half of the crop each way
    assert (140 - 100) / box.width == 0.5 and (160 - 100) / box.height == 0.5


@pytest.mark.parametrize(
    "rate, expected", [(0.0, (100, 100, 140, 160)), (0.2, (96, 94, 144, 166)), (0.6, (88, 82, 152, 178))]
)
def test_other_paper_rates(rate, expected):
    box = enlarged_box((100, 100, 140, 160), 1000, 1000, rate)
    assert (box.x1, box.y1, box.x2, box.y2) == expected


def test_fractional_boxes_round_outwards():
    box = enlarged_box((10.5, 10.5, 20.25, 20.25), 100, 100, 1.0)
    assert (box.x1, box.y1, box.x2, box.y2) == (5, 5, 26, 26)


def test_window_is_clipped_at_every_border_and_flagged():
    top_left = enlarged_box((0, 0, 50, 50), 200, 100, 1.0)
    assert (top_left.x1, top_left.y1, top_left.x2, top_left.y2, top_left.clipped) == (0, 0, 75, 75, True)
    bottom_right = enlarged_box((160, 60, 200, 100), 200, 100, 1.0)
    assert (bottom_right.x1, bottom_right.y1, bottom_right.x2, bottom_right.y2) == (140, 40, 200, 100)
    assert bottom_right.clipped
    # a face larger than the image: the crop is the whole image
    whole = enlarged_box((10, 10, 190, 90), 200, 100, 1.0)
    assert (whole.x1, whole.y1, whole.x2, whole.y2) == (0, 0, 200, 100)


def test_cut_returns_exactly_the_window():
    image = np.arange(100 * 200 * 3, dtype=np.uint32).reshape(100, 200, 3).astype(np.uint8)
    box = enlarged_box((160, 60, 200, 100), 200, 100, 1.0)
    crop = cut(image, box)
    assert crop.shape == (60, 60, 3)
    assert np.array_equal(crop, image[40:100, 140:200])
