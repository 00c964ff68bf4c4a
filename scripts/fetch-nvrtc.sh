#!/usr/bin/env bash
# Fetch NVRTC (the CUDA runtime compiler, libnvrtc.so.12 from the PyPI wheel
# nvidia-cuda-nvrtc-cu12==12.8.93) into the git-ignored tools/nvrtc/, so that a machine
# without a CUDA toolkit or GPU can compile every kernel in kernels/ to PTX (the
# a3kv-cuda NVRTC test; the device check carries the PTX to a GPU machine).
# Re-runnable: a library already present with the right hash is kept. Hash-checked.
#   scripts/fetch-nvrtc.sh     # into the repository's tools/nvrtc/
# A3KV_NVRTC_DIR=DIR overrides the target folder.
#
# Why 12.8 and not the newer 13.x wheel: PTX is forward compatible, so PTX made by NVRTC
# 12.8 loads on any driver >= 12.8 (including 13.x), while PTX from NVRTC 13.x needs a 13.x
# driver; and the bindings are cudarc's `cuda-12080`.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEST="${A3KV_NVRTC_DIR:-$ROOT/tools/nvrtc}"
WHEEL=nvidia_cuda_nvrtc_cu12-12.8.93-py3-none-manylinux2010_x86_64.manylinux_2_12_x86_64.whl
WHEEL_SHA=a7756528852ef889772a84c6cd89d41dfa74667e24cca16bb31f8f061e3e9994
LIB_SHA=43731e24cd89e3749826304f304e8aa11fbecf1188715271b1f5018d6212b5e6
BUILTINS_SHA=eccaa824230ee7858a94a3055cb01f1cb634df05d313880d0bdcf195161fcb4e

case "$(uname -m)" in
  x86_64) ;;
  *) echo "fetch-nvrtc: only x86_64 Linux wheels are pinned here (this is $(uname -m))" >&2; exit 1 ;;
esac

sha() { sha256sum "$1" | cut -d' ' -f1; }
check() { # file expected
  local got; got="$(sha "$1")"
  if [[ "$got" != "$2" ]]; then echo "hash mismatch for $1: got $got, want $2" >&2; return 1; fi
}

LIB="$DEST/lib/libnvrtc.so.12"
BUILTINS="$DEST/lib/libnvrtc-builtins.so.12.8"
if [[ -f "$LIB" && -f "$BUILTINS" ]] && check "$LIB" "$LIB_SHA" 2>/dev/null \
  && check "$BUILTINS" "$BUILTINS_SHA" 2>/dev/null; then
  echo "ok: $LIB"
  exit 0
fi
mkdir -p "$DEST/lib"
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT
python3 -m pip download -q --no-deps --only-binary=:all: --platform manylinux2010_x86_64 \
  -d "$TMP" nvidia-cuda-nvrtc-cu12==12.8.93
check "$TMP/$WHEEL" "$WHEEL_SHA"
unzip -p "$TMP/$WHEEL" nvidia/cuda_nvrtc/lib/libnvrtc.so.12 > "$LIB.part"
unzip -p "$TMP/$WHEEL" nvidia/cuda_nvrtc/lib/libnvrtc-builtins.so.12.8 > "$BUILTINS.part"
check "$LIB.part" "$LIB_SHA"
check "$BUILTINS.part" "$BUILTINS_SHA"
mv "$LIB.part" "$LIB"
mv "$BUILTINS.part" "$BUILTINS"
echo "fetched: $LIB"
