"""Each QuantMethod against the dense weight it stands for, layer by layer: the C++ kernel (small
batches), the dequantize-and-GEMM path (large batches), the fallbacks without the C++ library, embedding
rows, fused shards, W8A8's integer arithmetic, and what stays resident.

Tolerances: float32 max |y - y_ref| <= 1e-5 * max |y_ref| (fp32 accumulation order only); bfloat16
<= 2e-2 * max |y_ref| (activations and output rounded to bf16, scales to fp16)."""

from __future__ import annotations

import pytest
import torch
from rtn import rtn, rtn_min

from neutrino.layers.linear import Linear
from neutrino.layers.quant import cpu_kernels
from neutrino.layers.quant.format import QuantFormat
from neutrino.layers.quant.int4 import cpu_layout_ok
from neutrino.layers.quant.registry import quant_method_for
from neutrino.layers.quant.w8a8 import quantize_per_token

FP32_RTOL, BF16_RTOL = 1e-5, 2e-2
# (bits, group_size, zero kind): every weight-only encoding, incl. GGUF's w = q * s + m
WEIGHT_ONLY = [(8, -1, "none"), (8, -1, "code"), (8, 32, "none"), (8, 64, "code"), (4, 32, "none"),
               (4, 32, "code"), (4, -1, "none"), (4, 64, "code"), (3, 32, "none"), (4, 32, "min")]
IDS = [f"b{b}-g{g}-{z}" for b, g, z in WEIGHT_ONLY]


def make_layer(fmt: QuantFormat, n: int = 96, k: int = 128, dtype=torch.float32, output_sizes=None,
               bias: bool = True, seed: int = 0):
    """A Linear of `fmt` loaded with RTN codes of a random weight; returns (layer, dense float32 W, bias)."""
    gen = torch.Generator().manual_seed(seed)
    w = torch.randn(n, k, generator=gen) * 0.1
    if fmt.zero == "min":
        tensors, deq = rtn_min(w, fmt.group_size)
    else:
        tensors, deq = rtn(w, fmt.bits, fmt.group_size, fmt.zero == "none")
    b = torch.randn(n, generator=gen) if bias else None
    layer = Linear(k, output_sizes or n, bias, dtype, quant_method=quant_method_for(fmt, "layer"), prefix="layer")
    start = 0
    for shard, size in enumerate(layer.output_sizes):
        for name, t in tensors.items():
            layer.load_shard(name, t[start:start + size], shard)
        if b is not None:
            layer.load_shard("bias", b[start:start + size], shard)
        start += size
    layer.quant_method.process_weights_after_loading(layer)
    return layer, deq, b


def check(layer, deq, b, x: torch.Tensor, rtol: float) -> None:
    ref = torch.nn.functional.linear(x.float(), deq, b)
    y = layer(x)
    assert y.dtype == x.dtype and y.shape == ref.shape
    err = float((y.float() - ref).abs().max())
    assert err <= rtol * float(ref.abs().max()), f"max error {err:.3e}"


@pytest.mark.parametrize(("bits", "group", "zero"), WEIGHT_ONLY, ids=IDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_weight_only_kernel_and_dequant_paths(bits, group, zero, dtype, monkeypatch) -> None:
    layer, deq, b = make_layer(QuantFormat(bits, group, zero), dtype=dtype)
    method = layer.quant_method
    assert method.path == "kernel", cpu_kernels.last_error
    rtol = FP32_RTOL if dtype == torch.float32 else BF16_RTOL
    gen = torch.Generator().manual_seed(1)
    for m in (1, 3, 17, 40):  # 1, 3: the kernel; 17, 40: past max_kernel_tokens (dequantize + GEMM)
        check(layer, deq, b, torch.randn(m, 128, generator=gen).to(dtype), rtol)
    monkeypatch.setattr(type(method), "max_kernel_tokens", 0)  # every batch through dequantize + GEMM
    check(layer, deq, b, torch.randn(5, 128, generator=gen).to(dtype), rtol)
    ids = torch.tensor([0, 17, 95, 17])
    torch.testing.assert_close(method.rows(layer, ids, torch.float32), deq[ids], rtol=1e-6, atol=1e-6 * float(deq.abs().max()) + 1e-3 * (dtype != torch.float32))


@pytest.mark.parametrize(("bits", "group", "zero", "path"), [
    (8, -1, "none", "aten"), (8, 32, "none", "torch"), (8, -1, "code", "torch"), (4, 32, "code", "aten"),
    (4, -1, "none", "aten"), (4, 16, "none", "torch"), (3, 32, "none", "aten"), (4, 32, "min", "aten")])
def test_fallbacks_without_cpp_kernels(bits, group, zero, path, monkeypatch) -> None:
    monkeypatch.setattr(cpu_kernels, "ops", lambda: None)
    layer, deq, b = make_layer(QuantFormat(bits, group, zero))
    if bits < 8 and not cpu_layout_ok():  # torch packs int4 differently on this CPU (AVX2): dequantize
        path = "torch"
    assert layer.quant_method.path == path
    gen = torch.Generator().manual_seed(2)
    for m in (1, 40):
        check(layer, deq, b, torch.randn(m, 128, generator=gen), FP32_RTOL)
    ids = torch.tensor([3, 64, 95])
    torch.testing.assert_close(layer.quant_method.rows(layer, ids, torch.float32), deq[ids])


def test_group_sizes_the_kernel_does_not_block_use_the_torch_path() -> None:
    layer, deq, b = make_layer(QuantFormat(4, 32, "none"), n=40)  # N % 16 != 0
    assert layer.quant_method.path == "torch"
    check(layer, deq, b, torch.randn(2, 128), FP32_RTOL)


def test_fused_shards_load_row_blocks_and_3d_inputs() -> None:
    layer, deq, b = make_layer(QuantFormat(4, 32, "code"), output_sizes=[64, 16, 16])
    x = torch.randn(2, 3, 128)
    torch.testing.assert_close(layer(x), torch.nn.functional.linear(x, deq, b), rtol=1e-5, atol=1e-5)


def test_no_dense_copy_stays_resident() -> None:
    for fmt, code_bytes in ((QuantFormat(8, 32, "none"), 96 * 128), (QuantFormat(4, 32, "code"), 96 * 64)):
        layer, _, _ = make_layer(fmt, dtype=torch.bfloat16, bias=False)
        tensors = [t for t in vars(layer).values() if isinstance(t, torch.Tensor)] + list(layer.parameters())
        assert not any(t.is_floating_point() and t.numel() >= 96 * 128 for t in tensors)
        groups = 128 // 32
        expected = code_bytes + (1 if fmt.zero == "none" else 2) * 96 * groups * 2  # fp16 scales (offsets)
        assert sum(t.numel() * t.element_size() for t in tensors) == expected


@pytest.mark.parametrize("cpp", [True, False], ids=["cpp", "torch"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_w8a8_is_exact_integer_arithmetic(cpp, dtype, monkeypatch) -> None:
    """y = (sum_k xq wq) * x_scale * w_scale + b with per-token dynamic int8 xq: equal to a float64
    emulation of that formula up to the final rounding."""
    if not cpp:
        monkeypatch.setattr(cpu_kernels, "ops", lambda: None)
    layer, deq, b = make_layer(QuantFormat(8, -1, "none", "w8a8"), dtype=dtype)
    gen = torch.Generator().manual_seed(3)
    for m in (1, 33):
        x = torch.randn(m, 128, generator=gen).to(dtype)
        xq, xs = quantize_per_token(x)
        wq, ws = layer.w8.double(), layer.w8_scale.double()
        ref = (xq.double() @ wq.t()) * xs.double()[:, None] * ws[None, :] + b.double()
        y = layer(x)
        tol = 1e-6 if dtype == torch.float32 else 1e-2
        assert float((y.double() - ref).abs().max()) <= tol * float(ref.abs().max())
        assert float((y.float() - torch.nn.functional.linear(x.float(), deq, b)).abs().max()) <= 0.05 * float(ref.abs().max())


def test_cpp_quantize_per_token_matches_torch() -> None:
    ops = cpu_kernels.ops()
    if ops is None:
        pytest.skip(f"C++ kernels unavailable: {cpu_kernels.last_error}")
    x = torch.randn(7, 96) * torch.logspace(-3, 2, 7)[:, None]
    x[3] = 0
    xq, xs = ops.quantize_per_token(x)
    rq, rs = quantize_per_token(x)
    assert torch.equal(xq, rq) and torch.equal(xs, rs)
