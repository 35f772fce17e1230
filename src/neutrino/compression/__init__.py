"""Compression toolkit: quantization, pruning and distillation produce checkpoints; `evaluate` measures
them (perplexity, zero-shot accuracy, size, speed) on a fixed protocol and reports the trade-offs."""
