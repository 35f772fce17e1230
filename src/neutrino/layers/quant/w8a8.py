"""W8A8: int8 per-channel symmetric weights, activations quantized per token at run time (dynamic,
symmetric int8), integer GEMM with int32 accumulation.

y[m, n] = (sum_k xq[m, k] * wq[n, k]) * x_scale[m] * w_scale[n] (+ bias[n]), with
x_scale[m] = max_k |x[m, k]| / 127 and xq = round_half_even(x / x_scale), at every batch size (the same
numerics for prefill and decode). CPU: `torch._int_mm` (oneDNN, AVX-512 VNNI; the weight kept as
[N, K] contiguous and passed as its transpose view, which is its fastest layout there), with the
activation quantization and the rescale fused in C++ (`neutrino_quant`). CUDA: `torch._int_mm` where its
shape rules allow (M > 16, K and N multiples of 8), else the same integer products in float32.
"""

from __future__ import annotations

import torch
from torch import nn

from neutrino.layers.quant import cpu_kernels
from neutrino.layers.quant.quantized import QuantizedLinearMethod


def quantize_per_token(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """x [M, K] -> (int8 [M, K], float32 scales [M]); the torch reference of the C++ op."""
    xf = x.float()
    amax = xf.abs().amax(dim=-1)
    scale = torch.where(amax > 0, amax / 127.0, torch.ones_like(amax))
    return (xf / scale[:, None]).round().clamp(-128, 127).to(torch.int8), scale


def int_mm(xq: torch.Tensor, wq: torch.Tensor) -> torch.Tensor:
    """xq [M, K] int8 @ wq[N, K]^T -> int32 [M, N] (float32 products where `_int_mm` can't run)."""
    m, k = xq.shape
    if xq.device.type == "cpu" or (m > 16 and k % 8 == 0 and wq.shape[0] % 8 == 0):
        return torch._int_mm(xq, wq.t())
    return torch.mm(xq.float(), wq.float().t()).round().to(torch.int32)


class W8A8Method(QuantizedLinearMethod):
    """Static int8 weights, dynamic int8 activations (see the module docstring)."""

    def process_weights_after_loading(self, layer: nn.Module) -> None:
        layer.w8 = layer.qweight.contiguous()  # [N, K] int8
        layer.w8_scale = layer.scales.float().reshape(-1).contiguous()  # [N]
        self.ops = cpu_kernels.ops() if layer.w8.device.type == "cpu" else None
        self.drop_checkpoint_tensors(layer)

    def apply_2d(self, layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
        if self.ops is not None:
            xq, xs = self.ops.quantize_per_token(x.contiguous())
            acc = torch._int_mm(xq, layer.w8.t())
            return self.ops.w8a8_scale(acc, xs, layer.w8_scale, layer.bias, x.dtype)
        xq, xs = quantize_per_token(x)
        y = int_mm(xq, layer.w8).float() * xs[:, None] * layer.w8_scale[None, :]
        if layer.bias is not None:
            y = y + layer.bias.float()
        return y.to(x.dtype)

    def rows(self, layer: nn.Module, ids: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        return (layer.w8[ids].float() * layer.w8_scale[ids, None]).to(dtype)
