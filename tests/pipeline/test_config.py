"""Settings from `--set KEY=VALUE` and from deployment parameters: typed, and wrong ones refused."""
import pytest

from pipeline.cli import _config_overrides
from pipeline.config import IngestConfig


def test_set_values_are_json_typed():
    cfg = IngestConfig.from_dict(_config_overrides(["verified_references=false", "prelabel_min_margin=0.2",
                                                    "detector=animeface"]))
    assert cfg.verified_references is False and cfg.prelabel_min_margin == 0.2 and cfg.detector == "animeface"
    assert IngestConfig().verified_references is True


@pytest.mark.parametrize("value", ["False", "no", 0, None])
def test_a_switch_takes_true_or_false_only(value):
    # `--set verified_references=False` is the string "False", which Python would read as true
    with pytest.raises(ValueError, match="verified_references must be true or false"):
        IngestConfig.from_dict({"verified_references": value})


def test_unknown_keys_are_refused_with_the_known_ones():
    with pytest.raises(ValueError, match="unknown config keys: prelabel_treshold"):
        IngestConfig.from_dict({"prelabel_treshold": 0.7})
