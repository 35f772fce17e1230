"""`neutrino bench throughput` (offline throughput against transformers), `neutrino bench peers` and
`neutrino bench serving`."""

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
    from neutrino.bench import peers

    pe = bench_sub.add_parser("peers", help="Neutrino vs vLLM, OpenVINO, llama.cpp, transformers in one run",
                              description=peers.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    peers.build_parser(pe)
    pe.set_defaults(func=lambda ns: peers.main(ns=ns))
    from neutrino.bench import serving

    se = bench_sub.add_parser("serving", help="streaming load against OpenAI-compatible servers",
                              description=serving.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    serving.build_parser(se)
    se.set_defaults(func=lambda ns: serving.main(ns=ns))
