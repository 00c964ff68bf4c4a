#!/usr/bin/env bash
# The GPU machine's check, in one prepared script. HONEST STATUS: written and tested only on
# machines without a GPU (the no-driver path, NVRTC compilation of every kernel, the
# stripped binary); it has never run on a GPU, so its parity and bench results are unknown.
#
# Two steps:
#   scripts/device-check.sh --prepare   # HERE (registry, NVRTC): builds the stripped release
#                                       # binary and the PTX of every kernel into
#                                       # target/device-check/ (~1 MB; carry that folder)
#   scripts/device-check.sh OUT_DIR     # ON THE GPU MACHINE (no registry, no internet):
#                                       # probe, kernel parity vs the CPU twins (max abs error
#                                       # per kernel and dtype), then kernel benches on
#                                       # Llama-shaped random activations (SmolLM2 and 7B
#                                       # shapes) at 4k/16k/32k tokens; JSON into OUT_DIR.
# The binary compiles the kernels with the machine's libnvrtc when it has one, else loads the
# carried PTX (compute_90, NVRTC 12.8: loads on drivers >= 12.8).
# Env: DEVICE_CHECK_TOKENS (default 4096,16384,32768), DEVICE_CHECK_REPS (default 3),
# DEVICE_CHECK_BENCH_SECS (default 420: the bench is cut off after this, keeping its rows).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PREP="$ROOT/target/device-check"
BIN="$PREP/a3kv-device-check"

if [[ "${1:-}" == "--prepare" ]]; then
  cd "$ROOT"
  scripts/fetch-nvrtc.sh
  cargo build --release -p a3kv-cuda --features cuda --bin a3kv-device-check
  mkdir -p "$PREP"
  cp target/release/a3kv-device-check "$BIN"
  strip "$BIN"
  "$BIN" emit-ptx "$PREP/ptx"
  size=$(stat -c %s "$BIN")
  if (( size >= 64 * 1024 * 1024 )); then echo "binary is $size bytes (>= 64 MiB)" >&2; exit 1; fi
  du -sh "$PREP"
  echo "prepared: carry target/device-check (binary $size bytes)"
  exit 0
fi

OUT="${1:?usage: scripts/device-check.sh --prepare | OUT_DIR}"
mkdir -p "$OUT"
[[ -x "$BIN" ]] || { echo "no $BIN: run scripts/device-check.sh --prepare here and carry target/device-check" >&2; exit 1; }
{
  echo "date: $(date -u +%FT%TZ)"
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>&1 || true
} > "$OUT/machine.txt"
status=0
"$BIN" probe > "$OUT/probe.txt" 2>&1 || { echo "no usable CUDA device:"; cat "$OUT/probe.txt"; exit 2; }
echo "== parity"
"$BIN" parity "$OUT/parity.json" --ptx-dir "$PREP/ptx" 2>&1 | tee "$OUT/parity.log" || status=1
echo "== bench"
timeout "${DEVICE_CHECK_BENCH_SECS:-420}" "$BIN" bench "$OUT/bench.json" --ptx-dir "$PREP/ptx" \
  --tokens "${DEVICE_CHECK_TOKENS:-4096,16384,32768}" --reps "${DEVICE_CHECK_REPS:-3}" \
  2>&1 | tee "$OUT/bench.log" || status=1
echo "results in $OUT (exit $status)"
exit $status
