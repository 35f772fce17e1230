"""`gguf_native`: GGUF Q8_0/Q4_0/Q4_1 tensors run on the low-bit kernels in their stored form.

Tolerances (max |logits_native - logits_dequantized|; measured in brackets):
- tiny GGUF files, float32: <= 1e-4 [prefill 0.0: the same values; decode-sized batches <= 5.1e-6];
- SmolLM2 Q4_1, float32: <= 1e-3 at |logits| ~30 [7.9e-5], same greedy tokens;
- SmolLM2 Q4_1, bfloat16: <= 8e-2 * max |logits| [1.09 at 28, 3.9 %], argmax equal at >= 90 % of positions
  and at the last one.
"""

from __future__ import annotations

import argparse

import pytest
import torch
from gguf_tiny import Q, tiny_model, write_gguf

from neutrino import LLM, SamplingParams
from neutrino.cli.engine_flags import add_engine_flags, engine_args_from
from neutrino.compression.evaluate.footprint import memory_size
from neutrino.config import CacheConfig
from neutrino.errors import InvalidParameterError
from neutrino.layers.linear import Linear
from neutrino.layers.quant.embedding import QuantizedEmbedding
from neutrino.models.catalog import get_model_class
from neutrino.runner.model_runner import ModelRunner
from neutrino.weights.resolve import load_model_config, open_checkpoint, resolve_model

IDS = list(range(3, 43))
MIXED = {"q_proj": Q.Q4_1, "k_proj": Q.Q8_0, "v_proj": Q.Q4_0, "up_proj": Q.F16, "o_proj": Q.BF16,
         "embed": Q.Q4_0, "lm_head": Q.Q8_0}


def gguf_runner(path, native: bool, dtype=torch.float32) -> ModelRunner:
    resolved = resolve_model(str(path))
    cfg = load_model_config(resolved)
    weights, spec = open_checkpoint(resolved, cfg, native, get_model_class(cfg.architecture).stacked_params)
    return ModelRunner(cfg, weights, CacheConfig(block_size=16, num_blocks=8), 256, torch.device("cpu"), dtype,
                       source=str(path), quant_spec=spec)


def kinds(runner: ModelRunner) -> dict[str, str]:
    return {m.prefix: type(m.quant_method).__name__ for m in runner.model.modules() if isinstance(m, Linear)}


@pytest.mark.parametrize(("arch", "tie", "qtype"), [
    ("llama", True, lambda hf: Q.Q8_0 if "embed" in hf else Q.Q4_1),
    ("llama", False, lambda hf: next((q for key, q in MIXED.items() if key in hf), Q.Q4_1)),
    ("gpt2", True, lambda hf: Q.Q8_0),
], ids=["llama-q4_1-tied", "llama-mixed-untied", "gpt2-q8_0"])
def test_tiny_native_equals_dequantized(tmp_path, arch, tie, qtype) -> None:
    path = write_gguf(tmp_path / "m.gguf", tiny_model(arch, tie), arch, qtype)
    native, dense = gguf_runner(path, True), gguf_runner(path, False)
    assert isinstance(native.model.input_embeddings(), QuantizedEmbedding)
    assert (native.model.lm_head is native.model.input_embeddings()) == tie
    for ids in (IDS, IDS[:2]):
        assert float((native.score(ids) - dense.score(ids)).abs().max()) <= 1e-4
    found = kinds(native)
    if arch == "llama" and not tie:  # q|k|v and gate|up mix types: dense; down (Q4_1) and lm_head native
        assert found["model.layers.0.self_attn.qkv_proj"] == found["model.layers.0.mlp.gate_up_proj"] == \
            "UnquantizedLinearMethod"
        assert found["model.layers.0.mlp.down_proj"] == "Int4WeightOnlyMethod"
        assert found["lm_head"] == "Int8WeightOnlyMethod"


@pytest.fixture(scope="module")
def smollm2_native_fp32(smollm2_gguf):
    with pytest.MonkeyPatch.context() as mp:  # the exact path (module scope: before the autouse fixture)
        mp.setenv("NEUTRINO_QUANT_EXACT", "1")
        return LLM(gguf_native=True, dtype="float32", num_blocks=32)


def test_smollm2_native_fp32_matches_dequantized(smollm2_native_fp32, smollm2_dir) -> None:
    native = smollm2_native_fp32
    dense = LLM(dtype="float32", num_blocks=32)
    assert native.engine.resolved.format == "gguf"
    layers = {k for p, k in kinds(native.engine.runner).items() if p.startswith("model.layers.")}
    assert layers == {"Int4WeightOnlyMethod"}  # every Q4_1 layer native; the Q8_0 table is the tied head
    assert isinstance(native.engine.runner.model.lm_head, QuantizedEmbedding)
    ids = native.tokenizer("The capital of France is Paris. The capital of Germany is")["input_ids"]
    for sl in (slice(None), slice(0, 3)):
        ours, ref = native.engine.runner.score(ids[sl]), dense.engine.runner.score(ids[sl])
        assert float((ours - ref).abs().max()) <= 1e-3
    params = SamplingParams(temperature=0, max_tokens=24)
    prompts = ["The capital of France is", "Write a haiku about the sea."]
    got = [o.outputs[0].token_ids for o in native.generate(prompts, params)]
    assert got == [o.outputs[0].token_ids for o in dense.generate(prompts, params)]
    assert "Paris" in native.generate(prompts[:1], params)[0].outputs[0].text


def test_smollm2_native_bf16_close_and_small(smollm2_native_fp32) -> None:
    native = LLM(gguf_native=True, num_blocks=32)  # bfloat16, the engine default
    ids = native.tokenizer("The capital of France is Paris. The capital of Germany is")["input_ids"]
    ours, ref = native.engine.runner.score(ids), smollm2_native_fp32.engine.runner.score(ids)
    assert float((ours - ref).abs().max()) <= 8e-2 * float(ref.abs().max())
    assert float((ours.argmax(-1) == ref.argmax(-1)).float().mean()) >= 0.9
    assert int(ours[-1].argmax()) == int(ref[-1].argmax())
    fp32_bytes = 4 * sum(p.numel() for p in LLM(dtype="float32", num_blocks=2).engine.runner.model.parameters())
    assert memory_size(native.engine.runner.model) <= 0.2 * fp32_bytes  # Q4_1 layers + Q8_0 tied table


def test_option_plumbing(smollm2_dir) -> None:
    parser = argparse.ArgumentParser()
    add_engine_flags(parser)
    assert engine_args_from(parser.parse_args(["--gguf-native"])).gguf_native is True
    assert engine_args_from(parser.parse_args([])).gguf_native is False
    with pytest.raises(InvalidParameterError, match="gguf_native.*needs a .gguf model"):
        LLM(model=str(smollm2_dir), gguf_native=True)



def test_engine_gives_back_the_load_memory(smollm2_gguf) -> None:
    """Once the engine is ready, no GGUF reader is cached and the file is no longer mapped (its map was
    as large as the file and stayed resident); the engine still generates from the loaded weights."""
    from neutrino.weights.gguf_loader import _open_cached

    path = smollm2_gguf
    llm = LLM(gguf_native=True, num_blocks=16)  # the packaged SmolLM2 GGUF
    assert _open_cached.cache_info().currsize == 0
    with open("/proc/self/maps") as maps:
        assert str(path.resolve()) not in maps.read()
    assert len(llm.generate([IDS[:5]], SamplingParams(temperature=0, max_tokens=3))[0].outputs[0].token_ids) == 3
