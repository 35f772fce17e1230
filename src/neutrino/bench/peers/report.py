"""The peer benchmark's figures: a memory-bandwidth probe, the bytes a batch-1 token streams, the ratios
Neutrino / each peer, and the issue's targets marked met or not."""

from __future__ import annotations

import time
from typing import Any

# (workload, metric, higher is better)
METRICS = (("batch1", "batch1_decode_tok_s", True), ("prefill", "prefill_tok_s", True),
           ("throughput", "output_tok_s", True), (None, "peak_rss_mib", False), (None, "startup_s", False))
# (peer, workload metric, precisions, minimum ratio Neutrino / peer); memory: at most 1.10x OpenVINO
TARGETS = (("vllm", "output_tok_s", ("fp32", "bf16"), 1.3),
           ("openvino", "output_tok_s", ("fp32", "bf16", "int8", "int4"), 1.3),
           ("llama.cpp", "batch1_decode_tok_s", ("fp32", "bf16", "int8", "int4"), 1.1),
           ("openvino", "batch1_decode_tok_s", ("fp32", "bf16", "int8", "int4"), 1.1),
           ("openvino", "prefill_tok_s", ("fp32", "bf16", "int8", "int4"), 1.2))
MEMORY_TARGET = ("openvino", 1.10)


def bandwidth_probe(threads: int, nbytes: int = 1 << 30, repeats: int = 5) -> dict[str, float]:
    """Best-of-`repeats` large-array bandwidth with torch's threads: a read-only reduction (the access
    pattern of streaming weights) and a copy (read + write bytes counted)."""
    import torch

    torch.set_num_threads(threads)
    src = torch.ones(nbytes // 4, dtype=torch.float32)
    dst = torch.empty_like(src)
    read = copy = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        src.sum()
        t1 = time.perf_counter()
        dst.copy_(src)
        t2 = time.perf_counter()
        read, copy = min(read, t1 - t0), min(copy, t2 - t1)
    return {"read_gb_s": nbytes / read / 1e9, "copy_gb_s": 2 * nbytes / copy / 1e9, "bytes": nbytes}


def _metric(result: dict[str, Any], workload: str | None, metric: str) -> float | None:
    part = result.get(workload, {}) if workload else result
    value = part.get(metric) if isinstance(part, dict) else None
    return float(value) if isinstance(value, (int, float)) else None


def ratios(results: dict[str, dict[str, Any]]) -> dict[str, dict[str, dict[str, float]]]:
    """ratios[peer][precision][metric] = Neutrino / peer (for memory and start-up: lower is better, so
    the ratio is still Neutrino / peer and below 1 means Neutrino is ahead)."""
    ours = results.get("neutrino", {})
    out: dict[str, dict[str, dict[str, float]]] = {}
    for peer, by_precision in results.items():
        if peer == "neutrino":
            continue
        for precision, result in by_precision.items():
            mine = ours.get(precision)
            if not isinstance(mine, dict) or "error" in result or "error" in mine:
                continue
            for workload, metric, _ in METRICS:
                a, b = _metric(mine, workload, metric), _metric(result, workload, metric)
                if a is not None and b:
                    out.setdefault(peer, {}).setdefault(precision, {})[metric] = a / b
    return out


def targets(table: dict[str, dict[str, dict[str, float]]]) -> list[dict[str, Any]]:
    rows = []
    for peer, metric, precisions, need in TARGETS:
        for precision in precisions:
            got = table.get(peer, {}).get(precision, {}).get(metric)
            if got is not None:
                rows.append({"peer": peer, "precision": precision, "metric": metric, "ratio": got,
                             "target": f">= {need}", "met": got >= need})
    peer, most = MEMORY_TARGET
    for precision, by_metric in table.get(peer, {}).items():
        if "peak_rss_mib" in by_metric:
            got = by_metric["peak_rss_mib"]
            rows.append({"peer": peer, "precision": precision, "metric": "peak_rss_mib", "ratio": got,
                         "target": f"<= {most}", "met": got <= most})
    return rows


def streaming(results: dict[str, dict[str, Any]], bytes_per_token: dict[str, int],
              probe: dict[str, float]) -> dict[str, dict[str, dict[str, float]]]:
    """Weights streamed per second at batch 1 (bytes per token x tokens/s) and its share of the probe's
    read bandwidth, per engine and precision."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    for engine, by_precision in results.items():
        for precision, result in by_precision.items():
            rate = _metric(result, "batch1", "batch1_decode_tok_s") if isinstance(result, dict) else None
            if rate and precision in bytes_per_token:
                gb_s = bytes_per_token[precision] * rate / 1e9
                out.setdefault(engine, {})[precision] = {"streamed_gb_s": gb_s,
                                                         "of_read_probe": gb_s / probe["read_gb_s"]}
    return out


def summary_lines(report: dict[str, Any]) -> list[str]:
    lines = [f"machine: {report['machine']}",
             f"bandwidth probe: read {report['bandwidth']['read_gb_s']:.1f} GB/s, "
             f"copy {report['bandwidth']['copy_gb_s']:.1f} GB/s"]
    for peer, by_precision in report["ratios"].items():
        for precision, by_metric in by_precision.items():
            cells = ", ".join(f"{m} {v:.2f}" for m, v in by_metric.items())
            lines.append(f"neutrino / {peer} [{precision}]: {cells}")
    for row in report["targets"]:
        mark = "met" if row["met"] else "NOT met"
        lines.append(f"target {row['metric']} vs {row['peer']} [{row['precision']}] {row['target']}: "
                     f"{row['ratio']:.2f} {mark}")
    return lines
