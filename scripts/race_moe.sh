#!/usr/bin/env bash
# Debugging aid (device): repeat the fp8 MoE decode checks with PDL turned off per kernel name
# (KILN_PDL_OFF) and count the repetitions whose x-fp8 case went wrong. Args: substrings.
export LD_LIBRARY_PATH=$PWD/.carry/sysroot/usr/lib/x86_64-linux-gnu
T=${KILN_TESTS:-build-device/kiln_tests}
OUT=${OUT:-/tmp}
for off in "" "$@"; do
  log=$OUT/race_${off:-none}.log
  KILN_PDL_OFF="$off" timeout 100 $T --gtest_filter='CudaFp8.LogitsMatchCpuFp8Model:CudaMoeDecode.*' --gtest_repeat=${REPS:-15} > "$log" 2>&1
  echo "pdl off for '${off:-none}': failed $(grep -c '^\[  FAILED  \] Cuda.*ms)' "$log") / $(grep -c '^\[ RUN      \] CudaMoeDecode' "$log"); x-fp8 errs: $(grep 'x fp8=1' "$log" | sed -E 's/.*logit\| ([0-9.e+-]+).*/\1/' | sort | uniq -c | tr '\n' ' ')"
done
