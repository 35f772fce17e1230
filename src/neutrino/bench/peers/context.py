"""What every engine of one peer-benchmark run shares."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class RunContext:
    """What every engine of one run shares: threads, the equal KV budget, batch limits, where logs go."""

    threads: int
    kv_cache_bytes: int
    max_num_seqs: int
    max_num_batched_tokens: int
    max_model_len: int
    log_dir: Path
    timeout: float
    float_dtype: str  # the dtype "bf16" maps to on this machine for the engines that take a dtype
    extra: dict[str, Any] = field(default_factory=dict)

    def engine_fields(self) -> dict[str, Any]:
        return {"threads": self.threads, "kv_cache_bytes": self.kv_cache_bytes, "max_num_seqs": self.max_num_seqs,
                "max_num_batched_tokens": self.max_num_batched_tokens, "max_model_len": self.max_model_len}
