"""Offline throughput: Neutrino vs transformers (same as `neutrino bench throughput`)."""

from neutrino.bench.throughput import main

if __name__ == "__main__":
    raise SystemExit(main())
