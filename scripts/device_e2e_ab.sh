#!/usr/bin/env bash
# Run THERE: an end-to-end A/B of kiln binaries (scripts/device_e2e.sh rows) in one call, rounds
# with the binaries in alternating order (the first run of a round reads a few percent faster on a
# compute-bound prefill: a fixed order biased a TTFT comparison in session 11), then a table of
# decode tok/s and TTFT per row and binary (median and every round).
#   KILNS="base=path/to/kiln new=path/to/kiln" ROWS='^llama8b-decode-fp8$' ROUNDS=3 \
#     OUT=dir scripts/device_e2e_ab.sh
# A binary may carry environment after a colon: "probe=path/to/kiln:KILN_X=1".
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/device-out/ab}
ROUNDS=${ROUNDS:-3}
read -r -a specs <<<"${KILNS:?KILNS=\"name=path[:VAR=value] ...\"}"
mkdir -p "$OUT"
: > "$OUT/ab.txt"
for ((r = 1; r <= ROUNDS; ++r)); do
  order=("${specs[@]}")
  if ((r % 2 == 0)); then  # reverse the order every other round
    order=()
    for ((i = ${#specs[@]} - 1; i >= 0; --i)); do order+=("${specs[$i]}"); done
  fi
  for spec in "${order[@]}"; do
    name=${spec%%=*} rest=${spec#*=}
    bin=${rest%%:*} extra=""
    [ "$bin" != "$rest" ] && extra=${rest#*:}
    dir="$OUT/${name}_$r"
    env $extra KILN="$bin" KILN_NO_BUILD=1 KILN_E2E_ROWS="${ROWS:-.}" OUT="$dir" scripts/device_e2e.sh > "$dir.log" 2>&1
    tail -n +2 "$dir/e2e_table.txt" 2>/dev/null | awk -v n="$name" -v r="$r" '{print $1, n, r, $5, $4}' >> "$OUT/ab.txt"
  done
done
# row binary round tok/s ttft -> one line per (row, binary): median tok/s and TTFT, then each round.
sort -k1,1 -k2,2 -k3,3n "$OUT/ab.txt" | awk '
  function median(s,   a, n, i, j, t) { n = split(s, a, " "); for (i = 1; i <= n; ++i) for (j = i + 1; j <= n; ++j)
      if (a[j] + 0 < a[i] + 0) { t = a[i]; a[i] = a[j]; a[j] = t } return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2 }
  { k = $1 " " $2; tok[k] = tok[k] " " $4; ttft[k] = ttft[k] " " $5; if (!(k in seen)) { seen[k] = 1; keys[++nk] = k } }
  END { printf "%-28s %-10s %10s %10s   rounds (tok/s)\n", "row", "binary", "tok/s", "ttft ms";
        for (i = 1; i <= nk; ++i) { split(keys[i], kk, " ");
          printf "%-28s %-10s %10.1f %10.1f  %s\n", kk[1], kk[2], median(tok[keys[i]]), median(ttft[keys[i]]), tok[keys[i]] } }' \
  | tee "$OUT/ab_table.txt"
