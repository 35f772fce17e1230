"""`write_report`: report.md (a side-by-side table) and eval_plot.png (quality vs size and vs speed with
the Pareto front marked) for one or many evaluated variants; the first result is the reference."""

from __future__ import annotations

import io
import os
from collections.abc import Callable, Sequence
from pathlib import Path

from neutrino.compression.evaluate.result import EvalResult, atomic_write_bytes, atomic_write_text, save_json
from neutrino.errors import InvalidParameterError

REPORT_FILE, PLOT_FILE, RESULTS_FILE = "report.md", "eval_plot.png", "results.json"
_MIB = 1024**2


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices (sorted by x, then y) of the points no other point dominates, both coordinates minimised:
    q dominates p when q <= p in both coordinates and q < p in at least one. Equal points are all kept."""
    front = []
    for i, (x, y) in enumerate(points):
        dominated = any(qx <= x and qy <= y and (qx < x or qy < y) for j, (qx, qy) in enumerate(points) if j != i)
        if not dominated:
            front.append(i)
    return sorted(front, key=lambda i: points[i])


def quality_metric(results: Sequence[EvalResult]) -> tuple[str, Callable[[EvalResult], float | None]]:
    """The y axis (lower is better): perplexity on the Wikipedia text (a corpus the default calibration
    never reads) if every result has it, else on lee_background, else the polarity error rate."""
    if all(r.ppl("wiki") is not None for r in results):
        return "perplexity (Wikipedia)", lambda r: r.ppl("wiki")
    if all(r.ppl("lee") is not None for r in results):
        return "perplexity (lee_background)", lambda r: r.ppl("lee")
    if all(r.polarity is not None for r in results):
        return "polarity error rate", lambda r: None if r.polarity is None else 1.0 - r.polarity.accuracy
    raise InvalidParameterError("results", "no quality measure (perplexity or polarity) common to all results")


def fronts(results: Sequence[EvalResult]) -> dict[str, set[int]]:
    """Pareto-optimal result indices for quality vs memory size ("size") and vs decode speed ("speed")."""
    _, quality = quality_metric(results)
    out = {"size": set(pareto_front([(r.footprint.memory_bytes, quality(r)) for r in results]))}
    if all(r.speed is not None for r in results):
        out["speed"] = set(pareto_front([(-r.speed.decode_tok_s, quality(r)) for r in results]))  # type: ignore[union-attr]
    return out


def write_report(results: Sequence[EvalResult], out_dir: str | os.PathLike[str]) -> Path:
    """Write report.md, eval_plot.png and results.json into `out_dir` (each atomically); returns report.md."""
    results = list(results)
    if not results or not all(isinstance(r, EvalResult) for r in results):
        raise InvalidParameterError("results", "expected a non-empty list of EvalResult")
    out = Path(out_dir)
    on_front = fronts(results)
    atomic_write_bytes(out / PLOT_FILE, render_plot(results, on_front))
    save_json(results, out / RESULTS_FILE)
    return atomic_write_text(out / REPORT_FILE, render_markdown(results, on_front))


def render_markdown(results: Sequence[EvalResult], on_front: dict[str, set[int]]) -> str:
    """The report's Markdown text."""
    ref = results[0]
    label, _ = quality_metric(results)
    lines = [
        "# Evaluation report", "",
        f"{len(results)} variant(s); reference (first row): `{ref.name}`. Pareto front: lowest {label} for "
        "its memory size (`size`) or its decode speed (`speed`).", "",
        "| model | dtype | disk MiB | memory MiB | ppl lee | ppl wiki | ppl lee vs ref | ppl wiki vs ref "
        "| polarity acc | prefill tok/s | decode tok/s | eval s | Pareto |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for i, r in enumerate(results):
        pareto = ", ".join(k for k in ("size", "speed") if i in on_front.get(k, set()))
        acc = None if r.polarity is None else r.polarity.accuracy
        cells = [f"`{r.name}`", r.dtype, _fmt(r.footprint.disk_bytes / _MIB, 1),
                 _fmt(r.footprint.memory_bytes / _MIB, 1), _fmt(r.ppl("lee"), 3), _fmt(r.ppl("wiki"), 3),
                 _ratio(r.ppl("lee"), ref.ppl("lee")), _ratio(r.ppl("wiki"), ref.ppl("wiki")), _fmt(acc, 3),
                 _fmt(r.speed.prefill_tok_s if r.speed else None, 0), _fmt(r.speed.decode_tok_s if r.speed else None, 1),
                 _fmt(r.timings_s.get("total"), 0), pareto]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", f"![quality vs size and speed]({PLOT_FILE})", "", "## Held out from calibration?", ""]
    lines += [f"- `{r.name}`: " + "; ".join(f"{t}: {label}" for t, label in r.held_out.items())
              for r in results if r.held_out]
    lines += ["", "(`held-out corpus`: calibration never read the text; `held-out segments`: the same corpus, the "
              "scored segments left out of calibration; see `neutrino.compression.evaluate.held_out`.)", "",
              "## Protocol", ""]
    lines += [f"- `{k}`: {v!r}" for k, v in ref.protocol.items()]
    lines += ["", "## Runs", ""]
    lines += [f"- `{r.name}`: {r.model} ({r.device}); {r.meta.get('date', '?')}, {r.meta.get('machine', '?')}, "
              f"torch {r.meta.get('torch', '?')}" for r in results]
    return "\n".join(lines) + "\n"


def render_plot(results: Sequence[EvalResult], on_front: dict[str, set[int]]) -> bytes:
    """PNG bytes: quality vs memory size, and vs decode speed when every result has it."""
    from matplotlib.figure import Figure

    label, quality = quality_metric(results)
    panels: list[tuple[str, list[float], set[int]]] = [
        ("memory (MiB)", [r.footprint.memory_bytes / _MIB for r in results], on_front["size"])]
    if "speed" in on_front:
        panels.append(("batch-1 decode (tok/s)", [r.speed.decode_tok_s for r in results],  # type: ignore[union-attr]
                       on_front["speed"]))
    fig = Figure(figsize=(6.0 * len(panels), 4.5), layout="constrained")
    ys = [float(quality(r)) for r in results]  # type: ignore[arg-type]
    for k, (xlabel, xs, front) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), k + 1)
        ax.scatter(xs, ys, color="tab:blue", zorder=3, label="variant")
        order = sorted(front, key=lambda i: xs[i])
        ax.plot([xs[i] for i in order], [ys[i] for i in order], "o-", color="tab:red", mfc="none", ms=12,
                zorder=2, label="Pareto front")
        for x, y, r in zip(xs, ys, results, strict=True):
            ax.annotate(r.name, (x, y), textcoords="offset points", xytext=(5, 5), fontsize=8)
        ax.set_xlabel(xlabel)
        if min(ys) > 0 and max(ys) / min(ys) > 5:  # a few broken variants would squash the rest
            ax.set_yscale("log")
        ax.set_ylabel(f"{label} (lower is better{', log scale' if ax.get_yscale() == 'log' else ''})")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    return buf.getvalue()


def _fmt(value: float | None, digits: int) -> str:
    return "–" if value is None else f"{value:,.{digits}f}"


def _ratio(value: float | None, ref: float | None) -> str:
    return "–" if value is None or not ref else f"{value / ref:.4f}x"
