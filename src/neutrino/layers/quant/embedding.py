"""Quantized token embeddings (GGUF native: llama.cpp keeps `token_embd` quantized, often tied to the
output layer) and the tied-lm_head rules for quantized checkpoints."""

from __future__ import annotations

from collections.abc import Collection

import torch
from torch import nn

from neutrino.layers.linear import Linear
from neutrino.layers.quant.base import UnquantizedLinearMethod
from neutrino.layers.quant.quantized import QuantizedLinearMethod


class QuantizedEmbedding(Linear):
    """A [vocab, hidden] table stored in a low-bit format. Given token ids it returns their dequantized
    rows ([..., hidden], the model dtype); given hidden states it is the tied lm_head (x @ table^T on the
    format's kernel), so one quantized copy serves both."""

    def __init__(self, num_embeddings: int, embedding_dim: int, dtype: torch.dtype,
                 quant_method: QuantizedLinearMethod, prefix: str) -> None:
        super().__init__(embedding_dim, num_embeddings, False, dtype, quant_method=quant_method, prefix=prefix)
        self.embedding_dtype = dtype

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.is_floating_point():
            return super().forward(x)
        method: QuantizedLinearMethod = self.quant_method  # type: ignore[assignment]
        rows = method.rows(self, x.reshape(-1), self.embedding_dtype)
        return rows.view(*x.shape, rows.shape[-1])


def quantize_embedding(model: nn.Module, method: QuantizedLinearMethod, prefix: str) -> QuantizedEmbedding:
    """Replace `model.input_embeddings()` by a QuantizedEmbedding (before loading); with tied embeddings
    the lm_head becomes the same module."""
    old = model.input_embeddings()
    table = QuantizedEmbedding(old.num_embeddings, old.embedding_dim, old.weight.dtype, method, prefix)
    for name, child in model.named_children():
        if child is old:
            setattr(model, name, table)
    if model.config.tie_word_embeddings:
        model.lm_head = table
    return table


def tie_lm_head(lm_head: Linear, embedding: nn.Module, loaded: Collection[str]) -> None:
    """Tie a dense lm_head to the embeddings. A quantized lm_head keeps its own tensors when the checkpoint
    has them (`lm_head.qweight` in `loaded`); otherwise it becomes dense and takes the embeddings. On CPU
    a bf16 head is then prepacked for oneDNN (`UnquantizedLinearMethod`): a second copy of the table,
    kept for speed (a plain-layout head costs 2-4 ms more per batch-1 step of SmolLM2); a checkpoint
    whose tied pair is quantized stores and holds it once."""
    if lm_head is embedding:
        return
    if not isinstance(lm_head.quant_method, UnquantizedLinearMethod):
        if "lm_head.qweight" in loaded:
            return
        for name in list(lm_head._parameters):
            delattr(lm_head, name)
        lm_head.quant_method = UnquantizedLinearMethod()
        lm_head.register_parameter("weight", nn.Parameter(embedding.weight.data, requires_grad=False))
        lm_head.register_parameter("bias", None)
    else:
        lm_head.weight.data = embedding.weight.data
