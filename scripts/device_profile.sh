#!/usr/bin/env bash
# Run THERE after scripts/device_run.sh built build-device/kiln: per-kernel GPU time of one batch-1
# decode step with Nsight Compute (ncu; the machine has no nsys). Eager launches (KILN_CUDA_GRAPHS=0),
# caches and clocks left alone, one metric (gpu__time_duration.sum) so nothing is replayed.
#   scripts/device_profile.sh NAME CONFIG_DIR "EXTRA FLAGS"   (e.g. llama-fp8 bench/models/llama3-8b "--quantization fp8")
# Prints the kernels of the last decode step grouped by name (count, total us, share) to stdout and
# $OUT/profile_NAME.txt. Steps are split at the embedding kernel (one launch per step).
set -uo pipefail
cd "$(dirname "$0")/.."
NAME=$1; DIR=$2; FLAGS=${3:-}
KILN=${KILN:-build-device/kiln}
OUT=${OUT:-$PWD/device-out}
NCU=${NCU:-$(command -v ncu || echo /usr/local/cuda/bin/ncu)}
export LD_LIBRARY_PATH=$PWD/.carry/sysroot/usr/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
csv=$OUT/ncu_$NAME.csv
KILN_CUDA_GRAPHS=0 KILN_LOG_LEVEL=warn timeout 300 "$NCU" --metrics gpu__time_duration.sum --csv --cache-control none \
  --clock-control none --log-file "$csv" "$KILN" generate --device cuda --load-format dummy -m "$DIR" \
  --random-prompt-len 64 -n 4 $FLAGS > /dev/null 2> "$OUT/ncu_$NAME.err" || { tail -5 "$OUT/ncu_$NAME.err"; exit 1; }
python3 - "$csv" "$NAME" <<'PY' | tee "$OUT/profile_$NAME.txt"
import re, sys, collections
sys.path.insert(0, "scripts")
from ncu_kernel_times import kernel_times
ks = kernel_times(sys.argv[1])
starts = [i for i, (n, _) in enumerate(ks) if "embedding" in n]
step = ks[starts[-1]:] if starts else ks
short = lambda n: re.sub(r"\(.*", "", re.sub(r"^(void |kiln::|\(anonymous namespace\)::)+", "", n))[:70]
agg = collections.OrderedDict()
for n, v in step:
    c, t = agg.get(short(n), (0, 0.0)); agg[short(n)] = (c + 1, t + v)
total = sum(t for _, t in agg.values())
print(f"{sys.argv[2]}: last decode step, {len(step)} kernels, {total:.0f} us of kernel time")
for n, (c, t) in sorted(agg.items(), key=lambda x: -x[1][1]):
    print(f"  {n:70s} {c:5d} {t:9.1f} us {100 * t / total:5.1f}%")
PY
