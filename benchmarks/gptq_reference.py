"""GPTQ against a reference implementation, llm-compressor's `GPTQModifier`, in the same run: same
float32 SmolLM2 checkpoint, the same calibration ids (Neutrino's default: samples x seq_len windows of
lee_background that leave the evaluated segments out), the same group size, bits and damping, and the
same evaluation (the `evaluate` protocol through Neutrino's engine in float32, on the Wikipedia excerpt,
a held-out corpus, and on the left-out lee_background segments).

llm-compressor lives in its own virtual environment (never the project's); build it once with
    python3 -m venv ~/.cache/neutrino-peers/llmc && ~/.cache/neutrino-peers/llmc/bin/pip install torch==2.13.0 \\
        llmcompressor==0.14.0.1
then
    python benchmarks/gptq_reference.py --out benchmarks/results/gptq_reference.json --actorder static none

Each result is the reference's dense quantize-dequantized weights written as an HF directory (checked to
lie on the grid) and evaluated like any Neutrino checkpoint; compare with the `w4-gptq*` rows of
`benchmarks/compression.py` run on the same day."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
EVAL_TASKS = "ppl-wiki,ppl-lee"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--llmc-python", default=str(Path.home() / ".cache/neutrino-peers/llmc/bin/python"))
    p.add_argument("--out", default=None, help="JSON results file (results are added to it)")
    p.add_argument("--bits", type=int, default=4)
    p.add_argument("--group-size", type=int, default=64)
    p.add_argument("--damp", type=float, default=0.01)
    p.add_argument("--calib-samples", type=int, default=128)
    p.add_argument("--calib-len", type=int, default=512)
    p.add_argument("--actorder", nargs="+", default=["static"], choices=["static", "weight", "none"])
    return p


def run_reference(ns: argparse.Namespace, source: Path, calib: Path, actorder: str, work: Path) -> dict[str, Any]:
    from neutrino.compression.assess import evaluate_checkpoint

    out = work / f"llmc-w{ns.bits}-g{ns.group_size}-{actorder}"
    start = time.perf_counter()
    cmd = [ns.llmc_python, str(HERE / "peers" / "llmcompressor_gptq.py"), str(source), str(calib), str(out),
           str(ns.bits), str(ns.group_size), actorder, str(ns.damp)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"llm-compressor failed ({done.returncode}):\n{done.stderr[-3000:]}")
    info = json.loads(done.stdout.strip().splitlines()[-1])
    result, mode, _ = evaluate_checkpoint(out, out.name, EVAL_TASKS, progress=False)
    return {"ppl": {t: result.ppl(t) for t in ("wiki", "lee")}, "gptq_seconds": info["seconds"],
            "wall_seconds": time.perf_counter() - start, "eval_mode": mode,
            "settings": {"bits": ns.bits, "group_size": ns.group_size, "symmetric": True, "actorder": actorder,
                         "dampening_frac": ns.damp, "block_size": 128, "ignore": ["lm_head"]}}


def main(argv: list[str] | None = None) -> int:
    import importlib.metadata

    import torch
    from transformers import AutoTokenizer

    from neutrino.compression.calibration import calibration_batch
    from neutrino.weights.resolve import resolve_model

    ns = build_parser().parse_args(argv)
    source = resolve_model(None).path
    data: dict[str, Any] = json.loads(Path(ns.out).read_text()) if ns.out and Path(ns.out).exists() else {}
    version = subprocess.run([ns.llmc_python, "-c", "import llmcompressor; print(llmcompressor.__version__)"],
                             capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
    data.update(reference=f"llmcompressor {version}", neutrino=importlib.metadata.version("neutrino-llm"),
                calibration={"samples": ns.calib_samples, "seq_len": ns.calib_len, "source": "lee_background"})
    with tempfile.TemporaryDirectory(prefix="neutrino-gptq-ref-") as tmp:
        work = Path(tmp)
        batch = calibration_batch(AutoTokenizer.from_pretrained(source), ns.calib_samples, ns.calib_len)
        torch.save(batch.input_ids, work / "calib.pt")
        for actorder in ns.actorder:
            key = f"llmc-w{ns.bits}-g{ns.group_size}-{actorder}"
            data.setdefault("runs", {})[key] = run_reference(ns, source, work / "calib.pt", actorder, work)
            print(key, data["runs"][key]["ppl"], file=sys.stderr, flush=True)
            if ns.out:
                Path(ns.out).write_text(json.dumps(data, indent=2) + "\n")
    print(json.dumps(data, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
