"""vLLM's worker (its own venv): `vllm.LLM` on the CPU backend; the caller sets VLLM_CPU_* in the env."""

from __future__ import annotations

from typing import Any

from common import Generate, main


def build(job: dict[str, Any]) -> Generate:
    from vllm import LLM, SamplingParams

    e = job["engine"]
    llm = LLM(model=e["model"], dtype=e["dtype"], max_num_seqs=e["max_num_seqs"],
              max_num_batched_tokens=e["max_num_batched_tokens"], enable_prefix_caching=False,
              max_model_len=e["max_model_len"])

    def generate(prompts: list[list[int]], max_tokens: int) -> int:
        params = SamplingParams(temperature=0, max_tokens=max_tokens, ignore_eos=True)
        outs = llm.generate([{"prompt_token_ids": p} for p in prompts], params, use_tqdm=False)
        return sum(len(o.outputs[0].token_ids) for o in outs)

    return generate


if __name__ == "__main__":
    main(build)
