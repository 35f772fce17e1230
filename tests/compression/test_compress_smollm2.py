"""The quality target that fits CI's time on the real SmolLM2: int8 per-channel RTN within 1% of the
source's perplexity (lee_background, the default protocol cut to its first 2,048-token segment), with
the output loaded by the engine's int8 kernel, not dequantized. (The 4-bit, 3-bit and pruning targets
need minutes of calibration each: benchmarks/compression.py, recorded in benchmarks/RESULTS.md.)"""

from __future__ import annotations

import json

import pytest

from neutrino.compression.api import compress
from neutrino.compression.evaluate.api import EvalLimits


@pytest.mark.timeout(600)
def test_int8_rtn_within_one_percent(smollm2_dir, tmp_path) -> None:
    out = tmp_path / "int8"
    result = compress(smollm2_dir, {"quantize": {"method": "rtn", "bits": 8}}, out, progress=False,
                      eval_limits=EvalLimits(max_tokens=2048))
    a = result.assessment
    assert a.mode == "engine", a.reason  # evaluated on the low-bit kernel
    assert a.result.perplexity["lee"].num_scored == a.reference.perplexity["lee"].num_scored == 2047
    p0, p = a.reference.ppl("lee"), a.result.ppl("lee")
    assert 5 < p0 < 100 and p != p0
    assert p <= 1.01 * p0, (p, p0)
    qc = json.loads((out / "config.json").read_text())["quantization_config"]
    assert (qc["bits"], qc["group_size"], qc["method"]) == (8, -1, "rtn")
