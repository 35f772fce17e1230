"""Offline throughput benchmark: Neutrino vs transformers' batched `generate`, same workload and dtype.

Workload: N requests with prompt lengths uniform in [min, max] tokens of real text (gensim's
lee_background.cor), `output_len` new tokens each (EOS ignored). Also batch-1 decode tokens/s and time to
first token. Writes JSON with both sides and the ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from datetime import UTC, datetime
from pathlib import Path

import torch

from neutrino.bench.workload import make_prompts

_DTYPES = {"bfloat16": torch.bfloat16, "float32": torch.float32, "float16": torch.float16}


def build_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    p = parser or argparse.ArgumentParser(description=__doc__)
    p.add_argument("--model", default=None, help="HF dir or .gguf (default: embedded SmolLM2)")
    p.add_argument("--dtype", default="bfloat16", choices=sorted(_DTYPES))
    p.add_argument("--num-requests", type=int, default=64)
    p.add_argument("--min-prompt", type=int, default=64)
    p.add_argument("--max-prompt", type=int, default=512)
    p.add_argument("--output-len", type=int, default=128)
    p.add_argument("--batch1-prompt", type=int, default=256, help="prompt tokens for the batch-1 run")
    p.add_argument("--hf-batch-size", type=int, default=32, help="transformers generate() batch size")
    p.add_argument("--max-num-seqs", type=int, default=64)
    p.add_argument("--max-num-batched-tokens", type=int, default=2048)
    p.add_argument("--no-peer", action="store_true", help="skip transformers")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out", default=None, help="write the JSON here (default: stdout only)")
    return p


def _neutrino(ns, prompts, batch1_prompt) -> tuple[dict, str]:
    from neutrino import LLM, SamplingParams

    llm = LLM(model=ns.model, dtype=ns.dtype, max_num_seqs=ns.max_num_seqs,
              max_num_batched_tokens=ns.max_num_batched_tokens, num_threads=ns.threads,
              enable_prefix_caching=False)
    params = SamplingParams(temperature=0, max_tokens=ns.output_len, ignore_eos=True)
    llm.generate([batch1_prompt[:32]], SamplingParams(temperature=0, max_tokens=8))  # warm-up
    start = time.perf_counter()
    outs = llm.generate(prompts, params)
    elapsed = time.perf_counter() - start
    generated = sum(len(o.outputs[0].token_ids) for o in outs)
    result = _throughput(prompts, generated, elapsed)
    result.update(_neutrino_batch1(llm, batch1_prompt, ns.output_len))
    return result, str(llm.engine.resolved.path)


def _neutrino_batch1(llm, prompt, output_len) -> dict:
    from neutrino import SamplingParams

    params = SamplingParams(temperature=0, max_tokens=output_len, ignore_eos=True)
    start = time.perf_counter()
    first = None
    for _ in llm.stream(prompt, params):
        if first is None:
            first = time.perf_counter()
    end = time.perf_counter()
    return {"ttft_s": first - start, "batch1_decode_tok_s": (output_len - 1) / (end - first)}


def _throughput(prompts, generated: int, elapsed: float) -> dict:
    prompt_tokens = sum(len(p) for p in prompts)
    return {
        "elapsed_s": elapsed,
        "prompt_tokens": prompt_tokens,
        "generated_tokens": generated,
        "output_tok_s": generated / elapsed,
        "total_tok_s": (prompt_tokens + generated) / elapsed,
    }


def _transformers(ns, model_dir: str, prompts, batch1_prompt) -> dict:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=_DTYPES[ns.dtype]).eval()
    pad = model.config.eos_token_id if isinstance(model.config.eos_token_id, int) else 0
    _hf_generate(model, [batch1_prompt[:32]], 8, pad)  # warm-up
    start = time.perf_counter()
    generated = 0
    for i in range(0, len(prompts), ns.hf_batch_size):
        generated += _hf_generate(model, prompts[i : i + ns.hf_batch_size], ns.output_len, pad)
    elapsed = time.perf_counter() - start
    result = _throughput(prompts, generated, elapsed)
    t0 = time.perf_counter()
    _hf_generate(model, [batch1_prompt], 1, pad)
    ttft = time.perf_counter() - t0
    t0 = time.perf_counter()
    _hf_generate(model, [batch1_prompt], ns.output_len, pad)
    total = time.perf_counter() - t0
    result.update({"ttft_s": ttft, "batch1_decode_tok_s": (ns.output_len - 1) / (total - ttft)})
    return result


@torch.inference_mode()
def _hf_generate(model, prompts: list[list[int]], new_tokens: int, pad: int) -> int:
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for row, p in enumerate(prompts):  # left padding
        ids[row, width - len(p):] = torch.tensor(p)
        mask[row, width - len(p):] = 1
    out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                         do_sample=False, pad_token_id=pad)
    return (out.shape[1] - width) * len(prompts)


def machine_description() -> str:
    """CPU model, the matrix ISA flags that matter here, and torch's thread count."""
    model, flags = platform.processor() or platform.machine(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and ":" in line:
                model = line.split(":", 1)[1].strip()
            elif line.startswith("flags") and ":" in line:
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    isa = [f for f in ("avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_int8") if f in flags]
    return f"{model}, {os.cpu_count()} vCPU, {' '.join(isa) or 'no AVX-512'}, torch threads {torch.get_num_threads()}"


def run(ns: argparse.Namespace) -> dict:
    from neutrino.weights.resolve import resolve_model
    from neutrino.weights.tokenizer import load_tokenizer

    if ns.threads:
        torch.set_num_threads(ns.threads)
    tokenizer = load_tokenizer(resolve_model(ns.model).path)
    prompts = make_prompts(tokenizer, ns.num_requests, ns.min_prompt, ns.max_prompt, seed=0)
    batch1 = make_prompts(tokenizer, 1, ns.batch1_prompt, ns.batch1_prompt, seed=1)[0]
    report: dict = {
        "benchmark": "throughput",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine_description(),
        "torch": torch.__version__,
        "workload": {k: getattr(ns, k) for k in ("num_requests", "min_prompt", "max_prompt", "output_len",
                                                 "batch1_prompt", "dtype", "hf_batch_size")},
    }
    report["neutrino"], model_dir = _neutrino(ns, prompts, batch1)
    if not ns.no_peer:
        report["transformers"] = _transformers(ns, model_dir, prompts, batch1)
        n, t = report["neutrino"], report["transformers"]
        report["ratios"] = {
            "output_tok_s": n["output_tok_s"] / t["output_tok_s"],
            "total_tok_s": n["total_tok_s"] / t["total_tok_s"],
            "batch1_decode_tok_s": n["batch1_decode_tok_s"] / t["batch1_decode_tok_s"],
            "ttft_speedup": t["ttft_s"] / n["ttft_s"],
        }
    return report


def main(argv: list[str] | None = None, ns: argparse.Namespace | None = None) -> int:
    ns = ns or build_parser().parse_args(argv)
    report = run(ns)
    text = json.dumps(report, indent=2)
    print(text)
    if ns.out:
        path = Path(ns.out)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(text + "\n")
        tmp.replace(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
