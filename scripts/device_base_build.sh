#!/usr/bin/env bash
# Run THERE (the GPU machine, carry [".carry"]): build an older commit beside the working tree's
# build, for A/B runs in one call (scripts/device_e2e_ab.sh, model_step_bench, kiln bench latency).
#   scripts/device_base_build.sh [REV [TARGETS...]]    (default REV HEAD, TARGETS kiln)
# Builds REV in a git worktree at $KILN_BASE_DIR (/tmp/base), binaries in $KILN_BASE_DIR/b, with the
# carried sysroot as scripts/device_run.sh does; prints the commit it built. Note: the device copy's
# git metadata can lag the checkout (its HEAD may be an earlier session's commit, and commits made
# since may be missing there), so REV must be a commit that copy has: HEAD there is usually the
# session's starting point, the natural base. Env: KILN_BASE_JOBS (16).
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
REV=${1:-HEAD}
shift || true
TARGETS=("$@")
((${#TARGETS[@]})) || TARGETS=(kiln)
BASE=${KILN_BASE_DIR:-/tmp/base}
SYS=$ROOT/.carry/sysroot/usr
LIB=$SYS/lib/x86_64-linux-gnu
[ -d "$SYS" ] || { echo "device_base_build: no .carry/sysroot (run scripts/device_prepare.sh here, carry .carry)"; exit 2; }
export LD_LIBRARY_PATH=$LIB${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
export PKG_CONFIG_PATH=$LIB/pkgconfig:$SYS/share/pkgconfig${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}
export PATH=/usr/local/cuda/bin:$PATH
PKG_ARGS=()
command -v pkg-config >/dev/null || PKG_ARGS=(-DPKG_CONFIG_EXECUTABLE="$SYS/bin/pkgconf")
rm -rf "$BASE"
git worktree prune
git worktree add --detach "$BASE" "$REV" > /dev/null 2>&1 || { echo "device_base_build: no commit $REV in this copy"; exit 3; }
# The base's tests read ../shared next to it, as the working tree's do.
[ -e "$(dirname "$BASE")/shared" ] || ln -s "$ROOT/.carry/shared" "$(dirname "$BASE")/shared"
LOG=${OUT:-$ROOT/device-out}/base_build.log
mkdir -p "$(dirname "$LOG")"
cmake -S "$BASE" -B "$BASE/b" -G Ninja -DCMAKE_BUILD_TYPE=Release -DKILN_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90a \
  -DCMAKE_PREFIX_PATH="$SYS" "${PKG_ARGS[@]}" > "$LOG" 2>&1 || { tail -20 "$LOG"; echo "device_base_build: configure failed"; exit 4; }
cmake --build "$BASE/b" -j "${KILN_BASE_JOBS:-16}" --target "${TARGETS[@]}" >> "$LOG" 2>&1 ||
  { grep -E "error" "$LOG" | head -20; echo "device_base_build: build failed ($LOG)"; exit 5; }
echo "device_base_build: $(git -C "$BASE" rev-parse --short HEAD) built in $BASE/b (${TARGETS[*]})"
