"""Bad quantized checkpoints raise CheckpointError naming the file, the tensor and what was expected."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import torch
from quant_helpers import load_runner
from safetensors.torch import load_file, save_file

from neutrino.errors import CheckpointError


def edited(src: Path, dst: Path, tensors=None, config=None) -> Path:
    """A copy of checkpoint `src` with `tensors(state) -> state` and `config(cfg) -> cfg` applied."""
    shutil.copytree(src, dst)
    if tensors is not None:
        save_file(tensors(load_file(str(dst / "model.safetensors"))), str(dst / "model.safetensors"))
    if config is not None:
        cfg = json.loads((dst / "config.json").read_text())
        (dst / "config.json").write_text(json.dumps(config(cfg)))
    return dst


@pytest.fixture(scope="module")
def int4(quant_pair) -> Path:
    return quant_pair("int4-g32-asym")[0]


def test_wrong_qweight_shape(int4, tmp_path) -> None:
    name = "model.layers.1.self_attn.k_proj.qweight"
    bad = edited(int4, tmp_path / "m", tensors=lambda sd: {**sd, name: sd[name][:, :16].contiguous()})
    with pytest.raises(CheckpointError, match=re.escape(f"{bad}: tensor 'layers.1.self_attn.k_proj.qweight' "
                                                        "has shape [32, 16], expected [32, 32]")):
        load_runner(bad)


def test_wrong_qweight_dtype(int4, tmp_path) -> None:
    name = "model.layers.0.mlp.down_proj.qweight"
    bad = edited(int4, tmp_path / "m", tensors=lambda sd: {**sd, name: sd[name].to(torch.int32)})
    with pytest.raises(CheckpointError, match=r"down_proj.qweight' has dtype torch.int32, expected torch.uint8"):
        load_runner(bad)


def test_missing_scales(int4, tmp_path) -> None:
    bad = edited(int4, tmp_path / "m", tensors=lambda sd: {k: v for k, v in sd.items()
                                                          if k != "model.layers.0.self_attn.v_proj.scales"})
    with pytest.raises(CheckpointError, match=re.escape(f"{bad}: missing tensors (name [shape]) "
                                                        "['layers.0.self_attn.v_proj.scales [32, 2]']")):
        load_runner(bad)


def test_group_size_must_divide_in_features(int4, tmp_path) -> None:
    bad = edited(int4, tmp_path / "m", config=lambda c: {**c, "quantization_config": {
        **c["quantization_config"], "group_size": 48}})
    with pytest.raises(CheckpointError, match=r"quantization_config.group_size 48 does not divide in_features 64"):
        load_runner(bad)


def test_unknown_quant_method(int4, tmp_path) -> None:
    bad = edited(int4, tmp_path / "m", config=lambda c: {**c, "quantization_config": {
        **c["quantization_config"], "quant_method": "awq"}})
    with pytest.raises(CheckpointError, match=re.escape(f"{bad}/config.json: quantization_config.quant_method "
                                                        "'awq' is not supported")):
        load_runner(bad)


def test_fused_layer_parts_must_share_a_format(int4, tmp_path) -> None:
    bad = edited(int4, tmp_path / "m", config=lambda c: {**c, "quantization_config": {
        **c["quantization_config"], "ignore": ["lm_head", "layers.0.self_attn.k_proj"]}})
    with pytest.raises(CheckpointError, match=r"are fused into model.layers.0.self_attn.qkv_proj and must share"):
        load_runner(bad)


def test_dense_weight_where_codes_are_expected(int4, tmp_path) -> None:
    name = "model.layers.0.mlp.up_proj"
    bad = edited(int4, tmp_path / "m", tensors=lambda sd: {**{k: v for k, v in sd.items()
                                                               if not k.startswith(name)},
                                                            f"{name}.weight": torch.zeros(96, 64)})
    with pytest.raises(CheckpointError, match=r"unexpected tensor 'layers.0.mlp.up_proj.weight'"):
        load_runner(bad)
