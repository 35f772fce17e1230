"""Where every peer lives and the model files each one reads, made once from the packaged SmolLM2 and
cached under the peers' directory: GGUF variants at each precision (llama-quantize requantizes the Q4_1
file), OpenVINO IR exports of the float32 HF directory, the HF directory itself for vLLM and
transformers. Recipes: ../shared/PEERS.md and scripts/build_peers.sh."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from neutrino.errors import ConfigError

PEERS_DIR = Path(os.environ.get("NEUTRINO_PEERS_DIR", Path.home() / ".cache" / "neutrino-peers"))
GGUF_TYPES = {"fp32": "F32", "bf16": "BF16", "int8": "Q8_0", "int4": "Q4_0"}
# optimum-cli --weight-format per precision; int4 in symmetric groups of 32 like Q4_0
OV_FORMATS = {"fp32": ["fp32"], "bf16": ["fp16"], "int8": ["int8", "--sym"],
              "int4": ["int4", "--sym", "--group-size", "32", "--ratio", "1.0"]}


def tool(*candidates: str) -> Path | None:
    """The first peer executable that exists under the peers' directory."""
    for rel in candidates:
        path = PEERS_DIR / rel
        if path.is_file() and os.access(path, os.X_OK):
            return path
    return None


def llama_tool(name: str) -> Path | None:
    return tool(f"bin/{name}", f"llamacpp/build/bin/{name}")


def hf_dir() -> Path:
    """The float32 HF directory of the embedded model (Neutrino's converted cache)."""
    from neutrino.weights.default import default_model_dir

    return default_model_dir()


def gguf(precision: str) -> Path:
    """The packaged GGUF requantized to `precision` (F32, BF16, Q8_0 or Q4_0), made on first use."""
    from neutrino.weights.default import default_gguf_path

    kind = GGUF_TYPES[precision]
    out = PEERS_DIR / "models" / f"SmolLM2-135M-Instruct.{kind}.gguf"
    if out.is_file():
        return out
    quantize = llama_tool("llama-quantize")
    if quantize is None:
        raise ConfigError(f"llama-quantize not found under {PEERS_DIR} (scripts/build_peers.sh builds it)")
    _atomic(out, lambda tmp: subprocess.run(
        [str(quantize), "--allow-requantize", str(default_gguf_path()), str(tmp), kind],
        check=True, capture_output=True))
    return out


def openvino_ir(precision: str) -> Path:
    """An OpenVINO IR export of the float32 HF directory at `precision`, made on first use."""
    out = PEERS_DIR / "models" / f"ov-SmolLM2-135M-Instruct-{precision}"
    if (out / "openvino_model.xml").is_file():
        return out
    cli = tool("ov/bin/optimum-cli")
    if cli is None:
        raise ConfigError(f"optimum-cli not found in {PEERS_DIR / 'ov'} (see ../shared/PEERS.md)")
    _atomic(out, lambda tmp: subprocess.run(
        [str(cli), "export", "openvino", "--model", str(hf_dir()), "--task", "text-generation-with-past",
         "--weight-format", *OV_FORMATS[precision], str(tmp)], check=True, capture_output=True))
    return out


def _atomic(out: Path, make) -> None:
    """Build `out` under a temporary name next to it and rename it into place (never half-written)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".partial")
    if tmp.is_dir():
        shutil.rmtree(tmp)
    tmp.unlink(missing_ok=True)
    try:
        make(tmp)
        tmp.replace(out)
    except subprocess.CalledProcessError as exc:
        raise ConfigError(f"making {out.name} failed: {exc.stderr.decode(errors='replace')[-800:]}") from exc
    finally:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        elif tmp.exists():
            tmp.unlink()
