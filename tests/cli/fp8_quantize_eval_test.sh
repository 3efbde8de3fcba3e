#!/usr/bin/env bash
# `kiln quantize` + `kiln eval kl` + the fp8 flags end to end on the tiny golden checkpoints
# (and SmolLM2's GGUF when present): the quantized directory runs, its KL against the original
# equals quantizing at load, base == test gives KL 0, bad fp8 checkpoints fail in one line.
set -uo pipefail
KILN="$1"; SRC="$2"
MODEL="${KILN_MODEL:-${KILN_MODEL_DIR:-$HOME/.cache/kiln/models}/SmolLM2-135M-Instruct.Q4_1.gguf}"
export KILN_LOG_LEVEL=warn
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
fail=0
check() { if eval "$2"; then echo "ok   $1"; else echo "FAIL $1"; fail=1; fi; }
json_of() { grep '^@@ eval_kl ' "$1" | sed 's/^@@ eval_kl //'; }
field() { python3 -c "import json,sys; print(json.loads(sys.argv[1])[sys.argv[2]])" "$1" "$2"; }

python3 -c "import random; random.seed(3); print(' '.join(str(random.randrange(320)) for _ in range(300)))" >"$tmp/ids.txt"
G="$SRC/tests/golden"
"$KILN" quantize -m "$G/mixtral" -o "$tmp/mixtral-fp8" >"$tmp/q.out" 2>"$tmp/q.err"
check "quantize mixtral (progress on stderr)" '[ -s "$tmp/mixtral-fp8/model.safetensors" ] && grep -q "quantizing" "$tmp/q.err" && grep -q compressed-tensors "$tmp/mixtral-fp8/config.json"'
"$KILN" quantize -m "$G/llama3" -o "$tmp/llama3-pt" --per-tensor --kv-cache-scales 0.5 >/dev/null 2>&1
check "quantize --per-tensor --kv-cache-scales 0.5" 'grep -q "\"quant_method\": \"fp8\"" "$tmp/llama3-pt/config.json"'

"$KILN" eval kl -m "$G/mixtral" --file "$tmp/ids.txt" --file-ids --ctx 64 >"$tmp/same.out" 2>"$tmp/same.err"
j=$(json_of "$tmp/same.out")
check "eval kl base == test: KL 0, agreement 1" '[ "$(field "$j" mean_kl)" = "0.0" ] && [ "$(field "$j" top1_agreement)" = "1.0" ] && [ "$(field "$j" tokens)" = "124" ]'
check "eval kl progress on stderr" 'grep -q "^\[4/4\]" "$tmp/same.err"'
"$KILN" eval kl -m "$G/mixtral" --file "$tmp/ids.txt" --file-ids --ctx 64 --quantization fp8 >"$tmp/atload.out" 2>/dev/null
"$KILN" eval kl -m "$G/mixtral" --test-model "$tmp/mixtral-fp8" --file "$tmp/ids.txt" --file-ids --ctx 64 >"$tmp/dir.out" 2>/dev/null
a=$(json_of "$tmp/atload.out"); d=$(json_of "$tmp/dir.out")
check "quantized dir KL == fp8-at-load KL (> 0)" '[ "$(field "$a" mean_kl)" = "$(field "$d" mean_kl)" ] && python3 -c "import sys; assert 0 < float(sys.argv[1]) < 0.1" "$(field "$a" mean_kl)"'
"$KILN" eval kl -m "$G/llama3" --file "$tmp/ids.txt" --file-ids --ctx 64 --dtype fp8 --kv-cache-dtype fp8 --score-all >"$tmp/kv.out" 2>/dev/null
k=$(json_of "$tmp/kv.out")
check "eval kl --dtype fp8 --kv-cache-dtype fp8 --score-all" '[ "$(field "$k" tokens)" = "252" ] && python3 -c "import sys; assert 0 < float(sys.argv[1]) < 0.1" "$(field "$k" mean_kl)"'

# The golden directories carry no tokenizer: `bench latency` runs them (ids only).
LAT="--input-len 8 --output-len 4 --batch-size 2 --num-iters 1 --num-iters-warmup 0"
check "bench latency on the quantized dir" '"$KILN" bench latency -m "$tmp/llama3-pt" $LAT >/dev/null 2>&1'
check "bench latency --quantization fp8 --fp8-per-tensor --kv-cache-dtype fp8" '"$KILN" bench latency -m "$G/qwen2" $LAT --quantization fp8 --fp8-per-tensor --kv-cache-dtype fp8 --kv-cache-scale 0.5 --output-json "$tmp/lat.json" >/dev/null 2>&1 && grep -q "\"kv_cache_dtype\": \"fp8\"" "$tmp/lat.json"'
check "bench latency --dtype fp8 --moe-top-k 1 on mixtral" '"$KILN" bench latency -m "$G/mixtral" $LAT --dtype fp8 --moe-top-k 1 >/dev/null 2>&1'
err=$("$KILN" generate -m "$G/qwen2" --prompt-ids 1,2 -n 2 --kv-cache-dtype fp8_e5m2 2>&1 >/dev/null)
check "--kv-cache-dtype fp8_e5m2 is a clear error" '[ $? -ne 0 ] && grep -q "supported: auto, fp8" <<<"$err"'
err=$("$KILN" generate -m "$G/qwen2" --prompt-ids 1,2 -n 2 --quantization awq 2>&1 >/dev/null)
check "--quantization awq is a clear error" 'grep -q "supported: none, fp8" <<<"$err"'

check "serve takes the fp8 flags" '"$KILN" serve --help | grep -q -- "--kv-cache-dtype" && "$KILN" serve --help | grep -q -- "--moe-top-k"'

# A block-wise fp8 config: one line naming the file and what is not implemented.
cp -r "$tmp/mixtral-fp8" "$tmp/blockwise"
python3 - "$tmp/blockwise/config.json" <<'PY'
import json, sys
p = sys.argv[1]; c = json.load(open(p))
c["quantization_config"] = {"quant_method": "fp8", "activation_scheme": "dynamic", "weight_block_size": [128, 128]}
json.dump(c, open(p, "w"))
PY
err=$("$KILN" generate -m "$tmp/blockwise" --prompt-ids 1,2 -n 2 2>&1 >/dev/null); rc=$?
check "block-wise fp8 checkpoint: one-line error" '[ $rc -eq 1 ] && [ "$(grep -c . <<<"$err")" -eq 1 ] && grep -q "weight_block_size" <<<"$err" && grep -q "config.json" <<<"$err"'
err=$("$KILN" quantize -m "$G/llama3" -o "$tmp/x" --kv-cache-scales calibrate 2>&1 >/dev/null)
check "calibrate without --calib-file is a clear error" 'grep -q "needs --calib-file" <<<"$err"'
err=$("$KILN" quantize -m "$G/llama3" -o "$tmp/x" --method gptq 2>&1 >/dev/null)
check "gptq without --calib-file is a clear error" 'grep -q "gptq needs --calib-file" <<<"$err"'
err=$("$KILN" quantize -m "$G/llama3" -o "$tmp/x" --method awq --calib-file "$tmp/ids.txt" 2>&1 >/dev/null)
check "--method awq is a clear error" 'grep -q "expected rtn or gptq" <<<"$err"'

if [ -s "$MODEL" ]; then
  printf 'First Citizen:\nBefore we proceed any further, hear me speak.\n' >"$tmp/calib.txt"
  "$KILN" quantize -m "$MODEL" -o "$tmp/smol-fp8" --kv-cache-scales calibrate --calib-file "$tmp/calib.txt" >/dev/null 2>&1
  check "quantize SmolLM2 GGUF: tokenizer.gguf + k_scale" '[ -s "$tmp/smol-fp8/tokenizer.gguf" ] && grep -q kv_cache_scheme "$tmp/smol-fp8/config.json"'
  want=$(echo "Hello world, once upon a time" | "$KILN" tokenize --model "$MODEL" 2>/dev/null)
  got=$(echo "Hello world, once upon a time" | "$KILN" tokenize --model "$tmp/smol-fp8" 2>/dev/null)
  check "same tokens from tokenizer.gguf" '[ -n "$want" ] && [ "$want" = "$got" ]'
  out=$("$KILN" generate -m "$tmp/smol-fp8" -p "The capital of France is" -n 6 --kv-cache-dtype fp8 2>/dev/null | tr '\n' ' ')
  check "generate from the quantized SmolLM2 dir with fp8 KV: '$out'" 'grep -q "Paris" <<<"$out"'
  "$KILN" quantize -m "$MODEL" -o "$tmp/smol-gptq" --method gptq --calib-file "$tmp/calib.txt" >/dev/null 2>"$tmp/gptq.err"
  check "quantize --method gptq (progress on stderr)" '[ -s "$tmp/smol-gptq/model.safetensors" ] && grep -q "calibrating" "$tmp/gptq.err"'
  out=$("$KILN" generate -m "$tmp/smol-gptq" -p "The capital of France is" -n 6 --kv-cache-dtype fp8 2>/dev/null | tr '\n' ' ')
  check "generate from the GPTQ SmolLM2 dir with fp8 KV: '$out'" 'grep -q "Paris" <<<"$out"'
else
  echo "skip SmolLM2 cases: $MODEL missing"
fi
exit $fail
