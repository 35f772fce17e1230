"""OpenVINO GenAI's worker (its own venv): `LLMPipeline` for single prompts, as a batch-1 user runs it,
and `ContinuousBatchingPipeline` (the cache budget of the job) for batches; the caller sets the
precision and thread properties."""

from __future__ import annotations

from typing import Any

from common import Generate, main


def build(job: dict[str, Any]) -> Generate:
    import numpy as np
    import openvino as ov
    import openvino_genai as g

    e = job["engine"]
    props = {"INFERENCE_PRECISION_HINT": e["precision_hint"], "INFERENCE_NUM_THREADS": e["threads"],
             "KV_CACHE_PRECISION": e["kv_precision"]}
    if e["pipeline"] == "batch":
        sched = g.SchedulerConfig()
        sched.cache_size = max(1, e["kv_cache_bytes"] // 2**30)
        sched.max_num_seqs = e["max_num_seqs"]
        sched.max_num_batched_tokens = e["max_num_batched_tokens"]
        sched.dynamic_split_fuse = True
        sched.enable_prefix_caching = False
        pipe: Any = g.ContinuousBatchingPipeline(e["model"], sched, "CPU", props)
    else:
        pipe = g.LLMPipeline(e["model"], "CPU", **props)
        pipe.get_generation_config()  # built

    def config(max_tokens: int) -> Any:
        c = g.GenerationConfig()
        c.max_new_tokens = c.min_new_tokens = max_tokens
        c.ignore_eos, c.do_sample = True, False
        return c

    def tensor(p: list[int]) -> Any:
        return ov.Tensor(np.array([p], dtype=np.int64))

    def generate(prompts: list[list[int]], max_tokens: int) -> int:
        if e["pipeline"] == "batch":
            outs = pipe.generate([tensor(p) for p in prompts], [config(max_tokens)] * len(prompts))
            return sum(len(o.m_generation_ids[0]) for o in outs)
        total = 0
        for p in prompts:
            out = pipe.generate(g.TokenizedInputs(tensor(p), ov.Tensor(np.ones((1, len(p)), np.int64))),
                                config(max_tokens))
            total += len(out.tokens[0])
        return total

    return generate


if __name__ == "__main__":
    main(build)
