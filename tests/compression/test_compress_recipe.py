"""Compression recipes (validation, YAML round trip, flags over a file) and calibration batches."""

from __future__ import annotations

import argparse

import pytest

from neutrino.compression.calibration import calibration_batch, eval_segments, windows
from neutrino.compression.recipe import PruneRecipe, QuantizeRecipe, Recipe
from neutrino.errors import ConfigError, InvalidParameterError


def test_defaults_resolve_per_method() -> None:
    assert QuantizeRecipe("gptq").resolved().bits == 4 and QuantizeRecipe("gptq").resolved().group_size == 128
    sq = QuantizeRecipe("smoothquant").resolved()
    assert (sq.bits, sq.group_size, sq.symmetric) == (8, -1, True)
    assert QuantizeRecipe("rtn", bits=8).resolved().group_size == -1
    assert PruneRecipe("wanda", pattern="2:4").target() == 0.5
    assert PruneRecipe("wanda").target() == 0.5


@pytest.mark.parametrize(("data", "key"), [
    ({"quantise": {"method": "rtn"}}, "quantise"),
    ({"quantize": {"method": "rtn", "bitz": 4}}, "bitz"),
    ({"prune": {"method": "wanda", "sparsity": 0.5, "ratio": 1}}, "ratio"),
    ({"quantize": {"method": "rtn"}, "calibration": {"n": 4}}, "n"),
])
def test_unknown_keys_are_named_with_the_valid_ones(data: dict, key: str) -> None:
    with pytest.raises(ConfigError, match=rf"unknown key '{key}'; valid keys: .*"):
        Recipe.from_dict(data)


@pytest.mark.parametrize(("data", "param"), [
    ({"quantize": {"method": "rtn", "bits": 5}}, "quantize.bits"),
    ({"quantize": {"method": "rtn", "bits": 2}}, "quantize.bits"),
    ({"quantize": {"method": "rtn", "group_size": 0}}, "quantize.group_size"),
    ({"quantize": {"method": "rtn", "group_size": 1}}, "quantize.group_size"),
    ({"quantize": {"method": "lloyd"}}, "quantize.method"),
    ({"quantize": {"method": "smoothquant", "bits": 4}}, "quantize.method"),
    ({"quantize": {"method": "gptq", "damp": 0}}, "quantize.damp"),
    ({"prune": {"method": "wanda", "sparsity": 1.0}}, "prune.sparsity"),
    ({"prune": {"method": "wanda", "sparsity": -0.1}}, "prune.sparsity"),
    ({"prune": {"method": "wanda", "pattern": "4:2"}}, "prune.pattern"),
    ({"prune": {"method": "wanda", "pattern": "2-4"}}, "prune.pattern"),
    ({"prune": {"method": "wanda", "pattern": "2:4", "sparsity": 0.3}}, "prune.sparsity"),
    ({"prune": {"method": "obs"}}, "prune.method"),
    ({"quantize": {"method": "rtn"}, "calibration": {"samples": 0}}, "calibration.samples"),
    ({"quantize": {"method": "rtn"}, "skip": "lm_head"}, "skip"),
    ({}, "recipe"),
])
def test_bad_values_name_the_parameter(data: dict, param: str) -> None:
    with pytest.raises(InvalidParameterError) as info:
        Recipe.from_dict(data)
    assert info.value.param == param


def test_missing_method_and_bad_yaml(tmp_path) -> None:
    with pytest.raises(ConfigError, match="'method' is required"):
        Recipe.from_dict({"quantize": {"bits": 4}})
    bad = tmp_path / "r.yaml"
    bad.write_text("quantize: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        Recipe.from_yaml(bad)
    with pytest.raises(ConfigError, match="cannot read"):
        Recipe.from_yaml(tmp_path / "missing.yaml")


def test_yaml_round_trip(tmp_path) -> None:
    recipe = Recipe(QuantizeRecipe("gptq", bits=3, group_size=64, act_order=True),
                    PruneRecipe("sparsegpt", pattern="2:4"), skip=("lm_head", "mlp.down_proj")).validate()
    path = tmp_path / "recipe.yaml"
    path.write_text(recipe.to_yaml() + "produced: {note: ignored}\n")
    again = Recipe.from_yaml(path)
    assert again.to_dict() == recipe.to_dict()
    assert again.prune.nm() == (2, 4) and again.quantize.resolved().bits == 3


def _ns(**kw) -> argparse.Namespace:
    base = dict(recipe=None, method=None, bits=None, group_size=None, asym=None, damp=None, act_order=None, mse=None,
                sink_weight=None,
                alpha=None, skip=None, prune=None, sparsity=None, pattern=None, calib_file=None,
                calib_samples=None, calib_len=None)
    return argparse.Namespace(**{**base, **kw})


def test_flags_override_the_recipe_file(tmp_path) -> None:
    from neutrino.cli.compress import recipe_from_args

    path = tmp_path / "r.yaml"
    path.write_text("quantize: {method: gptq, bits: 4, group_size: 64}\ncalibration: {samples: 16}\n")
    r = recipe_from_args(_ns(recipe=str(path), bits=3, asym=True, prune="wanda", sparsity=0.25, skip=[]))
    assert (r.quantize.method, r.quantize.bits, r.quantize.group_size, r.quantize.symmetric) == ("gptq", 3, 64, False)
    assert (r.prune.method, r.prune.target(), r.calibration.samples, r.skip) == ("wanda", 0.25, 16, ())
    assert recipe_from_args(_ns(bits=8)).quantize.method == "rtn"
    with pytest.raises(InvalidParameterError, match="--prune"):
        recipe_from_args(_ns(sparsity=0.5))


@pytest.fixture(scope="module")
def tokenizer(smollm2_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(smollm2_dir)


def test_calibration_errors(tokenizer, tmp_path) -> None:
    short = tmp_path / "short.txt"
    short.write_text("A few words of calibration text only.")
    with pytest.raises(ConfigError, match=r"too short: 4 samples x 64 tokens need 256 tokens, it has \d+"):
        calibration_batch(tokenizer, 4, 64, short)
    with pytest.raises(ConfigError, match="does not exist"):
        calibration_batch(tokenizer, 1, 8, tmp_path / "missing.txt")
    (tmp_path / "empty.txt").write_text("  \n")
    with pytest.raises(ConfigError, match="is empty"):
        calibration_batch(tokenizer, 1, 8, tmp_path / "empty.txt")
    with pytest.raises(ConfigError, match="too short: 1000 samples x 512 tokens need 512000"):
        calibration_batch(tokenizer, 1000, 512)


def test_default_calibration_avoids_the_evaluated_tokens(tokenizer) -> None:
    data = calibration_batch(tokenizer, 128, 512)
    assert tuple(data.input_ids.shape) == (128, 512)
    excluded = eval_segments(data.text_tokens)
    assert data.excluded == excluded and len(excluded) >= 2
    from neutrino.compression.evaluate.datasets import lee_text

    ids = tokenizer(lee_text(), add_special_tokens=False)["input_ids"]
    starts = windows(len(ids), excluded, 512)[:128]
    assert data.input_ids[5].tolist() == ids[starts[5] : starts[5] + 512]
    for s in starts:  # no window touches an evaluated segment
        assert all(s + 512 <= a or s >= b for a, b in excluded)


def test_windows_skip_excluded_spans() -> None:
    assert windows(100, [], 30) == [0, 30, 60]
    assert windows(100, [(10, 20), (50, 55)], 10) == [0, 20, 30, 40, 55, 65, 75, 85]
