"""`BlockedLowBitMethod`: the CPU path shared by the int8 and int4/3-bit weight-only methods, on the C++
`neutrino_quant::lowbit_linear` kernel.

After loading, every format becomes codes q (int8, or two 4-bit codes per byte) plus per-group scale s and
offset o with w = q * s + o, stored in the kernel's 16-row blocked layout ([N / 16, columns, 16]).
Scales and offsets are kept in float16 (half the bytes of float32; exact for GGUF, whose are float16)
unless the engine runs in float32 and float16 would round them.
Batches of at most `max_kernel_tokens` tokens (the fp32 path) or `INTEGER_PATH_MAX_TOKENS` (the integer
path below) run the kernel; larger ones dequantize W^T in slices and run the compute dtype's GEMM.

On CPUs with AVX2 (or AVX512-VNNI and VBMI) the kernel quantizes the activations (any dtype) to int8 per
token and per block of 32 columns (16 for groups that are not a multiple of 32) and runs integer dot
products (vpmaddubsw + vpmaddwd on AVX2, vpdpbusd with VNNI): it computes x^ @ W^T for
x^ = round(x / xs) * xs, xs = max|x| / 127 per block, not x @ W^T. Each element of x moves by at most
xs / 2: the relative error of y is ~0.5 % rms for Gaussian activations (tests/quant/test_quant_vnni.py
bounds it by 1 %), more when an outlier shares a block, and small next to the weights' own 4/8-bit
rounding (SmolLM2 int4 ppl-lee 38.25 vs 38.12 with every batch on the kernel). This is what llama.cpp
(Q8 activations against Q4/Q8 weights) and OpenVINO (dynamic int8 activation quantization) do. At batch 1
it is ~2x (int4) and ~1.5x (int8) faster than the fp32 path on cold weights: it streams the codes at
DRAM speed, one row block after another. `NEUTRINO_QUANT_EXACT=1` (read when the weights are processed)
forces the exact fp32-FMA path for every dtype. Large batches (dequantize + GEMM) are exact either way.

Shapes the kernel does not take, a missing C++ library and CUDA use the subclass's fallback.
"""

from __future__ import annotations

import torch
from torch import nn

from neutrino.env import env_flag
from neutrino.layers.quant import cpu_kernels
from neutrino.layers.quant.base import PlanEntry
from neutrino.layers.quant.format import unpack_nibbles
from neutrino.layers.quant.quantized import QuantizedLinearMethod, add_bias, dequant_matmul

# The integer (VNNI) path reads the weights once for all tokens of a batch: with 32 requests of SmolLM2
# at once (bf16, 2 threads) raising its limit from 12/16 to 32 and 64 tokens gave 348 -> 497 -> 492
# output tok/s (int4 g64) and 353 -> 443 -> 452 (int8), against dequantize + GEMM above the limit.
INTEGER_PATH_MAX_TOKENS = 64
# `neutrino_quant::isa()` values whose lowbit_linear has the integer path (VNNI, or AVX2 vpmaddubsw).
INTEGER_ISAS = ("avx512-vnni", "avx512+avx2-int8", "avx2-int8")


def blocked(t: torch.Tensor) -> torch.Tensor:
    """[N, C] -> [N / 16, C, 16] (16 output rows interleaved per column: the kernel's layout)."""
    n, c = t.shape
    return t.reshape(n // 16, 16, c).transpose(1, 2).contiguous()


def blocked_rows(t: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """Rows `ids` [T] of a `blocked` tensor, as [T, C]."""
    return t[ids // 16, :, ids % 16]


EXACT_ENV = "NEUTRINO_QUANT_EXACT"


def exact_requested() -> bool:
    """Whether `NEUTRINO_QUANT_EXACT=1` asks for the exact (float activation) kernel path."""
    return env_flag(EXACT_ENV, False)


def scale_dtype(tensors: list[torch.Tensor], dtype: torch.dtype) -> torch.dtype:
    """float16 when it holds every value exactly, or when the engine `dtype` is 16-bit anyway (float16's
    11-bit significand rounds a scale 8x less than bfloat16 rounds a weight); float32 otherwise."""
    if not all(bool((t.abs() < 60000).all()) for t in tensors):
        return torch.float32
    if dtype != torch.float32 or all(torch.equal(t.half().float(), t) for t in tensors):
        return torch.float16
    return torch.float32


class BlockedLowBitMethod(QuantizedLinearMethod):
    """Weight-only codes on the blocked C++ kernel (see the module docstring); subclasses give the
    kernel operands and a fallback."""

    path = "torch"  # "kernel" once converted; subclasses set their fallback's name

    def kernel_operands(self, layer: nn.Module) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """(codes [N, K] int8 or [N, K / 2] uint8 nibbles, float32 scales [N, G], offsets [N, G] or None)."""
        raise NotImplementedError

    def fallback_process(self, layer: nn.Module) -> None:
        """Prepare the fallback path (default: the torch path, nothing to do)."""

    def fallback_apply(self, layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return self.torch_apply(layer, x)

    def fallback_rows(self, layer: nn.Module, ids: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        return super().rows(layer, ids, dtype)

    def process_weights_after_loading(self, layer: nn.Module) -> None:
        group = self.fmt.group(self.in_features)
        ops = cpu_kernels.ops() if layer.qweight.device.type == "cpu" else None
        if ops is None or self.out_features % 16 or group % 2:
            self.fallback_process(layer)
            return
        q, s, o = self.kernel_operands(layer)
        sdtype = scale_dtype([s] if o is None else [s, o], self.dtype)
        layer.qb, layer.sb = blocked(q), blocked(s).to(sdtype)
        layer.ob = None if o is None else blocked(o).to(sdtype)
        self.ops, self.group, self.path = ops, group, "kernel"
        self.exact = exact_requested()
        self.integer_path = ops.isa() in INTEGER_ISAS and group % 16 == 0  # built with it, and a group it takes
        self.drop_checkpoint_tensors(layer)

    def apply_2d(self, layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
        if self.path != "kernel":
            return self.fallback_apply(layer, x)
        bits = 8 if self.fmt.bits == 8 else 4
        limit = INTEGER_PATH_MAX_TOKENS if self.integer_path and not self.exact else self.max_kernel_tokens
        if x.shape[0] <= limit:
            y = self.ops.lowbit_linear(x.contiguous(), bits, layer.qb, layer.sb, layer.ob, self.group, self.exact)
        else:
            y = dequant_matmul(x, self.out_features, 16, lambda n0, n1: self.ops.lowbit_dequant(
                bits, layer.qb, layer.sb, layer.ob, self.group, x.dtype, n0, n1))
        return add_bias(y, layer.bias)

    def plan_entry(self, layer: nn.Module) -> PlanEntry | None:
        if self.path != "kernel" or type(self).apply_2d is not BlockedLowBitMethod.apply_2d:
            return None
        limit = INTEGER_PATH_MAX_TOKENS if self.integer_path and not self.exact else self.max_kernel_tokens
        bits = 8 if self.fmt.bits == 8 else 4
        return PlanEntry("lowbit", (layer.qb, layer.sb, layer.ob, layer.bias, bits, self.group, self.exact), limit)

    def rows(self, layer: nn.Module, ids: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        if self.path != "kernel":
            return self.fallback_rows(layer, ids, dtype)
        q = blocked_rows(layer.qb, ids)
        q = (q if self.fmt.bits == 8 else unpack_nibbles(q)).float()  # [T, K]
        t, k = q.shape
        w = q.view(t, -1, self.group) * blocked_rows(layer.sb, ids).float()[..., None]
        if layer.ob is not None:
            w = w + blocked_rows(layer.ob, ids).float()[..., None]
        return w.view(t, k).to(dtype)
