"""Linear layers whose weights are owned by a QuantMethod, with fused (merged) variants."""

from __future__ import annotations

from typing import Protocol

import torch
from torch import nn

from neutrino.errors import CheckpointError
from neutrino.layers.quant.base import QuantMethod, UnquantizedLinearMethod


class QuantFactory(Protocol):
    """Picks a layer's QuantMethod by its (HF) name; None means dense (`layers.quant.registry.LinearQuant`)."""

    def method_for(self, prefix: str) -> QuantMethod | None: ...


def adoptable(param: torch.Tensor, loaded: torch.Tensor) -> bool:
    """Whether a loaded tensor can become the parameter as it is, without a copy: same shape, dtype and
    device, contiguous. Checkpoint tensors are copy-on-write maps of the file, so adopting them skips a
    first-touch copy of the weights at start-up (about 0.3-1 s for SmolLM2 in float32) and leaves the pages
    shared with the page cache until something writes them."""
    return (loaded.shape == param.shape and loaded.dtype == param.dtype and loaded.device == param.device
            and loaded.is_contiguous())


class Linear(nn.Module):
    """`y = x W^T + b`; `output_sizes` > 1 entries makes it a fused projection (e.g. q|k|v)
    whose shards are loaded one by one with `load_shard`. The weight format comes from `quant_method`,
    else from `quant.method_for(prefix)`, else it is dense."""

    def __init__(
        self,
        in_features: int,
        output_sizes: int | list[int],
        bias: bool = False,
        dtype: torch.dtype = torch.float32,
        quant_method: QuantMethod | None = None,
        prefix: str = "",
        quant: QuantFactory | None = None,
    ) -> None:
        super().__init__()
        self.output_sizes = [output_sizes] if isinstance(output_sizes, int) else list(output_sizes)
        self.in_features = in_features
        self.out_features = sum(self.output_sizes)
        self.prefix = prefix
        if quant_method is None and quant is not None:
            quant_method = quant.method_for(prefix)
        self.quant_method = quant_method or UnquantizedLinearMethod()
        self.quant_method.create_weights(self, in_features, self.out_features, bias, dtype)

    def load_shard(self, name: str, loaded: torch.Tensor, shard: int = 0) -> None:
        """Copy a checkpoint tensor (`weight`/`qweight`/`scales`/... [out_i, ...] or `bias` [out_i]) into
        shard `shard` (rows of output block `shard`)."""
        param = getattr(self, name, None)
        if param is None:
            raise CheckpointError(f"{self.prefix}: checkpoint has a {name!r} this layer does not have")
        start = sum(self.output_sizes[:shard])
        size = self.output_sizes[shard]
        target = param.data.narrow(0, start, size)
        if tuple(loaded.shape) != tuple(target.shape):
            raise CheckpointError(f"has shape {list(loaded.shape)}, expected {list(target.shape)}")
        if param.dtype.is_floating_point != loaded.dtype.is_floating_point or (
            not param.dtype.is_floating_point and param.dtype != loaded.dtype
        ):
            raise CheckpointError(f"has dtype {loaded.dtype}, expected {param.dtype}")
        if len(self.output_sizes) == 1 and adoptable(param, loaded):
            param.data = loaded
        else:
            target.copy_(loaded)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.quant_method.apply(self, x)
