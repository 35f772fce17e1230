"""`neutrino` command line: generate, chat, serve, bench, eval, compress."""

from __future__ import annotations

import argparse
import logging
import sys

from neutrino.errors import NeutrinoError


def build_parser() -> argparse.ArgumentParser:
    from neutrino.cli import bench, compress, generate, serve
    from neutrino.cli import eval as eval_cmd

    parser = argparse.ArgumentParser(prog="neutrino", description="Neutrino LLM inference engine")
    parser.add_argument("-v", "--verbose", action="store_true", help="log engine details")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    generate.register(sub)
    serve.register(sub)
    bench.register(sub)
    eval_cmd.register(sub)
    compress.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    from neutrino.cli.serve import set_thread_env

    set_thread_env(sys.argv[1:] if argv is None else argv)  # before build_parser() imports torch
    parser = build_parser()
    ns = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if ns.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return int(ns.func(ns) or 0)
    except NeutrinoError as exc:
        print(f"neutrino: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
