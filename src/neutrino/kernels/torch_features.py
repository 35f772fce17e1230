"""What torch's own CPU kernels can do on this machine (as opposed to which Neutrino variant loads)."""

from __future__ import annotations

import functools

import torch


@functools.cache
def cpu_has_bf16_gemm() -> bool:
    """Whether oneDNN runs bf16 matrix products natively here (AVX-512 BW/VL/DQ, AVX-NE-CONVERT or AMX).
    Without it (AVX2 only) torch's bf16 matmul runs at a flat ~15 GFLOP/s on 2 cores, 7x below float32
    at batch 32 (measured on a 2-vCPU AMD EPYC, 2026-12-03)."""
    mkldnn = torch.ops.mkldnn
    return (torch.backends.mkldnn.is_available() and hasattr(mkldnn, "_is_mkldnn_bf16_supported")
            and bool(mkldnn._is_mkldnn_bf16_supported()))
