"""What every model offers the runner, and the shared weight-loading walk."""

from __future__ import annotations

from collections.abc import Collection, Iterable

import torch
from torch import nn

from neutrino.config import ModelConfig
from neutrino.errors import CheckpointError
from neutrino.layers.attention.metadata import AttentionMetadata
from neutrino.layers.linear import Linear, adoptable
from neutrino.layers.quant.embedding import tie_lm_head


class CausalLM(nn.Module):
    """A decoder-only LM: `forward` maps a flat batch to hidden states, `compute_logits` to logits.

    Subclasses define `stacked_params`: (fused module suffix, checkpoint suffix, shard index) triples,
    and may override `map_name` to rename or skip checkpoint tensors.
    """

    stacked_params: tuple[tuple[str, str, int], ...] = ()

    def forward(
        self,
        input_ids: torch.Tensor,  # [T]
        positions: torch.Tensor,  # [T]
        kv_caches: list[torch.Tensor],  # per layer [2, num_blocks, block_size, Hkv, D]
        meta: AttentionMetadata,
    ) -> torch.Tensor:  # [T, hidden]
        raise NotImplementedError

    config: ModelConfig
    lm_head: Linear

    def input_embeddings(self) -> nn.Embedding:
        """The token embedding table (the lm_head's source when embeddings are tied)."""
        raise NotImplementedError

    def compute_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """hidden [N, hidden] -> float32 logits [N, vocab]."""
        return self.lm_head(hidden).float()

    def is_tied_head_copy(self, name: str) -> bool:
        """A checkpoint's lm_head tensor that tied embeddings make redundant (some checkpoints store it)."""
        return name == "lm_head.weight" and self.config.tie_word_embeddings

    def map_name(self, name: str, tensor: torch.Tensor) -> tuple[str, torch.Tensor] | None:
        """Translate a checkpoint name (and tensor) to this module's naming; None skips it."""
        return name, tensor

    def load_weights(self, weights: Iterable[tuple[str, torch.Tensor]], source: str) -> None:
        """Copy checkpoint tensors into parameters; every parameter (every shard of a fused one) must be
        loaded exactly once."""
        params = dict(self.named_parameters())
        loaded: dict[str, set[int]] = {}
        for raw_name, raw_tensor in weights:
            mapped = self.map_name(raw_name, raw_tensor)
            if mapped is None:
                continue
            name, tensor = mapped
            target, shard = self._load_one(name, tensor, params, source)
            loaded.setdefault(target, set()).add(shard)
        self._check_complete(params, loaded, source)
        self.tie_weights(loaded)
        for module in self.modules():
            if isinstance(module, Linear):
                module.quant_method.process_weights_after_loading(module)

    def _optional_params(self) -> set[str]:
        """Parameters a checkpoint may omit: the lm_head's when embeddings are tied."""
        if not self.config.tie_word_embeddings:
            return set()
        return {f"lm_head.{name}" for name, _ in self.lm_head.named_parameters()}

    def _check_complete(self, params: dict, loaded: dict[str, set[int]], source: str) -> None:
        missing, optional = [], self._optional_params()
        for name, param in params.items():
            if name in optional:
                continue
            module = self.get_submodule(name.rpartition(".")[0])
            sizes = module.output_sizes if isinstance(module, Linear) else [param.shape[0] if param.dim() else 0]
            for shard in sorted(set(range(len(sizes))) - loaded.get(name, set())):
                shape = [sizes[shard], *param.shape[1:]] if param.dim() else []
                missing.append(f"{self._part_name(name, shard)} {shape}")
        if missing:
            more = "..." if len(missing) > 8 else ""
            raise CheckpointError(f"{source}: missing tensors (name [shape]) {missing[:8]}{more}")

    def _part_name(self, target: str, shard: int) -> str:
        """The checkpoint name of shard `shard` of parameter `target` (e.g. k_proj for qkv_proj, shard 1)."""
        for fused, part, index in self.stacked_params:
            if index == shard and f".{fused}." in target:
                return target.replace(f".{fused}.", f".{part}.")
        return target

    def tie_weights(self, loaded: Collection[str] = ()) -> None:
        """Called after loading, before weights are repacked: a tied lm_head takes the embeddings (see
        `tie_lm_head` for quantized lm_heads)."""
        if self.config.tie_word_embeddings:
            tie_lm_head(self.lm_head, self.input_embeddings(), loaded)

    def _load_one(self, name: str, tensor: torch.Tensor, params: dict, source: str) -> tuple[str, int]:
        target, shard = name, 0
        for fused, part, index in self.stacked_params:
            if part in name:
                target, shard = name.replace(part, fused), index
                break
        if target not in params:
            raise CheckpointError(f"{source}: unexpected tensor {name!r} for {type(self).__name__}"
                                  + (f" (no parameter {target!r})" if target != name else ""))
        module_name, _, kind = target.rpartition(".")
        module = self.get_submodule(module_name) if module_name else self
        try:
            if isinstance(module, Linear):
                module.load_shard(kind, tensor, shard)
            else:
                _copy_checked(params[target], tensor)
        except CheckpointError as e:
            raise CheckpointError(f"{source}: tensor {name!r} {e}") from None
        return target, shard


def _copy_checked(param: torch.Tensor, tensor: torch.Tensor) -> None:
    if tuple(param.shape) != tuple(tensor.shape):
        raise CheckpointError(f"has shape {list(tensor.shape)}, expected {list(param.shape)}")
    if adoptable(param, tensor):
        param.data = tensor
    else:
        param.data.copy_(tensor)
