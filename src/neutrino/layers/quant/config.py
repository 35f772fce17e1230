"""The quantization config of a Neutrino checkpoint: what `neutrino compress` writes into `config.json`
(key `quantization_config`) and what the engine reads to pick a QuantMethod per linear layer.

Checkpoint tensors of a quantized linear `P` (HF name prefix, e.g. `model.layers.0.self_attn.q_proj`),
replacing `P.weight`:

- `P.qweight`: the integer codes, row-major over [out_features, in_features]:
  - bits == 8: int8 [N, K] (symmetric: codes in [-128, 127]; asymmetric: uint8 codes in [0, 255]);
  - bits <= 4: uint8 [N, K / 2], two codes per byte, element 2j in the low nibble and 2j + 1 in the
    high nibble; codes are unsigned in [0, 2**bits - 1] (3-bit codes are stored in 4-bit nibbles).
    Symmetric codes are offset by 2**(bits - 1), so code c means the integer c - 2**(bits - 1).
- `P.scales`: float32 [N, K / group_size] (group_size -1 means one group per row: [N, 1]).
- `P.zeros` (asymmetric only): float32 [N, K / group_size], the zero point in the code domain.
- `P.bias`: unchanged when the layer has one.

The token embedding table `model.embed_tokens` [vocab, hidden] may be stored the same way (groups along
the hidden dimension) when it is not in `ignore`; the engine then looks rows up from the codes. When
the embeddings are tied to lm_head (`tie_word_embeddings`), that one table also serves as the head.

Dequantized weight: w[n, k] = (q[n, k] - z[n, g]) * s[n, g] with g = k // group_size, where the zero
point z is `zeros` (asymmetric) or 2**(bits - 1) (symmetric, bits <= 4) or 0 (symmetric, 8 bits).

W8A8 (`scheme: w8a8`): weights as bits == 8 symmetric per-channel; activations are quantized per token
at run time (dynamic, symmetric int8). SmoothQuant's smoothing factors are folded into the preceding
norm / linear weights, so no extra tensor is stored.

Sparsity (pruning) needs no new tensors: pruned weights are stored as zeros (in `weight` or in the
codes); `sparsity` records what was done.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from neutrino.errors import CheckpointError

QUANT_METHOD = "neutrino"
SCHEMES = ("weight_only", "w8a8")
METHODS = ("rtn", "gptq", "awq", "smoothquant", "gguf")


@dataclass(frozen=True)
class QuantConfig:
    """`quantization_config` of a Neutrino checkpoint (see the module docstring for the tensors)."""

    bits: int  # 8, 4 or 3
    group_size: int = -1  # -1: per output channel; else divides in_features
    symmetric: bool = True
    scheme: str = "weight_only"  # or "w8a8"
    method: str = "rtn"  # how the codes were chosen: rtn, gptq, awq, smoothquant, gguf
    ignore: tuple[str, ...] = ("lm_head",)  # module names (HF) left unquantized (e.g. model.embed_tokens)
    sparsity: dict[str, Any] | None = None  # e.g. {"method": "wanda", "target": 0.5, "pattern": "2:4"}
    extra: dict[str, Any] = field(default_factory=dict)  # method details (damping, calibration, ...)

    def __post_init__(self) -> None:
        if self.bits not in (3, 4, 8):
            raise CheckpointError(f"quantization_config.bits must be 3, 4 or 8, got {self.bits!r}")
        if self.group_size != -1 and self.group_size <= 0:
            raise CheckpointError(f"quantization_config.group_size must be -1 or > 0, got {self.group_size!r}")
        if self.scheme not in SCHEMES:
            raise CheckpointError(f"quantization_config.scheme must be one of {SCHEMES}, got {self.scheme!r}")
        if self.scheme == "w8a8" and (self.bits != 8 or not self.symmetric or self.group_size != -1):
            raise CheckpointError("w8a8 needs bits 8, symmetric, group_size -1 (per output channel)")
        if self.method not in METHODS:
            raise CheckpointError(f"quantization_config.method must be one of {METHODS}, got {self.method!r}")

    def is_ignored(self, module_name: str) -> bool:
        """Whether the HF module `module_name` (e.g. `lm_head`, `model.layers.3.mlp.down_proj`) stays dense."""
        return any(module_name == name or module_name.endswith("." + name) for name in self.ignore)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["ignore"] = list(self.ignore)
        return {"quant_method": QUANT_METHOD, **d}

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str = "config.json") -> QuantConfig:
        """Parse `quantization_config`; raises CheckpointError naming `source` and the bad key."""
        if not isinstance(d, dict) or d.get("quant_method") != QUANT_METHOD:
            got = d.get("quant_method") if isinstance(d, dict) else d
            raise CheckpointError(
                f"{source}: quantization_config.quant_method {got!r} is not supported (expected {QUANT_METHOD!r})"
            )
        known = {f for f in cls.__dataclass_fields__}
        unknown = sorted(set(d) - known - {"quant_method"})
        if unknown:
            raise CheckpointError(f"{source}: unknown quantization_config keys {unknown}; known: {sorted(known)}")
        if "bits" not in d:
            raise CheckpointError(f"{source}: quantization_config has no 'bits'")
        args = {k: v for k, v in d.items() if k != "quant_method"}
        if "ignore" in args:
            args["ignore"] = tuple(args["ignore"])
        try:
            return cls(**args)
        except CheckpointError as e:
            raise CheckpointError(f"{source}: {e}") from None
        except TypeError as e:
            raise CheckpointError(f"{source}: bad quantization_config: {e}") from None
