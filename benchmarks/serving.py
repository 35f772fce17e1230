"""Serving benchmark: Neutrino vs llama.cpp's servers over streaming /v1/completions (see the module doc).

Needs the peers built by scripts/build_peers.sh. Example (the recorded run):
    python benchmarks/serving.py --out benchmarks/results/serving.json
"""

from neutrino.bench.serving import main

if __name__ == "__main__":
    raise SystemExit(main())
