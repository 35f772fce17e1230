"""Prometheus metrics in the text exposition format (written by hand; no client library needed)."""

from __future__ import annotations

import bisect
from collections import Counter
from dataclasses import dataclass, field

from neutrino.engine.request_stream import EngineStats, RequestStream

TTFT_BUCKETS = (0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0)
TPOT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5)
E2E_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 40.0, 60.0, 120.0, 300.0)
PREFIX = "neutrino"


@dataclass
class Histogram:
    """Cumulative-bucket histogram."""

    buckets: tuple[float, ...]
    counts: list[int] = field(default_factory=list)
    total: float = 0.0
    count: int = 0

    def __post_init__(self) -> None:
        self.counts = [0] * len(self.buckets)

    def observe(self, value: float) -> None:
        index = bisect.bisect_left(self.buckets, value)
        if index < len(self.counts):
            self.counts[index] += 1
        self.total += value
        self.count += 1

    def lines(self, name: str) -> list[str]:
        out, running = [], 0
        for bound, n in zip(self.buckets, self.counts, strict=True):
            running += n
            out.append(f'{name}_bucket{{le="{bound}"}} {running}')
        out += [f'{name}_bucket{{le="+Inf"}} {self.count}', f"{name}_sum {self.total}", f"{name}_count {self.count}"]
        return out


class ServerMetrics:
    """Counters and histograms updated on the event loop; engine gauges come from EngineStats."""

    def __init__(self) -> None:
        self.http_requests: Counter[tuple[str, int]] = Counter()  # (route, status)
        self.finished: Counter[str] = Counter()  # finish reason: stop, length, abort, error
        self.prompt_tokens = 0
        self.generation_tokens = 0
        self.ttft = Histogram(TTFT_BUCKETS)
        self.tpot = Histogram(TPOT_BUCKETS)
        self.e2e = Histogram(E2E_BUCKETS)

    def observe_http(self, route: str, status: int) -> None:
        self.http_requests[(route, status)] += 1

    def observe_request(self, stream: RequestStream) -> None:
        """Finish listener of the AsyncLLM: called once per request when its stream closes."""
        final = stream.final
        if stream.error is not None:
            reason = "error"
        elif final is None:
            reason = "abort"
        else:
            reasons = {o.finish_reason for o in final.outputs}
            reason = "stop" if "stop" in reasons else (reasons.pop() or "abort")
        self.finished[reason] += 1
        if final is None:
            return
        self.prompt_tokens += len(stream.prompt_token_ids)
        self.generation_tokens += final.num_generated_tokens
        first, last = stream.first_token_time, stream.last_token_time
        if first is not None and last is not None:
            self.ttft.observe(first - stream.arrival_time)
            longest = max(len(o.token_ids) for o in final.outputs)
            if longest > 1:
                self.tpot.observe((last - first) / (longest - 1))
            self.e2e.observe(last - stream.arrival_time)

    def render(self, stats: EngineStats, in_flight: int, draining: bool) -> str:
        p = PREFIX
        lines: list[str] = []

        def metric(name: str, kind: str, help_: str, samples: list[str]) -> None:
            lines.extend([f"# HELP {p}_{name} {help_}", f"# TYPE {p}_{name} {kind}", *samples])

        metric("http_requests_total", "counter", "HTTP requests by route and status code.",
               [f'{p}_http_requests_total{{route="{r}",status="{s}"}} {n}'
                for (r, s), n in sorted(self.http_requests.items())])
        metric("request_success_total", "counter", "Generation requests ended, by finish reason "
               "(stop, length, abort = client gone, error).",
               [f'{p}_request_success_total{{finished_reason="{k}"}} {self.finished.get(k, 0)}'
                for k in ("stop", "length", "abort", "error")])
        metric("prompt_tokens_total", "counter", "Prompt tokens of finished requests.",
               [f"{p}_prompt_tokens_total {self.prompt_tokens}"])
        metric("generation_tokens_total", "counter", "Generated tokens of finished requests.",
               [f"{p}_generation_tokens_total {self.generation_tokens}"])
        metric("time_to_first_token_seconds", "histogram", "Time to first token.",
               self.ttft.lines(f"{p}_time_to_first_token_seconds"))
        metric("time_per_output_token_seconds", "histogram", "Time per output token after the first.",
               self.tpot.lines(f"{p}_time_per_output_token_seconds"))
        metric("e2e_request_latency_seconds", "histogram", "Arrival to last token.",
               self.e2e.lines(f"{p}_e2e_request_latency_seconds"))
        self._engine_lines(metric, stats, in_flight, draining)
        return "\n".join(lines) + "\n"

    @staticmethod
    def _engine_lines(metric, stats: EngineStats, in_flight: int, draining: bool) -> None:  # type: ignore[no-untyped-def]
        p = PREFIX
        hit_rate = stats.prefix_cache_hits / stats.prefix_cache_queries if stats.prefix_cache_queries else 0.0
        gauges = [
            ("num_requests_running", "Sequences running in the engine.", stats.num_running),
            ("num_requests_waiting", "Sequences waiting or preempted.", stats.num_waiting),
            ("num_requests_in_flight", "HTTP requests being handled.", in_flight),
            ("kv_cache_usage_perc", "Fraction of KV blocks held by requests (0-1).", stats.kv_cache_usage),
            ("kv_cache_free_blocks", "KV blocks not held by any request.", stats.num_free_blocks),
            ("kv_cache_total_blocks", "Usable KV blocks.", stats.num_total_blocks),
            ("prefix_cache_hit_rate", "Prompt tokens served from the prefix cache / looked up.", hit_rate),
            ("engine_unfinished_requests", "Requests the engine holds.", stats.num_unfinished),
            ("draining", "1 while shutting down.", int(draining)),
        ]
        for name, help_, value in gauges:
            metric(name, "gauge", help_, [f"{p}_{name} {value}"])
        counters = [
            ("prefix_cache_queries_total", "Prompt tokens looked up in the prefix cache.",
             stats.prefix_cache_queries),
            ("prefix_cache_hits_total", "Prompt tokens found in the prefix cache.", stats.prefix_cache_hits),
            ("num_preemptions_total", "Sequences preempted (recomputed later) for lack of KV blocks.",
             stats.num_preemptions),
            ("engine_aborted_requests_total", "Requests aborted inside the engine.", stats.num_aborted),
            ("engine_step_errors_total", "Engine steps that raised.", stats.num_step_errors),
        ]
        for name, help_, value in counters:
            metric(name, "counter", help_, [f"{p}_{name} {value}"])
