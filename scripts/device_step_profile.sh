#!/usr/bin/env bash
# Run THERE after building model_step_bench (scripts/device_run.sh, KILN_DEVICE_TARGETS=model_step_bench):
# wall time of whole serving-shaped forward steps (bench/model_step_bench.cu), then per-kernel GPU
# time of one warm run of each step under Nsight Compute (one metric, gpu__time_duration.sum, so
# nothing is replayed), grouped by kernel class per step, with the host gap = wall - kernel sum.
#   scripts/device_step_profile.sh [CONFIG_DIR] [bf16]     (default: Mixtral-8x7B fp8)
# Writes $OUT/step_wall.txt, $OUT/ncu_steps.csv, $OUT/step_profile.txt.
set -uo pipefail
cd "$(dirname "$0")/.."
BIN=${KILN_STEP_BENCH:-build-device/model_step_bench}
OUT=${OUT:-$PWD/device-out}
NCU=${NCU:-$(command -v ncu || echo /usr/local/cuda/bin/ncu)}
mkdir -p "$OUT"
export LD_LIBRARY_PATH=$PWD/.carry/sysroot/usr/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
KILN_LOG_LEVEL=warn timeout ${KILN_STEP_WALL_TIMEOUT:-120} "$BIN" "$@" 2>&1 | tee "$OUT/step_wall.txt"
KILN_STEP_PROFILE=1 KILN_LOG_LEVEL=warn timeout ${KILN_STEP_NCU_TIMEOUT:-150} "$NCU" --profile-from-start off \
  --metrics gpu__time_duration.sum --csv --cache-control none --clock-control none --log-file "$OUT/ncu_steps.csv" \
  "$BIN" "$@" > "$OUT/ncu_steps.out" 2>&1
echo "ncu rc=$?"
python3 - "$OUT/ncu_steps.csv" "$OUT/step_wall.txt" <<'PY' | tee "$OUT/step_profile.txt"
import re, sys, collections
sys.path.insert(0, "scripts")
from ncu_kernel_times import kernel_times
ks = kernel_times(sys.argv[1])
if not ks:
    print("no ncu rows"); sys.exit(0)
walls = collections.OrderedDict()
for line in open(sys.argv[2]):
    m = re.match(r"\s+(\S.*?)\s+first\s+([\d.]+) ms\s+warm\s+([\d.]+) ms", line)
    if m: walls[m.group(1)] = float(m.group(3))
starts = [i for i, (n, _) in enumerate(ks) if "embedding" in n]
names = list(walls.keys())
classes = [("skinny GEMM", r"skinny"), ("MoE decode GEMM", r"moe_decode"), ("fp8 quantize x", r"quantiz"),
           ("silu_mul", r"silu"), ("MoE unpermute", r"unpermute"), ("MoE permute", r"moe_place|moe_gather|permute"),
           ("MoE route", r"route|router|topk"), ("attention", r"attention|hopper|prefill|paged|flash|decode_attn|merge"),
           ("rmsnorm", r"rmsnorm"), ("rope + kv write", r"rope"), ("embedding", r"embedding"),
           ("sampling", r"sampl|argmax"), ("scale epilogue/broadcast", r"epilogue|broadcast"),
           ("cuBLASLt GEMM", r"nvjet|xmma|cutlass|sm90_|gemm|Kernel2|splitK")]
def cls(n):
    for c, rx in classes:
        if re.search(rx, n): return c
    return "other"
short = lambda n: re.sub(r"\(.*", "", re.sub(r"^(void |kiln::|\(anonymous namespace\)::)+", "", n))[:80]
bounds = starts + [len(ks)]
for s in range(len(starts)):
    step = ks[bounds[s]:bounds[s + 1]]
    name = names[s] if s < len(names) else f"step {s}"
    total = sum(v for _, v in step)
    wall = walls.get(name, 0.0) * 1000
    print(f"== {name}: {len(step)} kernels, kernel sum {total / 1000:.2f} ms, wall {wall / 1000:.2f} ms, "
          f"host gap {(wall - total) / 1000:.2f} ms ({100 * (wall - total) / wall if wall else 0:.0f}%)")
    agg = collections.defaultdict(lambda: [0, 0.0])
    for n, v in step:
        a = agg[cls(n)]; a[0] += 1; a[1] += v
    for c, (cnt, t) in sorted(agg.items(), key=lambda x: -x[1][1]):
        print(f"   {c:26s} {cnt:6d} {t / 1000:9.2f} ms {100 * t / total:5.1f}%")
    per = collections.defaultdict(lambda: [0, 0.0])
    for n, v in step:
        a = per[short(n)]; a[0] += 1; a[1] += v
    print("   top kernels (count, total ms, mean us):")
    for n, (cnt, t) in sorted(per.items(), key=lambda x: -x[1][1])[:12]:
        print(f"     {n:80s} {cnt:5d} {t / 1000:8.2f} {t / cnt:8.1f}")
PY
