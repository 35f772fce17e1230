"""Evaluation of a freshly written compressed checkpoint against its source, with the `evaluate`
package's protocol, in float32; writes report.md / eval_plot.png / results.json into the checkpoint.

The engine evaluates the checkpoint as written when it can load it. When it cannot (it does not yet
load this quantization format), the FAKE-QUANT FALLBACK is used: the codes are dequantized by the
format's formula into a dense float32 checkpoint in a temporary directory and that is evaluated; the
report says so. Weights are then exactly those of the quantized model; W8A8's run-time activation
quantization is not simulated by the fallback, and the footprint's memory figure is estimated as the
bytes of the quantized checkpoint's tensors."""

from __future__ import annotations

import logging
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from neutrino.compression.evaluate.footprint import Footprint, disk_size
from neutrino.compression.export import dequantize_checkpoint
from neutrino.errors import NeutrinoError

logger = logging.getLogger(__name__)
DEFAULT_EVAL_TASKS = "ppl-wiki,ppl-lee"  # wiki: a corpus the default calibration never reads
ENGINE, FAKE_QUANT_FALLBACK = "engine", "fake-quant dense fallback"
Q4_1_NOTE = (
    "The source SmolLM2-135M-Instruct weights are themselves dequantized from the packaged Q4_1 GGUF "
    "(asymmetric 4-bit, groups of 32 along the input dimension), so asymmetric 4-bit group-32 "
    "quantization reproduces them exactly. Compare methods at the other settings (e.g. int8 per channel, "
    "symmetric 4-bit g128, 3-bit g128) for a fair picture."
)


@dataclass
class Assessment:
    """The two evaluation results (source first) and how the compressed one was evaluated."""

    reference: Any  # EvalResult
    result: Any  # EvalResult
    mode: str  # ENGINE or FAKE_QUANT_FALLBACK
    reason: str | None = None  # why the engine could not load the checkpoint


def evaluate_checkpoint(path: Path, name: str, tasks: str, progress: bool, limits: Any = None
                        ) -> tuple[Any, str, str | None]:
    """(EvalResult, mode, fallback reason) for the checkpoint at `path` (float32); `limits` is an
    `EvalLimits` (None: the protocol's defaults)."""
    from neutrino.compression.evaluate.api import evaluate_model

    quantized = "quantization_config" in (path / "config.json").read_text(encoding="utf-8")
    try:
        result = evaluate_model(str(path), dtype="float32", tasks=tasks, limits=limits, name=name,
                                progress=progress)
        return result, ENGINE, None
    except (NeutrinoError, KeyError, RuntimeError, ValueError, TypeError) as e:
        if not quantized:
            raise
        reason = f"{type(e).__name__}: {e}"
    logger.warning("the engine cannot load %s (%s); evaluating the %s", path, reason, FAKE_QUANT_FALLBACK)
    dense = Path(tempfile.mkdtemp(prefix=".fakequant-", dir=path.parent))
    try:
        dequantize_checkpoint(path, dense)
        result = evaluate_model(str(dense), dtype="float32", tasks=tasks, limits=limits, name=name,
                                progress=progress)
    finally:
        shutil.rmtree(dense, ignore_errors=True)
    total, weights = disk_size(path)
    result.footprint = Footprint(total, weights, weights)  # memory: estimated as the checkpoint's tensors
    return result, FAKE_QUANT_FALLBACK, reason


TEXT_NAMES = {"wiki": "the Wikipedia excerpt", "lee": "lee_background"}


def perplexity_lines(reference: Any, result: Any) -> list[str]:
    """One line per perplexity text: the figure against the source's, and whether calibration saw it."""
    lines = []
    for text in ("wiki", "lee"):
        ref_ppl, ppl = reference.ppl(text), result.ppl(text)
        if ref_ppl and ppl:
            label = result.held_out.get(text)
            lines.append(f"perplexity on {TEXT_NAMES[text]}: {ppl:.4f} vs {ref_ppl:.4f} for the source "
                         f"({ppl / ref_ppl:.4f}x)" + (f" [{label}]" if label else ""))
    return lines


def evaluate_source(source: Path, name: str, tasks: str = DEFAULT_EVAL_TASKS, progress: bool = True,
                    limits: Any = None) -> Any:
    """EvalResult of the uncompressed source (float32), the reference of the report."""
    from neutrino.compression.evaluate.api import evaluate_model

    return evaluate_model(str(source), dtype="float32", tasks=tasks, limits=limits, name=name, progress=progress)


def assess(source: Path, out: Path, name: str, tasks: str = DEFAULT_EVAL_TASKS, reference: Any = None,
           progress: bool = True, notes: list[str] | None = None, final: Path | None = None,
           limits: Any = None) -> Assessment:
    """Evaluate `out` and its `source` (unless `reference` is given) and write the report into `out`;
    `final` is where `out` will be moved (recorded as the result's model path)."""
    from neutrino.compression.evaluate.report import REPORT_FILE, write_report

    if reference is None:
        reference = evaluate_source(source, f"{source.name} (source)", tasks, progress, limits)
    result, mode, reason = evaluate_checkpoint(out, name, tasks, progress, limits)
    result.model = str(final or out)
    write_report([reference, result], out)
    lines = ["", "## Compression", "", f"- evaluated with: **{mode}**"]
    if reason:
        lines.append(f"- why the fallback: the engine could not load the checkpoint ({reason}); the codes were "
                     "dequantized into a dense float32 checkpoint and that was evaluated (weights identical "
                     "to the quantized model's; W8A8 activation quantization not simulated)")
    lines += [f"- {line}" for line in perplexity_lines(reference, result)]
    lines += [f"- {note}" for note in notes or []]
    with open(out / REPORT_FILE, "a", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    return Assessment(reference, result, mode, reason)
