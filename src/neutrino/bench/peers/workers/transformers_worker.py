"""transformers' worker (the project's venv): batched `generate` with left padding, in chunks."""

from __future__ import annotations

from typing import Any

from common import Generate, main


def build(job: dict[str, Any]) -> Generate:
    import torch
    from transformers import AutoModelForCausalLM

    e = job["engine"]
    torch.set_num_threads(e["threads"])
    model = AutoModelForCausalLM.from_pretrained(e["model"], dtype=getattr(torch, e["dtype"])).eval()
    pad = model.config.eos_token_id if isinstance(model.config.eos_token_id, int) else 0

    @torch.inference_mode()
    def chunk(prompts: list[list[int]], new: int) -> int:
        width = max(len(p) for p in prompts)
        ids = torch.full((len(prompts), width), pad, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for row, p in enumerate(prompts):
            ids[row, width - len(p):] = torch.tensor(p)
            mask[row, width - len(p):] = 1
        out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=new, min_new_tokens=new,
                             do_sample=False, pad_token_id=pad)
        return int(out.shape[1] - width) * len(prompts)

    def generate(prompts: list[list[int]], max_tokens: int) -> int:
        size = e["batch_size"]
        return sum(chunk(prompts[i:i + size], max_tokens) for i in range(0, len(prompts), size))

    return generate


if __name__ == "__main__":
    main(build)
