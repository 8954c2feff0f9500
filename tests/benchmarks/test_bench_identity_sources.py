"""The embedder benchmark by source, left-source-out: an embedder trained a few steps on one shared source
is scored on another it never saw, beside the shipped one, in one run on the CPU."""

from __future__ import annotations

import importlib
import json

import pytest

from models.identity_data import identity_folders
from models.train_embedder import train
from pipeline.identity.embedding import DEFAULT_WEIGHTS
from tests.conftest import SHARED

bench = importlib.import_module("benchmarks.bench_identity_sources")


@pytest.mark.shared_data
@pytest.mark.skipif(not DEFAULT_WEIGHTS.exists(), reason="no shipped embedder weights")
def test_an_embedder_trained_on_one_source_is_scored_on_another_beside_the_shipped_one(tmp_path, capsys):
    hololive = identity_folders(SHARED / "data" / "anime_identities" / "hololive_danbooru")[::6]
    weights = tmp_path / "left_out.safetensors"
    train(hololive, epochs=1, batch_size=16, backbone="resnet18", out=weights, max_steps=3, log=lambda s: None)
    argv = ["--source", "scooby_doo", "--weights", str(DEFAULT_WEIGHTS), "--weights", str(weights)]
    assert bench.main([*argv, "--draws", "2", "--per-identity", "12"]) == 0
    rows = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert [r["source"] for r in rows] == ["scooby_doo", "scooby_doo"]
    assert len({r["model_id"] for r in rows}) == 2
    for row in rows:
        assert row["identities"] == 4 and row["faces"] <= 4 * 12 + 12  # at most 12 'unknown' faces too
        assert 0 <= row["rank1"] <= 1 and 0 <= row["auc"] <= 1 and row["embeddings_per_s"] > 0
