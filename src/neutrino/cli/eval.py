"""`neutrino eval`: perplexity, zero-shot accuracy, size and speed of one or more models on the fixed
protocol (see the README's "Evaluation" section), with an optional Markdown + PNG report."""

from __future__ import annotations

import argparse
import sys

from neutrino.compression.evaluate.protocol import (
    DEFAULT_MAX_TOKENS,
    DEFAULT_STRIDE,
    DEFAULT_WINDOW,
    SEGMENT_LEN,
    TASKS,
    parse_tasks,
)
from neutrino.errors import InvalidParameterError

_MIB = 1024**2


def _max_tokens(text: str) -> int | None:
    if text.strip().lower() in ("all", "full", "none"):
        return None
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 2:
        raise argparse.ArgumentTypeError(f"invalid token cap {text!r}; expected an integer >= 2 or 'all'")
    return value


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="evaluate models: perplexity, zero-shot accuracy, size, speed",
                       description=__doc__)
    p.add_argument("models", nargs="*", metavar="MODEL",
                   help="HF directories or .gguf files (default: the embedded SmolLM2-135M-Instruct)")
    p.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"],
                   help="weights and activations dtype (auto = bfloat16)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for torch")
    p.add_argument("--tasks", default=",".join(TASKS), help=f"comma-separated subset of {', '.join(TASKS)}")
    p.add_argument("--max-tokens", type=_max_tokens, default=DEFAULT_MAX_TOKENS,
                   help=f"tokens taken from each perplexity text in evenly spaced segments of up to "
                        f"{SEGMENT_LEN}, or 'all' for the whole text (default {DEFAULT_MAX_TOKENS})")
    p.add_argument("--window", type=int, default=DEFAULT_WINDOW, help="perplexity window length in tokens")
    p.add_argument("--stride", type=int, default=DEFAULT_STRIDE, help="new tokens scored per later window")
    p.add_argument("--max-examples", type=int, default=None, help="polarity examples (default: all 200)")
    p.add_argument("--name", action="append", default=[], help="display name per MODEL, in order (repeatable)")
    p.add_argument("--results", nargs="+", default=[], metavar="JSON",
                   help="earlier results (from --json) to include in the report, before the new ones")
    p.add_argument("--json", default=None, metavar="OUT", help="write the result(s) as JSON here")
    p.add_argument("--report", default=None, metavar="DIR", help="write report.md, eval_plot.png, results.json")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run_eval)


def _check_args(ns: argparse.Namespace) -> list[str]:
    tasks = parse_tasks(ns.tasks)
    if ns.threads is not None and ns.threads < 1:
        raise InvalidParameterError("--threads", f"must be positive, got {ns.threads}")
    if ns.max_examples is not None and ns.max_examples < 1:
        raise InvalidParameterError("--max-examples", f"must be positive, got {ns.max_examples}")
    if len(ns.name) > max(1, len(ns.models)):
        raise InvalidParameterError("--name", f"{len(ns.name)} names for {max(1, len(ns.models))} model(s)")
    return tasks


def run_eval(ns: argparse.Namespace) -> int:
    tasks = _check_args(ns)
    from neutrino.compression.evaluate.api import EvalLimits, evaluate_model
    from neutrino.compression.evaluate.perplexity import check_window
    from neutrino.compression.evaluate.report import write_report
    from neutrino.compression.evaluate.result import load_json, save_json
    from neutrino.weights.resolve import resolve_model

    check_window(ns.window, ns.stride)
    previous = [r for path in ns.results for r in load_json(path)]
    models = ns.models or [None]
    for model in models:
        resolve_model(model)  # a missing model fails now, before any other is loaded
    limits = EvalLimits(window=ns.window, stride=ns.stride, max_tokens=ns.max_tokens, max_examples=ns.max_examples)
    results = []
    for i, model in enumerate(models):
        name = ns.name[i] if i < len(ns.name) else None
        result = evaluate_model(model, dtype=ns.dtype, device=ns.device, tasks=tasks, limits=limits, name=name,
                                progress=not ns.no_progress, num_threads=ns.threads)
        print(summary_line(result), flush=True)
        results.append(result)
    if ns.json:
        save_json(results[0] if len(results) == 1 else results, ns.json)
    if ns.report:
        path = write_report(previous + results, ns.report)
        print(f"report: {path}", file=sys.stderr)
    return 0


def summary_line(r) -> str:
    """One line with every measured figure of an EvalResult."""
    parts = [f"{r.name} [{r.dtype}]"]
    parts += [f"ppl-{k} {v.ppl:.3f} ({v.num_scored} tok)" for k, v in r.perplexity.items()]
    if r.polarity is not None:
        parts.append(f"polarity {r.polarity.accuracy:.3f} ({r.polarity.num_examples} ex)")
    fp = r.footprint
    parts.append(f"disk {fp.disk_bytes / _MIB:.1f} MiB, memory {fp.memory_bytes / _MIB:.1f} MiB")
    if r.speed is not None:
        parts.append(f"prefill {r.speed.prefill_tok_s:.0f} tok/s, decode {r.speed.decode_tok_s:.1f} tok/s")
    parts.append(f"{r.timings_s.get('total', 0.0):.0f} s")
    return " | ".join(parts)
