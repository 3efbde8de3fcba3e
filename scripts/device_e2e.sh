#!/usr/bin/env bash
# Run THERE after scripts/device_run.sh has built build-device/: end-to-end GPU generation with
# random weights (--load-format dummy) on benchmark shapes. Prints TTFT (prefill time) and
# batch-1 decode tokens/s with the implied weight-read bandwidth.
set -uo pipefail
cd "$(dirname "$0")/.."
KILN=build-device/kiln
OUT=${OUT:-$PWD/device-out}
mkdir -p "$OUT"
export LD_LIBRARY_PATH=$PWD/.carry/sysroot/usr/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
cmake --build build-device -j 16 --target kiln > "$OUT/e2e_build.log" 2>&1 || { tail -20 "$OUT/e2e_build.log"; exit 4; }
# name | config dir | prompt tokens | new tokens | bytes read per decode token (bf16 weights minus the embedding table)
runs=(
  "llama3-8b|bench/models/llama3-8b|8192|64|15009849344"
  "llama3-8b|bench/models/llama3-8b|32768|16|15009849344"
  "mistral-7b|bench/models/mistral-7b|1024|128|14221320192"
)
printf "%-12s %8s %6s %10s %12s %10s\n" model prompt new ttft_ms decode_tok/s weight_GB/s > "$OUT/e2e_table.txt"
for r in "${runs[@]}"; do
  IFS='|' read -r name dir plen n bytes <<<"$r"
  line=$(KILN_LOG_LEVEL=warn timeout 300 "$KILN" generate --device cuda --load-format dummy -m "$dir" \
         --random-prompt-len "$plen" -n "$n" 2>&1 >/dev/null | grep "tokens/s" | tail -1)
  echo "$name $plen: $line" | tee -a "$OUT/e2e.log"
  ptps=$(sed -E 's/.*prompt: [0-9]+ tokens, ([0-9.]+) tokens\/s.*/\1/' <<<"$line")
  dtps=$(sed -E 's/.*generation: [0-9]+ tokens, ([0-9.]+) tokens\/s.*/\1/' <<<"$line")
  awk -v n="$name" -v p="$plen" -v k="$n" -v pt="$ptps" -v dt="$dtps" -v b="$bytes" \
    'BEGIN { printf "%-12s %8d %6d %10.1f %12.1f %10.0f\n", n, p, k, (pt > 0 ? 1000 * p / pt : 0), dt, dt * b / 1e9 }' >> "$OUT/e2e_table.txt"
done
cat "$OUT/e2e_table.txt"
