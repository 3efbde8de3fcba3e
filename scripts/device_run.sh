#!/usr/bin/env bash
# Run THERE (the GPU machine), from the repo root, after scripts/device_prepare.sh here and with
# carry [".carry"]: builds kiln with CUDA for sm_90a, measures the ceilings, runs the tests and the
# GPU micro-benchmarks, writes logs to $OUT and prints a short table last.
#
#   scripts/device_run.sh [TEST_FILTER [BENCH_REGEX]]
#     TEST_FILTER  gtest filter for kiln_tests (default '*': every test, CPU and GPU);
#                  '-' skips the tests. GPU suites are named *Cuda* ('*Cuda*' runs only those).
#     BENCH_REGEX  extended regex over bench program names (default '.': every bench/*_bench.cu);
#                  '-' skips the benchmarks.
#   env: KILN_DEVICE_JOBS (16), KILN_DEVICE_CEILINGS=0 (skip gpu_ceilings.py),
#        KILN_DEVICE_TARGETS (explicit ninja targets instead of the ones the filters need).
#
# Benchmarks print machine-readable result lines "@@ kernel | shape | achieved | ceiling | ratio";
# this script gathers them into the final table. They read the measured ceilings from the JSON
# file named by KILN_GPU_CEILINGS (set here from gpu_ceilings.py's output).
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
TEST_FILTER=${1:-*}
BENCH_REGEX=${2:-.}
JOBS=${KILN_DEVICE_JOBS:-16}
OUT=${OUT:-$ROOT/device-out}
mkdir -p "$OUT"
BUILD=$ROOT/build-device
SYS=$ROOT/.carry/sysroot/usr
LIB=$SYS/lib/x86_64-linux-gnu
t0=$(date +%s)
stamp() { echo "[device_run +$(( $(date +%s) - t0 ))s] $*"; }

if [ ! -d "$SYS" ]; then echo "device_run: no .carry/sysroot (run scripts/device_prepare.sh here, carry .carry)"; exit 2; fi
export LD_LIBRARY_PATH=$LIB${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
export PKG_CONFIG_PATH=$LIB/pkgconfig:$SYS/share/pkgconfig${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}
PKG_ARGS=()
command -v pkg-config >/dev/null || PKG_ARGS=(-DPKG_CONFIG_EXECUTABLE="$SYS/bin/pkgconf")
# The tests read ../shared/testdata (KILN_SHARED_DIR); only the checkout travels, so link the copy.
[ -e "$ROOT/../shared" ] || { [ -d "$ROOT/.carry/shared" ] && ln -s "$ROOT/.carry/shared" "$ROOT/../shared"; }
export PATH=/usr/local/cuda/bin:$PATH

{
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.mem --format=csv,noheader
  nvcc --version | tail -1; ${CXX:-c++} --version | head -1; cmake --version | head -1
  git rev-parse --short HEAD 2>/dev/null; git status --short 2>/dev/null | head -40
} > "$OUT/env.txt" 2>&1
stamp "$(head -1 "$OUT/env.txt")"

# ---- build ---------------------------------------------------------------------------------
benches=()
if [ "$BENCH_REGEX" != "-" ]; then
  for f in bench/*_bench.cu; do
    [ -f "$f" ] || continue
    name=$(basename "$f" .cu)
    echo "$name" | grep -Eq -- "$BENCH_REGEX" && benches+=("$name")
  done
fi
targets=(${KILN_DEVICE_TARGETS:-})
if ((${#targets[@]} == 0)); then
  [ "$TEST_FILTER" != "-" ] && targets+=(kiln_tests)
  targets+=("${benches[@]}")
fi
stamp "configure + build: ${targets[*]}"
if [ ! -f "$BUILD/build.ninja" ]; then
  cmake -S "$ROOT" -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release -DKILN_CUDA=ON \
    -DCMAKE_CUDA_ARCHITECTURES=90a -DCMAKE_PREFIX_PATH="$SYS" "${PKG_ARGS[@]}" \
    > "$OUT/build.log" 2>&1 || { tail -40 "$OUT/build.log"; echo "device_run: configure failed"; exit 3; }
fi
if ! cmake --build "$BUILD" -j "$JOBS" --target "${targets[@]}" >> "$OUT/build.log" 2>&1; then
  grep -E "error|Error|undefined reference" "$OUT/build.log" | head -40
  echo "device_run: build failed (full log: build.log)"; exit 4
fi
stamp "built"

# ---- ceilings ------------------------------------------------------------------------------
if [ "${KILN_DEVICE_CEILINGS:-1}" != "0" ] && [ -n "${benches[*]}" ]; then
  PYTHONUNBUFFERED=1 timeout 120 python3 .carry/tools/gpu_ceilings.py --json "$OUT/ceilings.json" \
    > "$OUT/ceilings.log" 2>&1 && export KILN_GPU_CEILINGS=$OUT/ceilings.json
  stamp "ceilings: $(tr -d '\n' < "$OUT/ceilings.log" | grep -oE '"(copy_GBps|bf16_gemm_TFLOPs)": [0-9.]+' | tr '\n' ' ')"
fi

# ---- tests ---------------------------------------------------------------------------------
test_rc=0
if [ "$TEST_FILTER" != "-" ]; then
  KILN_LOG_LEVEL=warn timeout 300 "$BUILD/kiln_tests" --gtest_filter="$TEST_FILTER" --gtest_brief=0 \
    > "$OUT/tests.log" 2>&1
  test_rc=$?
  stamp "tests rc=$test_rc: $(grep -E '^\[  PASSED  \]|^\[  FAILED  \] [0-9]+ test|^\[  SKIPPED \] [0-9]+ test' "$OUT/tests.log" | tr '\n' ' ')"
  grep -E '^\[  FAILED  \] [A-Za-z]' "$OUT/tests.log" | sort -u | head -30
  grep -B3 -A0 -E 'Failure$' "$OUT/tests.log" | head -60
fi

# ---- benchmarks ----------------------------------------------------------------------------
: > "$OUT/bench.log"
for b in "${benches[@]}"; do
  stamp "bench $b"
  echo "==== $b" >> "$OUT/bench.log"
  timeout 180 "$BUILD/$b" >> "$OUT/bench.log" 2>&1 || echo "==== $b exited with $?" | tee -a "$OUT/bench.log"
done

# ---- summary table (last, so it ends the reply) --------------------------------------------
{
  echo "device: $(head -1 "$OUT/env.txt")   commit: $(git rev-parse --short HEAD 2>/dev/null)"
  [ -f "$OUT/ceilings.json" ] && echo "ceilings: $(tr -d '\n ' < "$OUT/ceilings.json" | grep -oE '"(copy_GBps|bf16_gemm_TFLOPs)":[0-9.]+' | tr '\n' ' ')"
  if [ "$TEST_FILTER" != "-" ]; then
    echo "tests (filter '$TEST_FILTER'): rc=$test_rc $(grep -E '^\[  PASSED  \]|^\[  FAILED  \] [0-9]+ test|^\[  SKIPPED \] [0-9]+ test' "$OUT/tests.log" | tr '\n' ' ')"
  fi
  if grep -q '^@@' "$OUT/bench.log"; then
    echo "kernel | shape | achieved | ceiling | ratio"
    grep '^@@' "$OUT/bench.log" | sed 's/^@@ *//'
  fi
} > "$OUT/summary.txt"
stamp "done"
column -t -s '|' -o '|' "$OUT/summary.txt" 2>/dev/null || cat "$OUT/summary.txt"
exit $test_rc
