"""`neutrino bench throughput`: the offline throughput benchmark against transformers."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="benchmarks (JSON output, peer run in the same run)",
                       description="Run a benchmark; see benchmarks/RESULTS.md for recorded figures.")
    bench_sub = p.add_subparsers(dest="bench", required=True, metavar="BENCHMARK")
    from neutrino.bench import throughput

    t = bench_sub.add_parser("throughput", help="offline throughput vs transformers' batched generate",
                             description=throughput.__doc__)
    throughput.build_parser(t)
    t.set_defaults(func=lambda ns: throughput.main(ns=ns))
