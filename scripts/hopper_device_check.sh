#!/usr/bin/env bash
# Run THERE (the GPU machine, carry [".carry"]): builds just what the Hopper prefill attention test
# and benchmark need (core, the CPU kernels, the CUDA attention family and common helpers) with
# direct compiler calls into build-hopper-dev/ (the kernel's table files hopper_*.cu compile in
# parallel), then runs the HopperPrefillCuda tests and hopper_prefill_bench (optional shape filter;
# HOPPER_BENCH_ALSO_BF16 / _FP8 pass through, see the bench). Faster than a full kiln_tests build.
#   scripts/hopper_device_check.sh [BENCH_FILTER|-]
# HOPPER_NCU="T1 T2 ..." (tuning indices): also profiles one causal 8K d128 fp8 launch of each with
# Nsight Compute (HOPPER_NCU_SHAPE overrides the shape filter) and prints scripts/hopper_ncu_summary.py
# of each; the reports go to $OUT/ncu.tar.gz.
# HOPPER_BASELINE=DIR (an ignored folder, carried, holding src/kiln/kernels/attention_hopper.h,
# src/kiln/kernels/cuda/attention/hopper_* and bench/hopper_prefill_bench.cu of another version):
# also builds that version's bench and runs it with the same filter (before/after on one machine).
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
OUT=${OUT:-$ROOT/device-out}
B=$ROOT/build-hopper-dev
SYS=$ROOT/.carry/sysroot/usr
LIB=$SYS/lib/x86_64-linux-gnu
export PATH=/usr/local/cuda/bin:$PATH LD_LIBRARY_PATH=$LIB${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
mkdir -p "$B" "$OUT"
[ -e "$ROOT/../shared" ] || { [ -d "$ROOT/.carry/shared" ] && ln -s "$ROOT/.carry/shared" "$ROOT/../shared"; }
DEFS=(-DKILN_WITH_CUDA=1 -DKILN_SOURCE_DIR="\"$ROOT\"" -DKILN_SHARED_DIR="\"$ROOT/../shared\"" -DGTEST_HAS_PTHREAD=1)
CXXF=(-std=c++20 -O2 -march=x86-64-v3 -I"$ROOT" -I"$ROOT/src" -isystem "$SYS/include" -isystem /usr/local/cuda/include "${DEFS[@]}")
NVF=(-std=c++20 -O3 -gencode=arch=compute_90a,code=sm_90a --expt-relaxed-constexpr -lineinfo -I"$ROOT" -I"$ROOT/src"
     -isystem "$SYS/include" "${DEFS[@]}")
t0=$(date +%s)
base=(src/kiln/core/*.cc src/kiln/kernels/cpu/*.cc src/kiln/kernels/cuda/common/*.cu
      src/kiln/kernels/cuda/attention/hopper_*.cu)
portable=($(ls src/kiln/kernels/cuda/attention/*.cu | grep -v /hopper_))  # the bench's comparison row
srcs=("${base[@]}" "${portable[@]}" tests/kernels/hopper_prefill_cuda_test.cc)
build_one() {
  local s=$1 o=$B/$(echo "$1" | tr '/' '_').o
  [ -f "$o" ] && [ "$o" -nt "$s" ] && [ -z "$(find src/kiln/kernels/cuda/attention -newer "$o" -name '*.cuh')" ] && return 0
  case "$s" in
    *.cu) nvcc "${NVF[@]}" -c "$s" -o "$o" ;;
    *) ${CXX:-c++} "${CXXF[@]}" -c "$s" -o "$o" ;;
  esac
}
export -f build_one; export B; export CXX=${CXX:-c++}
export NVF_S="${NVF[*]}" CXXF_S="${CXXF[*]}"
: > "$OUT/build.log"
printf '%s\n' "${srcs[@]}" | xargs -P 16 -I{} bash -c 'NVF=($NVF_S); CXXF=($CXXF_S); build_one {}' >> "$OUT/build.log" 2>&1
obj() { for s in "$@"; do echo "$B/$(echo "$s" | tr '/' '_').o"; done; }
nvcc -o "$B/hopper_tests" $(obj "${base[@]}" tests/kernels/hopper_prefill_cuda_test.cc) "$LIB/libgtest_main.a" "$LIB/libgtest.a" -lpthread >> "$OUT/build.log" 2>&1 ||
  echo "hopper_device_check: test link failed"
nvcc "${NVF[@]}" -o "$B/hopper_prefill_bench" bench/hopper_prefill_bench.cu $(obj "${base[@]}" "${portable[@]}") -lpthread >> "$OUT/build.log" 2>&1 ||
  echo "hopper_device_check: bench build failed"
grep -E "error|warning: .*(wgmma|C7508|C75)" "$OUT/build.log" | head -20
echo "[+$(( $(date +%s) - t0 ))s] built"
KILN_LOG_LEVEL=warn timeout ${HOPPER_TEST_TIMEOUT:-150} "$B/hopper_tests" --gtest_filter='*HopperPrefill*' > "$OUT/tests.log" 2>&1
rc=$?; echo "[+$(( $(date +%s) - t0 ))s] tests rc=$rc"
grep -E "worst|Failure|FAILED|PASSED|OK \]|Expected|Which is|rel err [1-9]\.[0-9]+e-0[01]|rel err inf" "$OUT/tests.log" | head -60
if [ "${1:-}" != "-" ]; then
  timeout 120 "$B/hopper_prefill_bench" ${1:+"$1"} > "$OUT/bench.log" 2>&1
  rc=$?; echo "[+$(( $(date +%s) - t0 ))s] bench rc=$rc"
  grep '^@@' "$OUT/bench.log" | sed 's/^@@ *//'
  tail -3 "$OUT/bench.log" | grep -v '^@@'
fi
if [ -n "${HOPPER_BASELINE:-}" ] && [ "${1:-}" != "-" ]; then
  BD=$ROOT/$HOPPER_BASELINE
  NVB=(-std=c++20 -O3 -gencode=arch=compute_90a,code=sm_90a --expt-relaxed-constexpr -I"$BD/src" -I"$ROOT" -I"$ROOT/src"
       -isystem "$SYS/include" "${DEFS[@]}")
  others=$(obj "${base[@]}" "${portable[@]}" | grep -v attention_hopper_prefill)
  bsrc=$(ls "$BD"/src/kiln/kernels/cuda/attention/hopper_prefill*.cu)
  { for f in $bsrc; do nvcc "${NVB[@]}" -c "$f" -o "$B/baseline_$(basename "$f").o" & done; wait
    nvcc "${NVB[@]}" -o "$B/baseline_bench" "$BD/bench/hopper_prefill_bench.cu" "$B"/baseline_hopper_prefill*.o $others -lpthread
  } >> "$OUT/build.log" 2>&1 || echo "hopper_device_check: baseline build failed"
  timeout 120 "$B/baseline_bench" ${1:+"$1"} > "$OUT/baseline.log" 2>&1
  echo "[+$(( $(date +%s) - t0 ))s] baseline bench rc=$?"
  grep '^@@' "$OUT/baseline.log" | sed 's/^@@ */base: /'
fi
if [ -n "${HOPPER_NCU:-}" ]; then
  NCU=$(command -v ncu || echo /usr/local/cuda/bin/ncu)
  mkdir -p "$OUT/ncu"
  for t in $HOPPER_NCU; do
    timeout 90 "$NCU" --kernel-name regex:hopper_prefill_kernel --launch-skip 1 --launch-count 1 \
      --section SpeedOfLight --section ComputeWorkloadAnalysis --section MemoryWorkloadAnalysis \
      --section MemoryWorkloadAnalysis_Tables --section WarpStateStats --section SchedulerStats \
      --section SourceCounters --section InstructionStats --section LaunchStats --import-source no -f \
      -o "$OUT/ncu/prof_t$t" "$B/hopper_prefill_bench" "${HOPPER_NCU_SHAPE:-B2 L8192 h32/8 d128 fp8}" "$t" \
      > "$OUT/ncu/ncu_t$t.log" 2>&1
    echo "[+$(( $(date +%s) - t0 ))s] ncu tuning $t rc=$?"
    PATH=$(dirname "$NCU"):$PATH timeout 60 python3 scripts/hopper_ncu_summary.py "$OUT/ncu/prof_t$t.ncu-rep" 32 \
      2>&1 | tee "$OUT/ncu/summary_t$t.txt" | cut -c1-200
  done
  tar -czf "$OUT/ncu.tar.gz" -C "$OUT" ncu && rm -rf "$OUT/ncu"
fi
