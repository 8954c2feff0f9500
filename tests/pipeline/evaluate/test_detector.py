"""``toonface eval-detector`` run in-process: the pipeline's detector scored COCO-style on real boxed frames."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from pipeline.evaluate.detector import main
from tests.conftest import CAVA_DEXTER


@pytest.mark.shared_data
def test_animeface_on_a_few_real_frames(tmp_path, capsys):
    # 5 of the 200 val frames (their rows of the real boxes.csv): animeface takes ~0.25 s an image
    boxes = pd.read_csv(CAVA_DEXTER / "boxes.csv").query("split == 'val'")
    boxes = boxes[boxes["image"].isin(sorted(boxes["image"].unique())[::40])]
    boxes.to_csv(tmp_path / "boxes.csv", index=False)
    assert (
        main(
            [
                "--images",
                str(CAVA_DEXTER),
                "--boxes",
                str(tmp_path / "boxes.csv"),
                "--split",
                "val",
                "--detector",
                "animeface",
            ]
        )
        == 0
    )
    r = json.loads(capsys.readouterr().out)
    assert r["detector"] == "animeface" and r["model_id"].startswith("animeface") and r["precision"] is None
    assert r["images"] == 5 and r["faces"] == len(boxes)
    assert 0 <= r["ap"] <= r["ap50"] <= 1 and set(r["by_area"]) == {"small", "medium", "large", "gate"}


def test_a_missing_boxes_file_is_refused(tmp_path, capsys):
    assert main(["--images", str(tmp_path), "--boxes", str(tmp_path / "nope.csv"), "--detector", "animeface"]) == 2
    assert "nope.csv" in capsys.readouterr().err
