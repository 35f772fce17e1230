"""QuantConfig: the `quantization_config` contract between `neutrino compress` and the engine."""

from __future__ import annotations

import pytest

from neutrino.errors import CheckpointError
from neutrino.layers.quant.config import QuantConfig


def test_round_trip_and_ignore_matching():
    cfg = QuantConfig(bits=4, group_size=128, symmetric=False, method="gptq", ignore=("lm_head", "down_proj"))
    d = cfg.to_dict()
    assert d["quant_method"] == "neutrino" and d["ignore"] == ["lm_head", "down_proj"]
    assert QuantConfig.from_dict(d) == cfg
    assert cfg.is_ignored("lm_head") and cfg.is_ignored("model.layers.3.mlp.down_proj")
    assert not cfg.is_ignored("model.layers.3.mlp.up_proj")


@pytest.mark.parametrize(
    "bad,match",
    [
        ({"quant_method": "gptq", "bits": 4}, "quant_method 'gptq'"),
        ({"quant_method": "neutrino", "bits": 5}, "bits must be 3, 4 or 8"),
        ({"quant_method": "neutrino", "bits": 4, "group_size": 0}, "group_size"),
        ({"quant_method": "neutrino", "bits": 4, "scheme": "w8a8"}, "w8a8 needs bits 8"),
        ({"quant_method": "neutrino", "bits": 8, "colour": "red"}, r"unknown quantization_config keys \['colour'\]"),
        ({"quant_method": "neutrino"}, "no 'bits'"),
    ],
)
def test_bad_configs_name_the_key(bad, match):
    with pytest.raises(CheckpointError, match=match):
        QuantConfig.from_dict(bad, source="m/config.json")
