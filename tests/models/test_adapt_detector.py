"""Adapting the shipped detector to a new drawing style from a handful of real frames."""

from __future__ import annotations

import dataclasses

import cv2
import pytest

from models.adapt_detector import MAX_STEPS, MIN_STEPS, adapt, choose_frames, main, steps_for
from models.det_data import parse_source
from models.det_metrics import evaluate
from pipeline.evaluate.detector import detector_fn
from tests.conftest import SHARED

SCOOBY = SHARED / "data" / "cava" / "scooby_doo"
SIZE = 256


def negatives(items, folder):
    """The frames as a show drawn in inverted colours: a style the shipped detector never saw."""
    folder.mkdir(exist_ok=True)
    out = []
    for item in items:
        path = folder / item.path.name
        cv2.imwrite(str(path), 255 - cv2.imread(str(item.path)))
        out.append(dataclasses.replace(item, path=path))
    return out


def ap50(weights, frames) -> float:
    detect, threshold, _ = detector_fn("retinanet", weights, size=SIZE)
    return evaluate(detect, frames, threshold, 8)["ap50"]


@pytest.mark.shared_data
def test_adapting_on_a_handful_of_frames_raises_ap_on_the_shows_other_frames(tmp_path):
    train = negatives(choose_frames(parse_source(f"cava:{SCOOBY}:train"), 16, seed=0), tmp_path / "train")
    held_out = negatives(parse_source(f"cava:{SCOOBY}:val")[:40], tmp_path / "val")
    before = ap50(None, held_out)
    adapted = tmp_path / "adapted.safetensors"
    result = adapt(train, out=adapted, size=SIZE, steps=30, device="cpu", log=lambda m: None)
    assert result["steps"] == 30
    after = ap50(str(adapted), held_out)
    assert after > before + 0.1, (before, after)


def test_steps_follow_the_number_of_frames_within_bounds():
    assert steps_for(8) == MIN_STEPS and steps_for(100) == 100 and steps_for(5000) == MAX_STEPS


@pytest.mark.shared_data
def test_frames_are_a_seeded_choice_and_too_few_or_too_many_are_refused(capsys):
    pool = parse_source(f"cava:{SCOOBY}:val")
    assert choose_frames(pool, 20, seed=1) == choose_frames(pool, 20, seed=1) != choose_frames(pool, 20, seed=2)
    with pytest.raises(ValueError, match="at least 8"):
        choose_frames(pool, 5, seed=0)
    assert main(["--train", f"cava:{SCOOBY}:val", "--frames", "100000", "--out", "unused.safetensors"]) == 2
    assert "only" in capsys.readouterr().err
