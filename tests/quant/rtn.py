"""A small reference round-to-nearest quantizer writing Neutrino's checkpoint format (see
`neutrino.layers.quant.config`), independent of `neutrino.compression`, plus helpers that turn a dense HF
checkpoint into a quantized one and into its dequantized dense twin."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

LLAMA_LINEARS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
GPT2_LINEARS = ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")


def rtn(w: torch.Tensor, bits: int, group_size: int = -1, symmetric: bool = True):
    """(checkpoint tensors {qweight, scales[, zeros]}, dequantized float32 weight) of w [N, K]."""
    n, k = w.shape
    gs = k if group_size == -1 else group_size
    wg = w.float().reshape(n, k // gs, gs)
    if symmetric:
        qmax = 2 ** (bits - 1) - 1
        s = wg.abs().amax(-1) / qmax
        s = torch.where(s > 0, s, torch.ones_like(s))
        q = torch.round(wg / s[..., None]).clamp(-qmax - 1, qmax)
        z = torch.zeros_like(s) if bits == 8 else torch.full_like(s, 2 ** (bits - 1))
        codes = q if bits == 8 else q + z[..., None]
    else:
        lo, hi = wg.amin(-1), wg.amax(-1)
        s = (hi - lo) / (2**bits - 1)
        s = torch.where(s > 0, s, torch.ones_like(s))
        z = -lo / s
        codes = torch.round(wg / s[..., None] + z[..., None]).clamp(0, 2**bits - 1)
    deq = ((codes - z[..., None]) * s[..., None]).reshape(n, k)
    codes = codes.reshape(n, k)
    if bits == 8:
        qweight = codes.to(torch.int8) if symmetric else codes.to(torch.uint8)
    else:
        c = codes.to(torch.uint8)
        qweight = (c[:, 0::2] | (c[:, 1::2] << 4)).contiguous()
    out = {"qweight": qweight, "scales": s.contiguous()}
    if not symmetric:
        out["zeros"] = z.contiguous()
    return out, deq


def _targets(names: list[str], family: str, quantize_head: bool) -> list[str]:
    """HF modules to quantize (their `.weight` names minus the suffix)."""
    linears = GPT2_LINEARS if family == "gpt2" else LLAMA_LINEARS
    mods = [n[: -len(".weight")] for n in names if n.endswith(".weight") and any(f".{x}.weight" in n for x in linears)]
    if quantize_head:
        mods.append("lm_head")
    return mods


def quantize_checkpoint(src: Path, quant_dir: Path, dense_dir: Path, family: str, bits: int,
                        group_size: int = -1, symmetric: bool = True, scheme: str = "weight_only",
                        quantize_head: bool = False) -> None:
    """Write `quant_dir` (the QuantConfig checkpoint) and `dense_dir` (the same weights dequantized)."""
    state = load_file(str(src / "model.safetensors"))
    cfg = json.loads((src / "config.json").read_text())
    if quantize_head and "lm_head.weight" not in state:
        state["lm_head.weight"] = state["model.embed_tokens.weight"].clone()
        cfg["tie_word_embeddings"] = False  # as `neutrino compress` does: the quantized head is its own
    quant, dense = dict(state), dict(state)
    for mod in _targets(list(state), family, quantize_head):
        w = state[f"{mod}.weight"]
        conv1d = family == "gpt2" and mod != "lm_head"
        tensors, deq = rtn(w.t() if conv1d else w, bits, group_size, symmetric)
        del quant[f"{mod}.weight"]
        quant.update({f"{mod}.{k}": v for k, v in tensors.items()})
        dense[f"{mod}.weight"] = (deq.t() if conv1d else deq).contiguous().to(w.dtype)
    qcfg = {"quant_method": "neutrino", "bits": bits, "group_size": group_size, "symmetric": symmetric,
            "scheme": scheme, "method": "rtn", "ignore": [] if quantize_head else ["lm_head"]}
    for out, tensors, extra in ((quant_dir, quant, {"quantization_config": qcfg}), (dense_dir, dense, {})):
        out.mkdir(parents=True, exist_ok=True)
        for f in src.iterdir():
            if f.name not in ("model.safetensors", "config.json"):
                shutil.copy(f, out / f.name)
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(out / "model.safetensors"))
        (out / "config.json").write_text(json.dumps({**cfg, **extra}, indent=1))


def rtn_min(w: torch.Tensor, group_size: int = 32):
    """GGUF Q4_1-style 4-bit codes with w = q * s + m per group: ({qweight, scales, mins}, dequantized)."""
    n, k = w.shape
    wg = w.float().reshape(n, k // group_size, group_size)
    lo, hi = wg.amin(-1), wg.amax(-1)
    s = torch.where(hi > lo, (hi - lo) / 15, torch.ones_like(lo))
    codes = torch.round((wg - lo[..., None]) / s[..., None]).clamp(0, 15)
    deq = (codes * s[..., None] + lo[..., None]).reshape(n, k)
    c = codes.reshape(n, k).to(torch.uint8)
    return {"qweight": (c[:, 0::2] | (c[:, 1::2] << 4)).contiguous(), "scales": s, "mins": lo}, deq
