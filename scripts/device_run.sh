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
#        KILN_DEVICE_TARGETS (explicit ninja targets instead of the ones the filters need),
#        KILN_DEVICE_FORCE_FALLBACK=1 (skip the full build: kernel tests and benches only),
#        KILN_DEVICE_PREBUILT=1 (no build there: run the binaries that `device_prepare.sh --prebuild`
#        built here and put in .carry/bin; saves the device minutes of a build).
#        The commit printed is the first word of .carry/bin/STAMP when it exists (`--prebuild`
#        writes it; the device copy's git metadata can lag the checkout), else git's HEAD there.
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
: > "$OUT/build.log"
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
TEST_BIN=$BUILD/kiln_tests
BENCH_DIR=$BUILD
if [ -n "${KILN_DEVICE_PREBUILT:-}" ]; then
  [ -x .carry/bin/kiln_tests ] || { echo "device_run: KILN_DEVICE_PREBUILT but no .carry/bin/kiln_tests"; exit 2; }
  # The binaries carry this machine's absolute source path (KILN_SOURCE_DIR, ../shared): map it.
  src=$(cat .carry/bin/SOURCE_DIR)
  if [ "$src" != "$ROOT" ] && [ ! -e "$src" ]; then mkdir -p "$(dirname "$src")" && ln -s "$ROOT" "$src"; fi
  [ -e "$(dirname "$src")/shared" ] || ln -s "$ROOT/.carry/shared" "$(dirname "$src")/shared"
  TEST_BIN=$ROOT/.carry/bin/kiln_tests
  BENCH_DIR=$ROOT/.carry/bin
  stamp "prebuilt binaries from $src ($(cat .carry/bin/STAMP 2>/dev/null))"
else
stamp "configure + build: ${targets[*]}"
if [ ! -f "$BUILD/build.ninja" ]; then
  cmake -S "$ROOT" -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release -DKILN_CUDA=ON \
    -DCMAKE_CUDA_ARCHITECTURES=90a -DCMAKE_PREFIX_PATH="$SYS" "${PKG_ARGS[@]}" \
    > "$OUT/build.log" 2>&1 || { tail -40 "$OUT/build.log"; echo "device_run: configure failed"; exit 3; }
fi
if [ -n "${KILN_DEVICE_FORCE_FALLBACK:-}" ] || ! cmake --build "$BUILD" -j "$JOBS" --target "${targets[@]}" >> "$OUT/build.log" 2>&1; then
  grep -E "error|undefined reference" "$OUT/build.log" | head -20
  # Fallback, so that a half-written module elsewhere does not cost the GPU run: the CUDA kernel
  # tests (tests/kernels/*_cuda_test.cu) and the benches, built directly against kiln_kernels.
  echo "device_run: FULL BUILD FAILED (build.log); FALLBACK: kernel tests and benches only"
  cmake --build "$BUILD" -j "$JOBS" --target kiln_kernels kiln_core >> "$OUT/build.log" 2>&1 ||
    { echo "device_run: kiln_kernels does not build either"; exit 4; }
  FB=$BUILD/fallback; mkdir -p "$FB"
  NVFLAGS=(-std=c++20 -O3 -gencode=arch=compute_90a,code=sm_90a --expt-relaxed-constexpr -I"$ROOT" -I"$ROOT/src"
           -isystem "$SYS/include" -DKILN_WITH_CUDA=1 -DGTEST_HAS_PTHREAD=1 -DKILN_SOURCE_DIR="\"$ROOT\""
           -DKILN_SHARED_DIR="\"$ROOT/../shared\"")
  LIBS=("$BUILD/libkiln_kernels.a" "$BUILD/libkiln_core.a" -lcublasLt -lcublas -lpthread)
  ls tests/kernels/*_cuda_test.cu | xargs -P "$JOBS" -I{} sh -c \
    'nvcc "$@" -c {} -o '"$FB"'/$(basename {} .cu).o >> '"$OUT"'/build.log 2>&1' _ "${NVFLAGS[@]}"
  nvcc -o "$FB/kiln_tests" "$FB"/*_cuda_test.o "${LIBS[@]}" "$LIB/libgtest_main.a" "$LIB/libgtest.a" \
    >> "$OUT/build.log" 2>&1 || echo "device_run: fallback tests did not link"
  for b in "${benches[@]}"; do
    echo "bench/$b.cu"
  done | xargs -P "$JOBS" -I{} sh -c 'nvcc "$@" {} -o '"$FB"'/$(basename {} .cu) '"${LIBS[*]}"' >> '"$OUT"'/build.log 2>&1' \
    _ "${NVFLAGS[@]}"
  TEST_BIN=$FB/kiln_tests
  BENCH_DIR=$FB
fi
stamp "built"
fi

# ---- ceilings ------------------------------------------------------------------------------
if [ "${KILN_DEVICE_CEILINGS:-1}" != "0" ] && [ -n "${benches[*]}" ]; then
  PYTHONUNBUFFERED=1 timeout 120 python3 .carry/tools/gpu_ceilings.py --json "$OUT/ceilings.json" \
    > "$OUT/ceilings.log" 2>&1 && export KILN_GPU_CEILINGS=$OUT/ceilings.json
  stamp "ceilings: $(tr -d '\n' < "$OUT/ceilings.log" | grep -oE '"(copy_GBps|bf16_gemm_TFLOPs)": [0-9.]+' | tr '\n' ' ')"
fi

# ---- tests ---------------------------------------------------------------------------------
# The default filter runs in two passes, GPU suites (*Cuda*) first, so that a crash elsewhere
# (a half-written module) cannot take the GPU results with it.
test_rc=0
test_summary=""
if [ "$TEST_FILTER" != "-" ]; then
  if [ "$TEST_FILTER" = "*" ]; then passes=("*Cuda*" "-*Cuda*"); else passes=("$TEST_FILTER"); fi
  : > "$OUT/tests.log"
  for f in "${passes[@]}"; do
    echo "==== kiln_tests --gtest_filter='$f'" >> "$OUT/tests.log"
    KILN_LOG_LEVEL=warn timeout 300 "$TEST_BIN" --gtest_filter="$f" > "$OUT/tests.pass" 2>&1
    rc=$?
    cat "$OUT/tests.pass" >> "$OUT/tests.log"
    line="[$f] rc=$rc $(grep -E '^\[  PASSED  \]|^\[  FAILED  \] [0-9]+ test|^\[  SKIPPED \] [0-9]+ test' "$OUT/tests.pass" | tr '\n' ' ')"
    if [ $rc -ne 0 ] && ! grep -q '^\[==========\] .* ran' "$OUT/tests.pass"; then
      line="$line CRASHED in: $(grep -E '^\[ RUN      \]' "$OUT/tests.pass" | tail -1 | sed 's/.*\] //')"
    fi
    stamp "tests $line"
    grep -E '^\[  FAILED  \] [A-Za-z]' "$OUT/tests.pass" | sort -u | head -30
    grep -B3 -E 'Failure$' "$OUT/tests.pass" | head -40
    test_summary="$test_summary$line"$'\n'
    [ $rc -ne 0 ] && test_rc=$rc
  done
  rm -f "$OUT/tests.pass"
fi

# ---- benchmarks ----------------------------------------------------------------------------
: > "$OUT/bench.log"
for b in "${benches[@]}"; do
  stamp "bench $b"
  echo "==== $b" >> "$OUT/bench.log"
  timeout 180 "$BENCH_DIR/$b" >> "$OUT/bench.log" 2>&1 || echo "==== $b exited with $?" | tee -a "$OUT/bench.log"
done

# ---- summary table (last, so it ends the reply) --------------------------------------------
{
  commit=$(cut -d' ' -f1 .carry/bin/STAMP 2>/dev/null || git rev-parse --short HEAD 2>/dev/null)
  echo "device: $(head -1 "$OUT/env.txt")   commit: $commit"
  [ -f "$OUT/ceilings.json" ] && echo "ceilings: $(tr -d '\n ' < "$OUT/ceilings.json" | grep -oE '"(copy_GBps|bf16_gemm_TFLOPs)":[0-9.]+' | tr '\n' ' ')"
  [ -n "$test_summary" ] && printf 'tests %s' "$test_summary"
  if grep -q '^@@' "$OUT/bench.log"; then
    echo "kernel | shape | achieved | ceiling | ratio"
    grep '^@@' "$OUT/bench.log" | sed 's/^@@ *//'
  fi
} > "$OUT/summary.txt"
stamp "done"
grep -v '|' "$OUT/summary.txt"
grep '|' "$OUT/summary.txt" | { column -t -s '|' -o '|' 2>/dev/null || cat; }
exit $test_rc
