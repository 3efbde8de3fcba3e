#!/usr/bin/env bash
# Run THERE after scripts/device_run.sh has built build-device/ (or with KILN=path): end-to-end GPU
# generation with random weights (--load-format dummy) on benchmark shapes: TTFT (prefill time)
# and batch-1 decode tokens/s against copy bandwidth / bytes read per token (scripts/decode_bytes.py:
# weights, LM head, KV cache at the context). Env: KILN_E2E_ROWS (regex over row names; default all),
# KILN_COPY_GBS (copy ceiling; default 3000 or gpu_ceilings.json's).
set -uo pipefail
cd "$(dirname "$0")/.."
KILN=${KILN:-build-device/kiln}
OUT=${OUT:-$PWD/device-out}
mkdir -p "$OUT"
export LD_LIBRARY_PATH=$PWD/.carry/sysroot/usr/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
if [ -z "${KILN_NO_BUILD:-}" ] && [ "$KILN" = build-device/kiln ]; then
  cmake --build build-device -j 16 --target kiln > "$OUT/e2e_build.log" 2>&1 || { tail -20 "$OUT/e2e_build.log"; exit 4; }
fi
COPY=${KILN_COPY_GBS:-3000}
# name | config dir | prompt | new tokens | extra flags | weights | kv | env
runs=(
  "llama8b-8k-portable|bench/models/llama3-8b|8192|16||bf16|bf16|KILN_HOPPER_PREFILL=0"
  "llama8b-8k|bench/models/llama3-8b|8192|16||bf16|bf16|"
  "llama8b-32k-portable|bench/models/llama3-8b|32768|8||bf16|bf16|KILN_HOPPER_PREFILL=0"
  "llama8b-32k|bench/models/llama3-8b|32768|8||bf16|bf16|"
  "llama8b-32k-fp8kv|bench/models/llama3-8b|32768|64|--kv-cache-dtype fp8|bf16|fp8|"
  "llama8b-decode|bench/models/llama3-8b|128|256||bf16|bf16|"
  "llama8b-decode-fp8|bench/models/llama3-8b|128|256|--quantization fp8|fp8|bf16|"
  "llama8b-decode-fp8-kv|bench/models/llama3-8b|128|256|--quantization fp8 --kv-cache-dtype fp8|fp8|fp8|"
  "llama8b-decode-fp8-kv-norot|bench/models/llama3-8b|128|256|--quantization fp8 --kv-cache-dtype fp8 --kv-cache-key-rotation none|fp8|fp8|"
  "mistral7b-1k|bench/models/mistral-7b|1024|128||bf16|bf16|"
  "mistral7b-1k-fp8|bench/models/mistral-7b|1024|128|--quantization fp8 --kv-cache-dtype fp8|fp8|fp8|"
  "mixtral-1k-fp8-grouped|bench/models/mixtral-8x7b|1024|128|--quantization fp8 --kv-cache-dtype fp8|fp8|fp8|KILN_MOE_DECODE=0"
  "mixtral-1k-fp8|bench/models/mixtral-8x7b|1024|128|--quantization fp8 --kv-cache-dtype fp8|fp8|fp8|"
  "mixtral-1k-fp8-norot|bench/models/mixtral-8x7b|1024|128|--quantization fp8 --kv-cache-dtype fp8 --kv-cache-key-rotation none|fp8|fp8|"
  "mixtral-decode-fp8|bench/models/mixtral-8x7b|128|256|--quantization fp8|fp8|bf16|"
)
printf "%-22s %7s %5s %9s %10s %9s %7s\n" run prompt new ttft_ms decode_t/s GB/s %copy > "$OUT/e2e_table.txt"
for r in "${runs[@]}"; do
  IFS='|' read -r name dir plen n flags wdt kvdt envs <<<"$r"
  [ -n "${KILN_E2E_ROWS:-}" ] && ! grep -Eq -- "$KILN_E2E_ROWS" <<<"$name" && continue
  line=$(env $envs KILN_LOG_LEVEL=warn timeout 300 "$KILN" generate --device cuda --load-format dummy -m "$dir" \
         --random-prompt-len "$plen" -n "$n" $flags 2>&1 >/dev/null | tee -a "$OUT/e2e_$name.log" | grep "tokens/s" | tail -1)
  echo "$name: $line" >> "$OUT/e2e.log"
  ptps=$(sed -E 's/.*prompt: [0-9]+ tokens, ([0-9.]+) tokens\/s.*/\1/' <<<"$line")
  dtps=$(sed -E 's/.*generation: [0-9]+ tokens, ([0-9.]+) tokens\/s.*/\1/' <<<"$line")
  bytes=$(python3 scripts/decode_bytes.py "$dir/config.json" "$wdt" "$kvdt" "$((plen + n / 2))")
  awk -v nm="$name" -v p="$plen" -v k="$n" -v pt="$ptps" -v dt="$dtps" -v b="$bytes" -v c="$COPY" \
    'BEGIN { g = dt * b / 1e9; printf "%-22s %7d %5d %9.1f %10.1f %9.0f %6.1f%%\n", nm, p, k, (pt > 0 ? 1000 * p / pt : 0), dt, g, 100 * g / c }' >> "$OUT/e2e_table.txt"
done
cat "$OUT/e2e_table.txt"
