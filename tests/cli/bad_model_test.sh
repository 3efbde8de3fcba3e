#!/usr/bin/env bash
# `kiln generate` on truncated / corrupted / missing model files: one-line error naming the file,
# non-zero exit, no crash (exit codes >= 128 would be a signal).
set -uo pipefail
KILN="$1"; SRC="$2"
MODEL="${KILN_MODEL:-${KILN_MODEL_DIR:-$HOME/.cache/kiln/models}/SmolLM2-135M-Instruct.Q4_1.gguf}"
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
fail=0
expect_error() {  # name, model path, file name the message must contain
  local name="$1" path="$2" want="$3"
  local err; err=$(KILN_LOG_LEVEL=warn "$KILN" generate -m "$path" --prompt-ids 1,2,3 -n 2 2>&1 >/dev/null); local rc=$?
  local lines; lines=$(printf '%s\n' "$err" | grep -c .)
  if [ $rc -eq 0 ] || [ $rc -ge 128 ] || [ "$lines" -ne 1 ] || ! grep -qF "$want" <<<"$err"; then
    echo "FAIL $name: rc=$rc lines=$lines: $err"; fail=1
  else
    echo "ok   $name: $err"
  fi
}
# Hugging Face directory with a truncated / corrupted / missing safetensors file.
for kind in truncated header missing-shard; do
  d="$tmp/hf-$kind"; cp -r "$SRC/tests/golden/llama_tied_sharded" "$d"
  case $kind in
    truncated) f="$d/model-00002-of-00004.safetensors"; head -c 50000 "$f" >"$f.tmp"; mv "$f.tmp" "$f";;
    header) f="$d/model-00001-of-00004.safetensors"; printf '\x40\x00\x00\x00\x00\x00\x00\x00{"a":' | dd of="$f" conv=notrunc status=none;;
    missing-shard) f="$d/model-00003-of-00004.safetensors"; rm "$f";;
  esac
  expect_error "safetensors $kind" "$d" "$(basename "$f")"
done
d="$tmp/hf-badconfig"; cp -r "$SRC/tests/golden/llama3" "$d"; echo '{"architectures": [' >"$d/config.json"
expect_error "config.json malformed" "$d" "config.json"
expect_error "missing file" "$tmp/no-such-model.gguf" "no-such-model.gguf"
if [ -s "$MODEL" ]; then
  head -c 3000000 "$MODEL" >"$tmp/truncated.gguf"; expect_error "gguf truncated" "$tmp/truncated.gguf" "truncated.gguf"
  head -c 100 "$MODEL" >"$tmp/short.gguf"; expect_error "gguf header cut" "$tmp/short.gguf" "short.gguf"
  cp "$MODEL" "$tmp/badmagic.gguf"; printf 'XXXX' | dd of="$tmp/badmagic.gguf" conv=notrunc status=none
  expect_error "gguf bad magic" "$tmp/badmagic.gguf" "badmagic.gguf"
  cp "$MODEL" "$tmp/badversion.gguf"; printf '\x63\x00\x00\x00' | dd of="$tmp/badversion.gguf" bs=1 seek=4 conv=notrunc status=none
  expect_error "gguf bad version" "$tmp/badversion.gguf" "badversion.gguf"
else
  echo "skip gguf cases: $MODEL missing"
fi
exit $fail
