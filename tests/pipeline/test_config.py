"""Settings: one frozen record per stage, written flat for users, keyed by the hash of the whole record."""

import dataclasses
import hashlib
import json

import pytest

from pipeline.config import FrameSettings, FunnelSettings, IngestConfig, settings_hash
from toonface.cli import _config_overrides


def test_set_values_are_json_typed_and_land_in_their_stage_record():
    cfg = IngestConfig.from_dict(
        _config_overrides(
            [
                "verified_references=false",
                "prelabel_min_margin=0.2",
                "detector=animeface",
                'web_allow_private_hosts=["wiki.test"]',
            ]
        )
    )
    assert cfg.identity.verified_references is False and cfg.identity.prelabel_min_margin == 0.2
    assert cfg.funnel.detector == "animeface" and cfg.web.web_allow_private_hosts == ("wiki.test",)
    assert IngestConfig().identity.verified_references is True


@pytest.mark.parametrize("value", ["False", "no", 0, None])
def test_a_switch_takes_true_or_false_only(value):
    # `--set verified_references=False` is the string "False", which Python would read as true
    with pytest.raises(ValueError, match="verified_references must be true or false"):
        IngestConfig.from_dict({"verified_references": value})


def test_unknown_keys_are_refused_with_the_known_ones():
    with pytest.raises(ValueError, match="unknown config keys: prelabel_treshold"):
        IngestConfig.from_dict({"prelabel_treshold": 0.7})


def test_records_are_frozen_and_keyword_only():
    with pytest.raises(dataclasses.FrozenInstanceError):
        FunnelSettings().enlarge_rate = 2.0
    with pytest.raises(TypeError):
        FunnelSettings("animeface")


def test_the_flat_form_round_trips_and_is_what_manifests_store():
    cfg = IngestConfig.from_dict({"enlarge_rate": 0.6, "frames_per_second": 2.0, "sample_seed": 3})
    flat = cfg.to_dict()
    assert flat["enlarge_rate"] == 0.6 and "funnel" not in flat
    assert IngestConfig.from_dict(json.loads(json.dumps(flat))) == cfg


def test_every_setting_of_a_record_changes_its_key():
    # no hand-kept field list: a setting added to a record is part of its cache key
    for record in (FunnelSettings(), FrameSettings()):
        for field in dataclasses.fields(record):
            value = getattr(record, field.name)
            other = value + 1 if isinstance(value, (int, float)) else f"{value}-other"
            assert settings_hash(dataclasses.replace(record, **{field.name: other})) != settings_hash(record)


def test_keys_are_those_of_earlier_versions_so_their_caches_and_face_ids_stay_valid():
    # the hashes the funnel and frame caches (and every face's config_hash) had before the records
    def old_hash(fields: dict) -> str:
        return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:16]

    funnel = {
        "detector": "retinanet",
        "min_detector_score": 0.0,
        "enlarge_rate": 1.0,
        "min_sharpness": 30.0,
        "min_crop_side": 100,
        "crop_jpeg_quality": 95,
        "max_image_pixels": 50_000_000,
        "max_image_bytes": 64 * 1024 * 1024,
    }
    assert settings_hash(FunnelSettings()) == old_hash(funnel)
    assert settings_hash(FrameSettings()) == old_hash({"frames_per_second": 1.0, "frame_jpeg_quality": 95})
