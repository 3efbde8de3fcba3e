#!/usr/bin/env bash
# Out-of-range, NaN and conflicting command-line values: `kiln generate`, `serve`, `eval kl`,
# `bench latency`, `bench serve` and `bench sweep` refuse them with a message naming the option, a non-zero exit and no crash (exit
# codes >= 128 would be a signal: abort, bad_alloc).
set -uo pipefail
KILN="$1"; SRC="$2"
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
fail=0
# Tiny Llama 3 and Mixtral checkpoints (vocabulary 320) with a byte-level tokenizer cut to 320
# tokens: they load in milliseconds.
M="$tmp/llama3"; cp -r "$SRC/tests/golden/llama3" "$M"
MIX="$tmp/mixtral"; cp -r "$SRC/tests/golden/mixtral" "$MIX"
python3 - "$SRC/tests/data/tokenizer/hf_tiny_bytelevel/tokenizer.json" "$M/tokenizer.json" <<'PY'
import json, sys
t = json.load(open(sys.argv[1]))
vocab = {p: i for p, i in t["model"]["vocab"].items() if i < 320}
t["model"]["vocab"] = vocab
merges = [m if isinstance(m, list) else m.split(" ", 1) for m in t["model"]["merges"]]
t["model"]["merges"] = [m for m in merges if m[0] in vocab and m[1] in vocab and m[0] + m[1] in vocab]
t["added_tokens"] = [a for a in t["added_tokens"] if a["id"] < 320]
json.dump(t, open(sys.argv[2], "w"))
PY
cp "$M/tokenizer.json" "$MIX/"
expect_error() {  # name, text the message must contain, command...
  local name="$1" want="$2"; shift 2
  local err; err=$(KILN_LOG_LEVEL=warn timeout 120 "$@" 2>&1 >/dev/null); local rc=$?
  if [ $rc -eq 0 ] || [ $rc -ge 124 ] || ! grep -qF -- "$want" <<<"$err"; then
    echo "FAIL $name: rc=$rc: $err"; fail=1
  else
    echo "ok   $name: $(head -n 1 <<<"$err")"
  fi
}
gen=("$KILN" generate -m "$M" -n 2)
for v in nan inf -1 101; do expect_error "generate --temperature $v" "--temperature" "${gen[@]}" --prompt-ids 1,2 --temperature "$v"; done
for v in nan 0 -0.5 1.5; do expect_error "generate --top-p $v" "--top-p" "${gen[@]}" --prompt-ids 1,2 --top-p "$v"; done
for v in nan -inf 2; do expect_error "generate --min-p $v" "--min-p" "${gen[@]}" --prompt-ids 1,2 --min-p "$v"; done
expect_error "generate --kv-cache-scale nan" "--kv-cache-scale" "${gen[@]}" --prompt-ids 1,2 --kv-cache-scale nan
expect_error "generate --moe-top-k -1" "--moe-top-k" "${gen[@]}" --prompt-ids 1,2 --moe-top-k -1
expect_error "generate --moe-top-k 9 (4 experts)" "--moe-top-k 9" "$KILN" generate -m "$MIX" -n 2 --prompt-ids 1,2 --moe-top-k 9
expect_error "generate --prompt-ids 4000000000" "--prompt-ids" "${gen[@]}" --prompt-ids 1,4000000000
expect_error "generate --prompt-ids 1.5" "--prompt-ids" "${gen[@]}" --prompt-ids 1.5
expect_error "generate --prompt-ids x" "--prompt-ids" "${gen[@]}" --prompt-ids 1,,2
expect_error "generate --prompt-ids beyond vocab" "outside the vocabulary" "${gen[@]}" --prompt-ids 1,320
expect_error "generate -p with --prompt-ids" "--prompt-ids" "${gen[@]}" -p hello --prompt-ids 1,2
expect_error "eval kl --moe-top-k -1" "--moe-top-k" "$KILN" eval kl -m "$M" --file "$SRC/README.md" --moe-top-k -1
expect_error "serve --kv-cache-gib nan" "--kv-cache-gib" "$KILN" serve -m "$M" --port 0 --kv-cache-gib nan
expect_error "serve --num-kv-blocks 1e9" "--num-kv-blocks" "$KILN" serve -m "$M" --port 0 --num-kv-blocks 1000000000
expect_error "serve --num-kv-blocks 1e8" "host memory" "$KILN" serve -m "$M" --port 0 --num-kv-blocks 100000000
mem_gib=$(awk '/MemTotal/ {print int($2 / 1048576)}' /proc/meminfo)
if [ "$mem_gib" -lt 1000 ]; then
  expect_error "serve --kv-cache-gib 1000" "--kv-cache-gib" "$KILN" serve -m "$M" --port 0 --kv-cache-gib 1000
fi
lat=("$KILN" bench latency -m "$M" --input-len 4 --output-len 2 --num-iters 1 --num-iters-warmup 0)
expect_error "bench latency --batch-size 1e8" "--batch-size" "${lat[@]}" --batch-size 100000000
# bench serve / sweep: a bad load or SLO value is refused before any request (port 1: nothing listens).
bs=("$KILN" bench serve --port 1 --num-prompts 1 --tokenizer "$M")
for flag in --burstiness --duration --request-timeout; do
  for v in nan 0 -1; do expect_error "bench serve $flag $v" "$flag" "${bs[@]}" "$flag" "$v"; done
done
for v in nan -1; do expect_error "bench serve --peak-tflops $v" "--peak-tflops" "${bs[@]}" --peak-tflops "$v"; done
expect_error "bench serve --random-range-ratio nan" "--random-range-ratio" "${bs[@]}" --random-range-ratio nan
expect_error "bench serve --temperature nan" "--temperature" "${bs[@]}" --temperature nan
for v in -1 0; do expect_error "bench serve --max-concurrency $v" "--max-concurrency" "${bs[@]}" --max-concurrency "$v"; done
expect_error "bench sweep --slo-percentile 0" "--slo-percentile" "$KILN" bench sweep --port 1 --request-rates 1 --slo-percentile 0
expect_error "bench sweep --slo-cutoff-ms nan" "--slo-cutoff-ms" "$KILN" bench sweep --port 1 --request-rates 1 --slo-cutoff-ms nan
# The good values still run.
out=$(KILN_LOG_LEVEL=warn "${gen[@]}" --prompt-ids 1,2 --temperature 0.7 --top-p 0.9 --min-p 0.05 2>&1 >/dev/null); rc=$?
if [ $rc -ne 0 ]; then echo "FAIL generate with good sampling flags: rc=$rc: $out"; fail=1; else echo "ok   generate with good sampling flags"; fi
exit $fail
