"""Logits parity with transformers: every supported family on tiny random checkpoints, and the real
SmolLM2-135M-Instruct weights (HF directory and the packaged GGUF), through Neutrino's real loaders.

Tolerances (max |Neutrino - transformers| over the logits; measured values from an x86 CPU with
torch 2.13 / transformers 5.23 in brackets):

- tiny models (hidden 64, |logits| up to ~9), float32: <= 1e-4 at the last position and at every
  position [<= 9.5e-6]; argmax equal at the last position, and at every position Neutrino's argmax
  scores within the tolerance of transformers' max (equal argmax up to near-ties).
- tiny models, bfloat16 (checkpoint stored in bf16, both sides run in bf16):
  <= 5e-2 * max(1, max |logits|) [<= 0.14 at max |logits| 6.1-6.7, i.e. <= 2.3 %]. At every position
  Neutrino's argmax scores within that tolerance of transformers' max (equal argmax up to near-ties);
  at the last position the argmax is equal.
- SmolLM2, float32: <= 1e-3 at every position [<= 1.0e-4, |logits| ~30-40]; argmax as for tiny models.
- SmolLM2, bfloat16 (30 layers): <= 8e-2 * max |logits| at every position [<= 1.52 at 39, 3.9 %], mean
  |diff| <= 0.3 [<= 0.18]; and measured against the float32 reference, Neutrino-bf16's mean error is at
  most 1.3x transformers-bf16's [1.05x]; argmax equal at the last position.
- GGUF file vs its converted HF directory (both float32 dequantized weights): <= 1e-5 [0.0, identical].
- Engine path (paged KV cache, chunked prefill, batched decode) on tiny models, float32: prompt
  logprobs and sampled-token logprobs within 1e-4 of transformers' log_softmax [<= 5.3e-6]; greedy tokens
  are transformers' argmax.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from neutrino import LLM
from neutrino.config import CacheConfig
from neutrino.runner.model_runner import ModelRunner
from neutrino.sampling_params import SamplingParams
from neutrino.weights import iter_weights, load_model_config, resolve_model

FP32_ATOL = 1e-4
BF16_RTOL = 5e-2
SMOLLM2_FP32_ATOL = 1e-3
SMOLLM2_BF16_RTOL = 8e-2
SMOLLM2_BF16_MEAN = 0.3
SMOLLM2_BF16_ERR_RATIO = 1.3
GGUF_ATOL = 1e-5
ENGINE_LOGPROB_ATOL = 1e-4
SEQ_LEN = 40

# (family, tie_word_embeddings): every family tied and untied; llama3 is Llama with Llama 3 rope scaling.
VARIANTS = [(f, t) for f in ("llama", "llama3", "mistral", "qwen2", "qwen3", "gpt2") for t in (False, True)]
VARIANT_IDS = [f"{f}-{'tied' if t else 'untied'}" for f, t in VARIANTS]


def load_runner(path: Path, dtype: torch.dtype) -> ModelRunner:
    """A ModelRunner built through the real loaders (resolve -> config -> weights), tiny KV cache."""
    resolved = resolve_model(str(path))
    cfg = load_model_config(resolved)
    return ModelRunner(
        cfg,
        iter_weights(resolved),
        CacheConfig(block_size=16, num_blocks=2),
        min(cfg.max_position_embeddings, 2048),
        torch.device("cpu"),
        dtype,
    )


@torch.inference_mode()
def hf_logits(path_or_model, ids: list[int], dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """transformers' float32 logits [len(ids), vocab] for one sequence."""
    from transformers import AutoModelForCausalLM

    model = path_or_model
    if isinstance(path_or_model, Path):
        model = AutoModelForCausalLM.from_pretrained(path_or_model, dtype=dtype).eval()
    return model(torch.tensor([ids])).logits[0].float()


def random_ids(vocab: int, n: int = SEQ_LEN, seed: int = 0) -> list[int]:
    return torch.randint(0, vocab, (n,), generator=torch.Generator().manual_seed(seed)).tolist()


def assert_argmax_close(ours: torch.Tensor, ref: torch.Tensor, atol: float) -> None:
    """At every position our argmax token scores within `atol` of the reference maximum."""
    picked = ref.gather(-1, ours.argmax(-1, keepdim=True)).squeeze(-1)  # [L]
    shortfall = ref.max(-1).values - picked
    assert float(shortfall.max()) <= atol, f"argmax off by {float(shortfall.max()):.3e} logits > {atol}"


@pytest.mark.parametrize(("family", "tie"), VARIANTS, ids=VARIANT_IDS)
def test_tiny_fp32_logits(tiny_checkpoint, family: str, tie: bool) -> None:
    path = tiny_checkpoint(family, "float32", tie)
    runner = load_runner(path, torch.float32)
    assert runner.model_config.tie_word_embeddings is tie
    ids = random_ids(runner.model_config.vocab_size, seed=len(family))
    ours, ref = runner.score(ids), hf_logits(path, ids)
    assert ours.shape == ref.shape == (SEQ_LEN, runner.model_config.vocab_size)
    assert ours.dtype == torch.float32
    assert float((ours[-1] - ref[-1]).abs().max()) <= FP32_ATOL
    torch.testing.assert_close(ours, ref, atol=FP32_ATOL, rtol=0)
    assert_argmax_close(ours, ref, FP32_ATOL)
    assert int(ours[-1].argmax()) == int(ref[-1].argmax())


@pytest.mark.parametrize(("family", "tie"), VARIANTS, ids=VARIANT_IDS)
def test_tiny_bf16_logits(tiny_checkpoint, family: str, tie: bool) -> None:
    path = tiny_checkpoint(family, "bfloat16", tie)
    runner = load_runner(path, torch.bfloat16)
    ids = random_ids(runner.model_config.vocab_size, seed=len(family))
    ours, ref = runner.score(ids), hf_logits(path, ids, torch.bfloat16)
    atol = BF16_RTOL * max(1.0, float(ref.abs().max()))
    diff = (ours - ref).abs()
    assert float(diff[-1].max()) <= atol, f"last position max diff {float(diff[-1].max()):.3e} > {atol:.3e}"
    assert float(diff.max()) <= atol, f"max diff {float(diff.max()):.3e} > {atol:.3e}"
    assert_argmax_close(ours, ref, atol)
    top2 = ref[-1].topk(2).values
    if float(top2[0] - top2[1]) > atol:  # not a near-tie: the greedy token must be the same
        assert int(ours[-1].argmax()) == int(ref[-1].argmax())


# ---- SmolLM2 ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def smollm2_prompts(smollm2_tokenizer, passage_ids) -> list[list[int]]:
    """A chat-templated prompt with the start of the answer (42 tokens) and a real-text prefix (206
    tokens); both end where the next token is decisive (top-2 logit gap > 4), so that comparing the
    last position's argmax is meaningful in bfloat16 too."""
    tok = smollm2_tokenizer
    chat = tok.apply_chat_template(
        [{"role": "user", "content": "What is the capital of France?"}],
        add_generation_prompt=True,
        tokenize=True,
    )
    chat = list(chat["input_ids"] if hasattr(chat, "keys") else chat)
    answer = tok("The capital of France is", add_special_tokens=False)["input_ids"]  # -> " Paris"
    return [chat + list(answer), passage_ids[:206]]  # -> " the" (cold currents of the northern sea)


def test_smollm2_fp32_logits(smollm2_llm, smollm2_hf, smollm2_prompts) -> None:
    runner = smollm2_llm.engine.runner
    for ids in smollm2_prompts:
        ours, ref = runner.score(ids), hf_logits(smollm2_hf, ids)
        assert float((ours[-1] - ref[-1]).abs().max()) <= SMOLLM2_FP32_ATOL
        torch.testing.assert_close(ours, ref, atol=SMOLLM2_FP32_ATOL, rtol=0)
        assert_argmax_close(ours, ref, SMOLLM2_FP32_ATOL)
        assert int(ours[-1].argmax()) == int(ref[-1].argmax())


def test_smollm2_bf16_logits(smollm2_dir, smollm2_hf, smollm2_prompts) -> None:
    from transformers import AutoModelForCausalLM

    runner = load_runner(smollm2_dir, torch.bfloat16)
    hf = AutoModelForCausalLM.from_pretrained(smollm2_dir, dtype=torch.bfloat16).eval()
    for ids in smollm2_prompts:
        ours, ref, exact = runner.score(ids), hf_logits(hf, ids), hf_logits(smollm2_hf, ids)
        atol = SMOLLM2_BF16_RTOL * float(ref.abs().max())
        diff = (ours - ref).abs()
        assert float(diff.max()) <= atol, f"max diff {float(diff.max()):.3e} > {atol:.3e}"
        assert float(diff.mean()) <= SMOLLM2_BF16_MEAN
        our_err, hf_err = float((ours - exact).abs().mean()), float((ref - exact).abs().mean())
        assert our_err <= SMOLLM2_BF16_ERR_RATIO * hf_err, (our_err, hf_err)
        assert_argmax_close(ours, ref, atol)
        assert int(ours[-1].argmax()) == int(ref[-1].argmax())


def test_gguf_matches_converted_dir(smollm2_gguf, smollm2_llm, smollm2_prompts) -> None:
    llm = LLM(model=str(smollm2_gguf), dtype="float32", num_blocks=8)
    assert llm.engine.resolved.format == "gguf"
    gguf_cfg, dir_cfg = llm.engine.model_config, smollm2_llm.engine.model_config
    for name in (
        "vocab_size",
        "hidden_size",
        "num_hidden_layers",
        "num_key_value_heads",
        "rope_theta",
        "rms_norm_eps",
        "tie_word_embeddings",
    ):
        assert getattr(gguf_cfg, name) == getattr(dir_cfg, name), name
    text = "Valmere's harbour, built in 1847: ünïcode, 日本語, code `x = [i*i for i in range(3)]`."
    assert llm.tokenizer(text)["input_ids"] == smollm2_llm.tokenizer(text)["input_ids"]
    for ids in smollm2_prompts:
        ours, ref = llm.engine.runner.score(ids), smollm2_llm.engine.runner.score(ids)
        torch.testing.assert_close(ours, ref, atol=GGUF_ATOL, rtol=0)


# ---- the engine path on tiny models -------------------------------------------------------------------


@pytest.mark.parametrize("family", ["llama", "llama3", "mistral", "qwen2", "qwen3", "gpt2"])
def test_engine_logprobs_match_transformers(tiny_checkpoint, family: str) -> None:
    """Prompt logprobs (chunked prefill across 8-token blocks) and greedy decoding (batched, paged
    decode) agree with transformers run on the whole sequence."""
    from transformers import AutoModelForCausalLM

    path = tiny_checkpoint(family, "float32", tokenizer=True)
    llm = LLM(
        model=str(path),
        dtype="float32",
        block_size=8,
        num_blocks=64,
        max_num_batched_tokens=32,
        max_num_seqs=4,
        enable_prefix_caching=False,
    )
    hf = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    vocab = llm.engine.model_config.vocab_size
    prompts = [random_ids(vocab, n, seed=n) for n in (23, 40, 57, 70)]
    params = SamplingParams(temperature=0.0, max_tokens=8, ignore_eos=True, logprobs=2, prompt_logprobs=2)
    outputs = llm.generate(prompts, params)
    kv = llm.engine.scheduler.kv_cache_manager
    assert kv.num_free_blocks == kv.num_usable_blocks
    for prompt, out in zip(prompts, outputs, strict=True):
        gen = out.outputs[0].token_ids
        assert len(gen) == 8
        ref = torch.log_softmax(hf_logits(hf, prompt + gen), dim=-1)  # [L + 8, vocab]
        plp = out.prompt_logprobs
        assert plp is not None and len(plp) == len(prompt) and plp[0] is None
        ours_prompt = torch.tensor([e.logprob for e in plp[1:]])
        ref_prompt = ref[torch.arange(len(prompt) - 1), torch.tensor(prompt[1:])]
        torch.testing.assert_close(ours_prompt, ref_prompt, atol=ENGINE_LOGPROB_ATOL, rtol=0)
        positions = torch.arange(len(prompt) - 1, len(prompt) - 1 + len(gen))
        ref_gen = ref[positions, torch.tensor(gen)]
        ours_gen = torch.tensor([e.logprob for e in out.outputs[0].logprobs])
        torch.testing.assert_close(ours_gen, ref_gen, atol=ENGINE_LOGPROB_ATOL, rtol=0)
        # greedy: each generated token is transformers' argmax (up to the logprob tolerance)
        assert float((ref[positions].max(-1).values - ref_gen).max()) <= ENGINE_LOGPROB_ATOL
