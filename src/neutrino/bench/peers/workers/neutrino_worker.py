"""Neutrino's worker (the project's venv): the offline `LLM` API, prefix caching off."""

from __future__ import annotations

from typing import Any

from common import Generate, main


def build(job: dict[str, Any]) -> Generate:
    from neutrino import LLM, SamplingParams

    e = job["engine"]
    llm = LLM(model=e["model"], dtype=e["dtype"], gguf_native=e.get("gguf_native", False),
              max_num_seqs=e["max_num_seqs"], max_num_batched_tokens=e["max_num_batched_tokens"],
              kv_cache_memory=e["kv_cache_bytes"], num_threads=e["threads"], enable_prefix_caching=False)

    def generate(prompts: list[list[int]], max_tokens: int) -> int:
        params = SamplingParams(temperature=0, max_tokens=max_tokens, ignore_eos=True)
        return sum(len(o.outputs[0].token_ids) for o in llm.generate(prompts, params))

    return generate


if __name__ == "__main__":
    main(build)
