"""Runs llm-compressor's GPTQ in ITS OWN virtual environment (never the project's): called by
`benchmarks/gptq_reference.py` as `LLMC_PYTHON llmcompressor_gptq.py SRC CALIB.pt OUT BITS GROUP ACTORDER
DAMP`. It quantizes the float32 model SRC with `GPTQModifier` (symmetric int weights, groups of GROUP,
lm_head ignored) on the given calibration ids, checks that every weight lies on its grid, and saves a
dense float32 HF directory with the quantize-dequantized weights, so the caller evaluates it with the
same protocol and engine as Neutrino's checkpoints. Prints one JSON line with its timing."""

import json
import shutil
import sys
import time
from pathlib import Path

import torch
from compressed_tensors.quantization import QuantizationArgs, QuantizationScheme
from datasets import Dataset
from llmcompressor import oneshot
from llmcompressor.modifiers.gptq import GPTQModifier
from transformers import AutoModelForCausalLM


def main() -> None:
    src, calib, out, bits, group, actorder, damp = sys.argv[1:8]
    ids = torch.load(calib)
    data = Dataset.from_dict({"input_ids": ids.tolist(), "attention_mask": torch.ones_like(ids).tolist()})
    model = AutoModelForCausalLM.from_pretrained(src, dtype=torch.float32)
    scheme = QuantizationScheme(targets=["Linear"], weights=QuantizationArgs(
        num_bits=int(bits), symmetric=True, strategy="group", group_size=int(group)))
    modifier = GPTQModifier(config_groups={"group_0": scheme}, ignore=["lm_head"], block_size=128,
                            dampening_frac=float(damp), actorder=None if actorder == "none" else actorder)
    start = time.perf_counter()
    oneshot(model=model, dataset=data, recipe=[modifier], num_calibration_samples=ids.shape[0],
            max_seq_length=ids.shape[1])
    seconds = time.perf_counter() - start
    weights = {}
    qmax = 2 ** (int(bits) - 1)
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear) and name != "lm_head":
            w, s = module.weight.detach().float(), module.weight_scale.detach().float()
            q = w.view(w.shape[0], s.shape[1], -1) / s[..., None]
            if (q - q.round()).abs().max() > 1e-3 or q.min() < -qmax - 1e-3 or q.max() > qmax - 1 + 1e-3:
                raise SystemExit(f"{name}: weights are not on the {bits}-bit grid")
            weights[name] = w.clone()
    dense = AutoModelForCausalLM.from_pretrained(src, dtype=torch.float32)
    for name, w in weights.items():
        dense.get_submodule(name).weight.data.copy_(w)
    dense.save_pretrained(out)
    for f in Path(src).iterdir():
        if f.name.startswith(("tokenizer", "special_tokens", "chat_template", "generation_config")):
            shutil.copy(f, Path(out) / f.name)
    print(json.dumps({"seconds": seconds, "quantized_linears": len(weights)}))


if __name__ == "__main__":
    main()
