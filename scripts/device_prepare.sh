#!/usr/bin/env bash
# Run HERE (the dev machine, Debian/Ubuntu with apt), before a device call: fills .carry/ (ignored
# by git) with what the GPU machine lacks, so `run` with carry [".carry"] can build kiln there:
#   .carry/sysroot/usr   headers, static/shared libs, CMake and pkg-config files of the build deps
#   .carry/tools/        gpu_ceilings.py (measured copy / GEMM / attention ceilings)
#   .carry/shared/       ../shared/testdata, which the tests read through KILN_SHARED_DIR
#   .carry/bin/          with --prebuild: kiln_tests and the GPU benches built HERE (CUDA, sm_90a)
#                        for `KILN_DEVICE_PREBUILT=1 scripts/device_run.sh` (no build there)
# Idempotent; `--clean` starts over. Keeps .carry small (about 20 MB, 30 with --prebuild).
#   scripts/device_prepare.sh [--clean] [--prebuild]    (KILN_PREBUILD_DIR: build dir, build-cuda)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
CARRY=$ROOT/.carry
DEBS=$ROOT/.cache/device_debs  # downloaded once, kept out of what travels
SHARED=${KILN_SHARED:-$ROOT/../shared}

# The debs the build needs (their runtime libs included; pkgconf for a machine without pkg-config).
PACKAGES=(libgtest-dev nlohmann-json3-dev libcli11-dev libpcre2-dev libpcre2-8-0
          libsentencepiece-dev libsentencepiece0 pkgconf-bin libpkgconf3)

PREBUILD=0
for arg in "$@"; do
  case "$arg" in
    --clean) rm -rf "$CARRY" ;;
    --prebuild) PREBUILD=1 ;;
    *) echo "usage: $0 [--clean] [--prebuild]"; exit 2 ;;
  esac
done
mkdir -p "$DEBS" "$CARRY/sysroot" "$CARRY/tools"

missing=()
for p in "${PACKAGES[@]}"; do
  ls "$DEBS/${p}"_*.deb >/dev/null 2>&1 || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "device_prepare: downloading ${missing[*]}"
  # apt's sandbox user cannot write into our tree: download in a temp dir it owns.
  tmp=$(mktemp -d); chmod 777 "$tmp"
  (cd "$tmp" && apt-get download -q "${missing[@]}" >/dev/null 2>&1) || {
    echo "device_prepare: apt-get download failed (try apt-get update)"; rm -rf "$tmp"; exit 1; }
  mv "$tmp"/*.deb "$DEBS/"
  rm -rf "$tmp"
fi

for deb in "$DEBS"/*.deb; do dpkg -x "$deb" "$CARRY/sysroot"; done
SYS=$CARRY/sysroot/usr
LIB=$SYS/lib/x86_64-linux-gnu
# Drop what no build here reads: docs, man pages, 16/32-bit pcre2, the sentencepiece trainer headers.
rm -rf "$SYS/share/doc" "$SYS/share/man" "$SYS/share/aclocal" "$SYS/share/lintian"
rm -f "$LIB"/libpcre2-16* "$LIB"/libpcre2-32* "$LIB"/libpcre2-posix* "$LIB"/pkgconfig/libpcre2-{16,32,posix}.pc
# pkg-config files say prefix=/usr: make them relative to where they lie, so the sysroot can move.
for pc in "$LIB"/pkgconfig/*.pc "$SYS"/share/pkgconfig/*.pc; do
  [ -f "$pc" ] || continue
  case "$pc" in
    "$LIB"/pkgconfig/*) rel='${pcfiledir}/../../..' ;;
    *) rel='${pcfiledir}/../..' ;;
  esac
  sed -i "s|^prefix=.*|prefix=$rel|" "$pc"
done

cp "$SHARED/tools/gpu_ceilings.py" "$CARRY/tools/"
if [ -d "$SHARED/testdata" ]; then
  mkdir -p "$CARRY/shared"
  rsync -a --delete "$SHARED/testdata/" "$CARRY/shared/testdata/" 2>/dev/null ||
    { rm -rf "$CARRY/shared/testdata"; cp -r "$SHARED/testdata" "$CARRY/shared/"; }
fi
if ((PREBUILD)); then
  BUILD=${KILN_PREBUILD_DIR:-$ROOT/build-cuda}
  [ -f "$BUILD/build.ninja" ] || [ -f "$BUILD/Makefile" ] ||
    cmake -S "$ROOT" -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release -DKILN_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90a >/dev/null
  benches=()
  for f in "$ROOT"/bench/*_bench.cu; do [ -f "$f" ] && benches+=("$(basename "$f" .cu)"); done
  echo "device_prepare: building kiln_tests ${benches[*]} in $BUILD"
  cmake --build "$BUILD" -j "$(nproc)" --target kiln_tests "${benches[@]}" > "$BUILD/prebuild.log" 2>&1 ||
    { grep -E "error" "$BUILD/prebuild.log" | head -20; echo "device_prepare: build failed ($BUILD/prebuild.log)"; exit 1; }
  rm -rf "$CARRY/bin"; mkdir -p "$CARRY/bin"
  cp "$BUILD/kiln_tests" "${benches[@]/#/$BUILD/}" "$CARRY/bin/"
  echo "$ROOT" > "$CARRY/bin/SOURCE_DIR"
  echo "$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null)+$(git -C "$ROOT" status --short 2>/dev/null | wc -l) changed, built $(date -u +%FT%TZ)" > "$CARRY/bin/STAMP"
fi
echo "device_prepare: .carry ready ($(du -sh "$CARRY" | cut -f1)); run scripts/device_run.sh there with carry [\".carry\"]"
