"""The near-duplicate benchmark on a few real crops of a shared source: both rules scored side by side."""

from __future__ import annotations

import argparse
import importlib

import pytest

from models.embedder import load_embedder
from pipeline.identity.embedding import DEFAULT_WEIGHTS

bench = importlib.import_module("benchmarks.dedup_quality")


@pytest.mark.shared_data
@pytest.mark.skipif(not DEFAULT_WEIGHTS.exists(), reason="no shipped embedder weights")
def test_copies_of_real_crops_are_found_by_the_picture_rule():
    args = argparse.Namespace(
        originals=24,
        copied=6,
        seed=0,
        embedding_only=[0.98],
        candidates=[0.8],
        min_keypoints=[12],
        min_correlation=[0.8],
    )
    model, _ = load_embedder(DEFAULT_WEIGHTS)
    rows = bench.run_source("hololive_danbooru", model, args)
    assert [r["rule"] for r in rows] == ["embedding>0.98", "picture>0.8,k=12,r=0.8"]
    picture = rows[1]
    assert set(picture["recall_by_kind"]) == set(bench.KINDS)
    assert picture["recall"] >= 0.9 and picture["pairs_checked"] > 0
    assert picture["removed"] >= 27  # 30 copies, nearly all of them
