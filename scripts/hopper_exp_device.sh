#!/usr/bin/env bash
# Run THERE (GPU machine, carry [".carry"]): one call comparing Hopper prefill tuning rows. Builds and
# tests through scripts/hopper_device_check.sh (no bench there), then: the fp8 d128 bench (every row
# at 8K; HOPPER_BENCH_ALSO_FP8 rows at 1K..32K), the bf16 d128 8K bench, the max error of each
# tuning row over the tests, and the SASS op counts of the fp8 d128 kernels (scripts/hopper_sass_counts.py).
# HOPPER_NCU="T1 T2": then Nsight Compute of those rows (causal 8K) while the call's time allows.
# Logs into $OUT/logs.tgz; a compact summary on stdout.
#   HOPPER_BENCH_ALSO_FP8="18 19" scripts/hopper_exp_device.sh
set -uo pipefail
cd "$(dirname "$0")/.."
export OUT=${OUT:-$PWD/device-out} PATH=/usr/local/cuda/bin:$PATH
B=build-hopper-dev
LOGS=$OUT/logs
mkdir -p "$LOGS"
t0=$(date +%s)
NCU_ROWS=${HOPPER_NCU:-}
HOPPER_NCU= HOPPER_TEST_TIMEOUT=${HOPPER_TEST_TIMEOUT:-90} OUT=$LOGS scripts/hopper_device_check.sh - > "$LOGS/check.log" 2>&1
grep -E "built|rc=|FAILED|failed|error" "$LOGS/check.log" | head -20
export LD_LIBRARY_PATH=$PWD/.carry/sysroot/usr/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
timeout 90 "$B/hopper_prefill_bench" "d128 fp8" > "$LOGS/bench_fp8.log" 2>&1
rc=$?; echo "[+$(( $(date +%s) - t0 ))s] fp8 bench rc=$rc"
grep '^@@' "$LOGS/bench_fp8.log" | sed 's/^@@ *//; s/ | [0-9]* TFLOP\/s | / | /; s/hopper_prefill_fp8//; s/ h32\/8 d128//;
  s/persistent //; s/ vtpre overlap/ vt/; s/ TFLOP\/s//' | grep -v "^\[\([1-9]\|1[0-1]\|2[7-9]\|31\):"
HOPPER_BENCH_ALSO_BF16= timeout 30 "$B/hopper_prefill_bench" "L8192 h32/8 d128 bf16" > "$LOGS/bench_bf16.log" 2>&1
rc=$?; echo "[+$(( $(date +%s) - t0 ))s] bf16 bench rc=$rc"
grep '^@@' "$LOGS/bench_bf16.log" | grep -E "bf16 \||bf16\[0|portable" | sed 's/^@@ *//'
echo "== max rel err per row (tests; fp8 d128 vtpre rows, then each variant's worst)"
grep -h "rel err" "$LOGS/tests.log" | grep -v "worst rel err" | awk '{
  d = $2 " " $3; n = split($0, a, "["); split(a[n], b, "]"); row = b[1];
  e = $NF + 0; k = d " [" row "]"; if (e > m[k]) m[k] = e; c[k]++ }
  END { for (k in m) printf "%s: %.2e (%d runs)\n", k, m[k], c[k] }' | sort | grep "fp8_e4m3 d=128 .*vtpre"
grep -h "worst rel err" "$LOGS/tests.log"
grep -E "^\[  (PASSED|FAILED) " "$LOGS/tests.log"
echo "== SASS (static counts; tune <K, V, persistent, poly mask, overlap, split-q, features, probe>)"
for f in "$B"/*hopper_prefill_fp8_d128_vt.cu.o; do
  python3 scripts/hopper_sass_counts.py "$f" | grep -v "^kernel" | grep "Li4ELi4E\|Li3ELi3ELb1ELi0ELb1ELb0ELi78E" | sort -u
done | sort -u | sed 's/^Li//; s/ELi/,/g; s/ELb/,/g; s/EE / /; s/E / /'
python3 scripts/hopper_sass_counts.py "$B"/*hopper_prefill_fp8_d128_vt.cu.o 2>/dev/null | head -1
# Nsight Compute of the given tuning rows (causal 8K), as long as the call's time allows (~225 s).
for t in $NCU_ROWS; do
  left=$(( 225 - ($(date +%s) - t0) ))
  [ $left -lt 40 ] && { echo "ncu $t: skipped (${left}s left)"; continue; }
  timeout $(( left - 15 )) ncu --kernel-name regex:hopper_prefill_kernel --launch-skip 1 --launch-count 1 \
    --section SpeedOfLight --section ComputeWorkloadAnalysis --section WarpStateStats --section SchedulerStats \
    --section InstructionStats --section LaunchStats -f -o "$LOGS/prof_t$t" \
    "$B/hopper_prefill_bench" "B2 L8192 h32/8 d128 fp8" "$t" > "$LOGS/ncu_t$t.log" 2>&1
  rc=$?; echo "[+$(( $(date +%s) - t0 ))s] ncu tuning $t rc=$rc"
  timeout 30 python3 scripts/hopper_ncu_summary.py "$LOGS/prof_t$t.ncu-rep" 8 > "$LOGS/ncu_summary_t$t.txt" 2>&1
  head -${HOPPER_NCU_LINES:-24} "$LOGS/ncu_summary_t$t.txt" | cut -c1-150
done
tar -czf "$OUT/logs.tgz" -C "$OUT" logs && rm -rf "$LOGS"
echo "[+$(( $(date +%s) - t0 ))s] done"
