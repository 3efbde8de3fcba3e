#!/usr/bin/env bash
# Run THERE: `kiln serve --device cuda` on a real checkpoint (path in $1), driven over HTTP:
# completions and chat (stream and not), the greedy output compared with the CPU backend on the
# same machine, then `kiln bench serve` against it. Prints PASS/FAIL lines and the bench summary.
set -uo pipefail
cd "$(dirname "$0")/.."
MODEL=$1
KILN=${KILN:-build-device/kiln}
export LD_LIBRARY_PATH=$PWD/.carry/sysroot/usr/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
OUT=${OUT:-/tmp/serve-out}; mkdir -p "$OUT"
fail=0
check() { if eval "$2"; then echo "PASS $1"; else echo "FAIL $1"; fail=1; fi; }
"$KILN" serve --device cuda --model "$MODEL" --port 8123 --max-num-seqs 64 --served-model-name m > "$OUT/serve_gpu.log" 2>&1 &
gpu=$!
"$KILN" serve --device cpu --dtype f32 --model "$MODEL" --port 8124 --served-model-name m > "$OUT/serve_cpu.log" 2>&1 &
cpu=$!
for port in 8123 8124; do
  for i in $(seq 1 120); do curl -sf localhost:$port/health >/dev/null && break; sleep 0.5; done
done
req='{"model":"m","prompt":"The capital of France is Paris. The capital of Germany is","max_tokens":24,"temperature":0}'
g=$(curl -s localhost:8123/v1/completions -H 'Content-Type: application/json' -d "$req")
c=$(curl -s localhost:8124/v1/completions -H 'Content-Type: application/json' -d "$req")
echo "gpu: $g" | head -c 600; echo; echo "cpu: $c" | head -c 600; echo
gt=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["choices"][0]["text"])' "$g")
ct=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["choices"][0]["text"])' "$c")
check "completion returns text" '[ -n "$gt" ]'
check "gpu greedy starts like cpu greedy (first 8 words)" '[ "$(echo $gt | cut -d" " -f1-8)" = "$(echo $ct | cut -d" " -f1-8)" ]'
chat='{"model":"m","messages":[{"role":"user","content":"What is the capital of France?"}],"max_tokens":20,"temperature":0,"stream":true,"stream_options":{"include_usage":true}}'
s=$(curl -sN localhost:8123/v1/chat/completions -H 'Content-Type: application/json' -d "$chat")
echo "$s" | tail -3
check "chat stream ends with [DONE]" 'grep -q "data: \[DONE\]" <<<"$s"'
check "chat stream carries usage" 'grep -q "completion_tokens" <<<"$s"'
bad=$(curl -s -o /dev/null -w '%{http_code}' localhost:8123/v1/completions -H 'Content-Type: application/json' -d '{"model":"m","prompt":')
check "malformed JSON gets 400" '[ "$bad" = 400 ]'
"$KILN" bench serve --base-url http://localhost:8123 --model m --tokenizer "$MODEL" --num-prompts 200 \
  --request-rate inf --max-concurrency 64 --random-input-len 256 --random-output-len 64 > "$OUT/bench.log" 2>&1
rc=$?
tail -30 "$OUT/bench.log"
check "bench serve 200 requests at concurrency 64 without errors" '[ $rc -eq 0 ]'
check "server still healthy" 'curl -sf localhost:8123/health >/dev/null'
grep -E "^kiln_(num_requests|gpu|kv)" <(curl -s localhost:8123/metrics) | head -8
kill -TERM $gpu $cpu; wait $gpu; echo "gpu server exit: $?"
exit $fail
