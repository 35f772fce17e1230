"""What `neutrino compress` writes is served as it is: `neutrino generate` and `neutrino serve` load the
compressed checkpoint (low-bit kernels, not a dequantized copy) and give the same greedy text as the
offline engine on that checkpoint."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from conftest import NEUTRINO, launch

RECIPES = {
    "gptq-w4-after-2of4-wanda": {"prune": {"method": "wanda", "pattern": "2:4"},
                                 "quantize": {"method": "gptq", "bits": 4, "group_size": 32}},
    "w8a8-smoothquant": {"quantize": {"method": "smoothquant"}},
}
PROMPT = "The harbour was quiet that morning"


@pytest.fixture(scope="module", params=sorted(RECIPES))
def compressed(request, tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    from neutrino import LLM, SamplingParams
    from neutrino.compression.api import compress

    out = tmp_path_factory.mktemp("compressed") / request.param
    recipe = {**RECIPES[request.param], "calibration": {"samples": 4, "seq_len": 32}}
    compress(tiny_model, recipe, out, evaluate=False, progress=False)
    llm = LLM(model=str(out), dtype="float32")
    quantized = [type(m.quant_method).__name__ for m in llm.engine.runner.model.modules()
                 if hasattr(m, "quant_method")]
    assert any(name != "UnquantizedLinearMethod" for name in quantized), quantized
    text = llm.generate([PROMPT], SamplingParams(temperature=0, max_tokens=12, ignore_eos=True))[0].outputs[0].text
    del llm
    return out, text


def test_generate_cli_serves_the_compressed_checkpoint(compressed: tuple[Path, str]) -> None:
    out, text = compressed
    proc = subprocess.run([NEUTRINO, "generate", "-m", str(out), "--dtype", "float32", "--max-tokens", "12",
                           "--temperature", "0", "--ignore-eos", PROMPT], capture_output=True, text=True,
                          timeout=300, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 0, proc.stderr
    assert text in proc.stdout


def test_serve_answers_with_the_compressed_checkpoint(compressed: tuple[Path, str], tmp_path: Path) -> None:
    out, text = compressed
    server = launch(out, tmp_path / "server.log", api_key=None)
    try:
        models = server.get("/v1/models").json()["data"]
        assert [m["id"] for m in models] == [out.name]
        body = {"model": out.name, "prompt": PROMPT, "max_tokens": 12, "temperature": 0, "ignore_eos": True}
        r = server.post("/v1/completions", body)
        assert r.status_code == 200, r.text
        assert r.json()["choices"][0]["text"] == text
        assert r.json()["usage"]["completion_tokens"] == 12
        config = json.loads((out / "config.json").read_text())
        assert "quantization_config" in config
    finally:
        assert server.stop() == 0
