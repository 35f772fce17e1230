"""Labels saying whether each evaluation text was held out from a checkpoint's calibration."""

from __future__ import annotations

import yaml

from neutrino.compression.evaluate.held_out import calibration_of, held_out_labels

DEFAULT = {"source": "gensim:lee_background.cor", "samples": 4, "seq_len": 64,
           "excluded_eval_ranges": [[0, 2048], [24000, 26048]]}


def test_labels_for_each_calibration() -> None:
    texts = ["wiki", "lee"]
    assert held_out_labels(DEFAULT, texts) == {"wiki": "held-out corpus", "lee": "held-out segments"}
    whole = {**DEFAULT, "excluded_eval_ranges": []}  # more windows than the spans between segments hold
    assert held_out_labels(whole, texts) == {"wiki": "held-out corpus", "lee": "NOT held out"}
    assert held_out_labels({**DEFAULT, "source": "/data/my.txt"}, texts) == {"wiki": "not checked",
                                                                             "lee": "not checked"}
    assert held_out_labels(None, ["lee"]) == {"lee": "no calibration"}


def test_calibration_is_read_from_the_recipe(tmp_path) -> None:
    assert calibration_of(tmp_path) is None  # no recipe.yaml: not a compressed checkpoint
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump({"quantize": {"method": "gptq"},
                                                          "produced": {"calibration_data": DEFAULT}}))
    assert calibration_of(tmp_path) == DEFAULT
    (tmp_path / "recipe.yaml").write_text("quantize: {method: rtn}\nproduced: {seconds: {}}\n")
    assert calibration_of(tmp_path) is None
    (tmp_path / "recipe.yaml").write_text("quantize: [broken\n")
    assert calibration_of(tmp_path) is None
