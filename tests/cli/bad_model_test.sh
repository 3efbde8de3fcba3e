#!/usr/bin/env bash
# `kiln generate` on truncated / corrupted / missing model files, absurd or unsupported config.json
# values and malformed tokenizer.json: one-line error naming the file or field, non-zero exit, no
# crash (exit codes >= 128 would be a signal).
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
# config.json values that must not size anything: absurd layer counts, NaN-free floats, silu only.
config_case() {  # name, python expression editing the dict c, text the message must contain
  local d="$tmp/hf-config-$1"; cp -r "$SRC/tests/golden/llama3" "$d"
  cp "$SRC/tests/data/tokenizer/hf_tiny_bytelevel/tokenizer.json" "$d/"
  python3 -c "import json,sys; p=sys.argv[1]; c=json.load(open(p)); $2; json.dump(c, open(p,'w'))" "$d/config.json"
  expect_error "config.json $1" "$d" "$3"
}
config_case layers-1e9 "c['num_hidden_layers']=1e9" "num_hidden_layers"
config_case layers-2e32 "c['num_hidden_layers']=2**32-1" "num_hidden_layers"
config_case layers-beyond-tensors "c['num_hidden_layers']=3" "3 layers"
config_case hidden-2e40 "c['hidden_size']=2**40" "hidden_size"
config_case eps-negative "c['rms_norm_eps']=-1e-5" "rms_norm_eps"
config_case theta-zero "c['rope_theta']=0; c['rope_parameters']['rope_theta']=0" "rope_theta"
config_case rope-factor-zero "c['rope_scaling']['factor']=0; del c['rope_parameters']" "rope_scaling.factor"
config_case gelu "c['hidden_act']='gelu'" "hidden_act 'gelu'"
# tokenizer.json of the wrong shape next to a good checkpoint: one line naming tokenizer.json.
tokenizer_case() {  # name, python expression editing the parsed tokenizer.json t (or replacing it)
  local d="$tmp/hf-tok-$1"; cp -r "$SRC/tests/golden/llama3" "$d"
  python3 -c "import json,sys; t=json.load(open(sys.argv[1])); $2; json.dump(t, open(sys.argv[2],'w'))" \
    "$SRC/tests/data/tokenizer/hf_tiny_bytelevel/tokenizer.json" "$d/tokenizer.json"
  expect_error "tokenizer.json $1" "$d" "tokenizer.json"
}
tokenizer_case null "t=None"
tokenizer_case list "t=[1,2]"
tokenizer_case model-null "t['model']=None"
tokenizer_case vocab-list "t['model']['vocab']=[1,2]"
tokenizer_case vocab-string-id "t['model']['vocab']['a']='7'"
tokenizer_case vocab-negative-id "t['model']['vocab']['a']=-1"
tokenizer_case vocab-id-2e40 "t['model']['vocab']['a']=2**40"
tokenizer_case vocab-id-1e9 "t['model']['vocab']['a']=1e9"
tokenizer_case added-object "t['added_tokens']={'id': 1}"
tokenizer_case added-no-content "t['added_tokens']=[{'id': 1}]"
tokenizer_case added-string-id "t['added_tokens']=[{'id': '1', 'content': 'x'}]"
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
