"""Linear layers whose weights are owned by a QuantMethod, with fused (merged) variants."""

from __future__ import annotations

import torch
from torch import nn

from neutrino.errors import CheckpointError
from neutrino.layers.quant.base import QuantMethod, UnquantizedLinearMethod


class Linear(nn.Module):
    """`y = x W^T + b`; `output_sizes` > 1 entries makes it a fused projection (e.g. q|k|v)
    whose shards are loaded one by one with `load_shard`."""

    def __init__(
        self,
        in_features: int,
        output_sizes: int | list[int],
        bias: bool = False,
        dtype: torch.dtype = torch.float32,
        quant_method: QuantMethod | None = None,
        prefix: str = "",
    ) -> None:
        super().__init__()
        self.output_sizes = [output_sizes] if isinstance(output_sizes, int) else list(output_sizes)
        self.in_features = in_features
        self.out_features = sum(self.output_sizes)
        self.prefix = prefix
        self.quant_method = quant_method or UnquantizedLinearMethod()
        self.quant_method.create_weights(self, in_features, self.out_features, bias, dtype)

    def load_shard(self, name: str, loaded: torch.Tensor, shard: int = 0) -> None:
        """Copy a checkpoint tensor (`weight` [out_i, in] or `bias` [out_i]) into shard `shard`."""
        param = getattr(self, name, None)
        if param is None:
            raise CheckpointError(f"{self.prefix}: checkpoint has a {name!r} this layer does not have")
        start = sum(self.output_sizes[:shard])
        size = self.output_sizes[shard]
        target = param.data.narrow(0, start, size)
        if tuple(loaded.shape) != tuple(target.shape):
            raise CheckpointError(
                f"tensor for {self.prefix}.{name} (shard {shard}) has shape {tuple(loaded.shape)}, "
                f"expected {tuple(target.shape)}"
            )
        target.copy_(loaded)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.quant_method.apply(self, x)
