"""What every model offers the runner, and the shared weight-loading walk."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from neutrino.config import ModelConfig
from neutrino.errors import CheckpointError
from neutrino.layers.attention.metadata import AttentionMetadata
from neutrino.layers.linear import Linear


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
        """Copy checkpoint tensors into parameters; every parameter must be loaded exactly once."""
        params = dict(self.named_parameters())
        loaded: set[str] = set()
        for raw_name, raw_tensor in weights:
            mapped = self.map_name(raw_name, raw_tensor)
            if mapped is None:
                continue
            name, tensor = mapped
            loaded.add(self._load_one(name, tensor, params, source))
        missing = sorted(set(params) - loaded - self._optional_params())
        if missing:
            raise CheckpointError(f"{source}: missing tensors for {missing[:8]}{'...' if len(missing) > 8 else ''}")
        self.tie_weights()
        for module in self.modules():
            if isinstance(module, Linear):
                module.quant_method.process_weights_after_loading(module)

    def _optional_params(self) -> set[str]:
        """Parameters a checkpoint may omit: the lm_head when embeddings are tied."""
        return {"lm_head.weight"} if self.config.tie_word_embeddings else set()

    def tie_weights(self) -> None:
        """Called after loading, before weights are repacked: a tied lm_head takes the embeddings."""
        if self.config.tie_word_embeddings:
            self.lm_head.weight.data = self.input_embeddings().weight.data

    def _load_one(self, name: str, tensor: torch.Tensor, params: dict, source: str) -> str:
        for fused, part, shard in self.stacked_params:
            if part in name:
                target = name.replace(part, fused)
                module_name, _, kind = target.rpartition(".")
                module = self.get_submodule(module_name) if target in params else None
                if module is None:
                    raise CheckpointError(f"{source}: unexpected tensor {name!r} (no parameter {target!r})")
                module.load_shard(kind, tensor, shard)
                return target
        if name not in params:
            raise CheckpointError(f"{source}: unexpected tensor {name!r} for {type(self).__name__}")
        param = params[name]
        if tuple(param.shape) != tuple(tensor.shape):
            raise CheckpointError(
                f"{source}: tensor {name!r} has shape {tuple(tensor.shape)}, expected {tuple(param.shape)}"
            )
        param.data.copy_(tensor)
        return name
