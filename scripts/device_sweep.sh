#!/usr/bin/env bash
# Run THERE (after the build): issue 9's serving sweeps with random weights. For each row, starts
# `kiln serve --device cuda --load-format dummy` (tokenizer: the 32000-token llama-spm vocabulary
# of the shared test data, Mistral's/Mixtral's vocabulary size), runs `kiln bench sweep` with
# open-loop Poisson arrivals and outputs forced to full length, and stops the server.
#   scripts/device_sweep.sh ROW_REGEX
# Rows (name | model | prompt | output | rates | prompts per point | p90 e2e cutoff ms | serve flags):
set -uo pipefail
cd "$(dirname "$0")/.."
KILN=${KILN:-build-device/kiln}
OUT=${OUT:-$PWD/device-out}
mkdir -p "$OUT"
export LD_LIBRARY_PATH=$PWD/.carry/sysroot/usr/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
TOK=${KILN_SWEEP_TOKENIZER:-.carry/shared/testdata/vocab/ggml-vocab-llama-spm.gguf}
[ -f "$TOK" ] || TOK=../shared/testdata/vocab/ggml-vocab-llama-spm.gguf
PEAK_BF16=${KILN_PEAK_BF16:-790}
PEAK_FP8=${KILN_PEAK_FP8:-1300}
rows=(
  "A-mistral-bf16|bench/models/mistral-7b|1024|50|${KILN_RATES_A_BF16:-8,12,16,20}|${KILN_PROMPTS_A:-240}|2000|"
  "A-mistral-fp8|bench/models/mistral-7b|1024|50|${KILN_RATES_A_FP8:-16,24,32,40}|${KILN_PROMPTS_A:-240}|2000|--quantization fp8 --kv-cache-dtype fp8"
  "A-mixtral-fp8|bench/models/mixtral-8x7b|1024|50|${KILN_RATES_A_MIX:-6,10,15,20}|${KILN_PROMPTS_A:-240}|2000|--quantization fp8 --kv-cache-dtype fp8"
  "B8k-mistral-bf16|bench/models/mistral-7b|8192|300|${KILN_RATES_B8:-0.5,1,2,3}|${KILN_PROMPTS_B8:-40}|20000|"
  "B8k-mistral-fp8|bench/models/mistral-7b|8192|300|${KILN_RATES_B8_FP8:-1,2,3,4}|${KILN_PROMPTS_B8:-40}|20000|--quantization fp8 --kv-cache-dtype fp8"
  # 32K: the prompt is 32768 - 300 so prompt + output fit Mistral's 32768-token context.
  "B32k-mistral-bf16|bench/models/mistral-7b|32468|300|${KILN_RATES_B32:-0.1,0.2,0.4}|${KILN_PROMPTS_B32:-12}|60000|"
  "B32k-mistral-fp8|bench/models/mistral-7b|32468|300|${KILN_RATES_B32_FP8:-0.2,0.4,0.6}|${KILN_PROMPTS_B32:-12}|60000|--quantization fp8 --kv-cache-dtype fp8"
)
regex=${1:-.}
port=8200
for r in "${rows[@]}"; do
  IFS='|' read -r name model plen olen rates n cutoff flags <<<"$r"
  grep -Eq -- "$regex" <<<"$name" || continue
  peak=$PEAK_BF16; grep -q fp8 <<<"$flags" && peak=$PEAK_FP8
  port=$((port + 1))
  echo "=== $name: serve $model $flags" | tee -a "$OUT/sweep.log"
  KILN_LOG_LEVEL=info "$KILN" serve --device cuda --load-format dummy -m "$model" --tokenizer "$TOK" --port $port \
    --served-model-name m --max-num-seqs ${KILN_MAX_NUM_SEQS:-128} --max-num-batched-tokens ${KILN_BATCHED_TOKENS:-2048} \
    $flags > "$OUT/serve_$name.log" 2>&1 &
  pid=$!
  ok=0
  for i in $(seq 1 240); do curl -sf localhost:$port/health >/dev/null && { ok=1; break; }; kill -0 $pid 2>/dev/null || break; sleep 0.5; done
  if [ $ok != 1 ]; then echo "$name: server did not come up"; tail -5 "$OUT/serve_$name.log"; kill -9 $pid 2>/dev/null; continue; fi
  # Device busy fraction: the engine's forward seconds per wall second, sampled every 5 s.
  ( while kill -0 $pid 2>/dev/null; do
      m=$(curl -s localhost:$port/metrics)
      echo "$(date +%s.%N) $(grep -E '^kiln_engine_forward_seconds_total' <<<"$m" | awk '{print $NF}') $(grep -E '^kiln_engine_step_seconds_total' <<<"$m" | awk '{print $NF}') $(grep -E '^kiln_engine_steps_total' <<<"$m" | awk '{print $NF}')"
      sleep 5
    done ) > "$OUT/busy_$name.txt" 2>/dev/null &
  sampler=$!
  "$KILN" bench sweep --base-url http://localhost:$port --model m --tokenizer "$TOK" --random-input-len "$plen" \
    --random-output-len "$olen" --request-rates "$rates" --num-prompts "$n" --num-warmups 2 --slo-metric e2el \
    --slo-percentile 90 --slo-cutoff-ms "$cutoff" --model-config "$model" --peak-tflops "$peak" \
    --result-dir "$OUT/sweep-$name" --label "$name" --no-progress > "$OUT/sweep_$name.log" 2>&1
  echo "$name: sweep rc=$?" | tee -a "$OUT/sweep.log"
  grep -E "kiln_(engine_)?(gpu|steps|batch|num_running)" <(curl -s localhost:$port/metrics) | head -6 >> "$OUT/sweep.log"
  kill -TERM $pid; wait $pid 2>/dev/null; kill $sampler 2>/dev/null
  awk 'NR > 1 && $2 != "" && p2 != "" { dt = $1 - t; f = ($2 - p2) / dt; s = ($3 - p3) / dt; n = ($4 - p4) / dt;
         if (f > best) { best = f; bs = s; bn = n } }
       { t = $1; p2 = $2; p3 = $3; p4 = $4 }
       END { printf "busy: best 5 s window: forward %.1f%% of wall, step %.1f%%, %.1f steps/s\n", 100 * best, 100 * bs, bn }' \
    "$OUT/busy_$name.txt" | tee -a "$OUT/sweep.log"
  grep "kiln bench sweep: request rate" "$OUT/sweep_$name.log" | tee -a "$OUT/sweep.log"
done
