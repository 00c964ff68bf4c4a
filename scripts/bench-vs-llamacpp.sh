#!/usr/bin/env bash
# a3kv against llama.cpp, back to back on this machine, so every ratio compares one sitting:
# llama.cpp's llama-bench (built once from the PyPI sdist by ../shared/tools/llamacpp-anchor.sh,
# which also converts the GGUF to F16 and F32), then `a3kv bench prefill` and `a3kv bench decode`
# reading its JSONL (`--llamacpp`), which print llama.cpp's tokens/s per weight type and our
# ratio to its best.
#
# Usage: scripts/bench-vs-llamacpp.sh [OUT_DIR]        (default target/bench-vs-llamacpp)
# Env:   MODEL         GGUF to measure (default models/SmolLM2-135M-Instruct.Q4_1.gguf)
#        LLAMACPP_DIR  llama.cpp build and converted weights (default .llamacpp, git-ignored;
#                      the first run builds there, ~8 minutes on 2 cores)
#        LENGTHS       prefill lengths (default 512,2048,4096)
#        RUNS          repeats per point, medians reported (default 3)
#        A3KV          the a3kv binary (default target/release/a3kv)
# Measure on a quiet machine: both tools use every core.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-target/bench-vs-llamacpp}
model=${MODEL:-models/SmolLM2-135M-Instruct.Q4_1.gguf}
llama=${LLAMACPP_DIR:-.llamacpp}
lengths=${LENGTHS:-512,2048,4096}
runs=${RUNS:-3}
a3kv=${A3KV:-target/release/a3kv}
anchor=../shared/tools/llamacpp-anchor.sh
[ -f "$model" ] || { echo "no model at $model (scripts/fetch-model.sh fetches it)" >&2; exit 2; }
[ -x "$anchor" ] || { echo "the llama.cpp anchor tool is missing: $anchor" >&2; exit 2; }
[ -x "$a3kv" ] || { echo "no a3kv binary at $a3kv (cargo build --release)" >&2; exit 2; }
mkdir -p "$out"
{ echo "date: $(date -u +%FT%TZ)"; echo "load: $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2-)"
  echo "flags: $(grep -m1 '^flags' /proc/cpuinfo | tr ' ' '\n' | grep -E '^(avx2|fma|f16c|avx512f|avx512bw|avx512vl|avx512_vnni|avx512_bf16)$' | tr '\n' ' ')"
} | tee "$out/machine.txt"
"$anchor" "$model" "$llama" "$lengths" "$runs"
cp "$llama/llama-bench.jsonl" "$out/llama-bench.jsonl"
"$a3kv" bench prefill --model "$model" --lengths "$lengths" --runs "$runs" --no-reference \
  --llamacpp "$out/llama-bench.jsonl" --out "$out/prefill.json" | tee "$out/prefill.txt"
"$a3kv" bench decode --model "$model" --runs "$runs" --llamacpp "$out/llama-bench.jsonl" \
  --out "$out/decode.json" | tee "$out/decode.txt"
echo "results in $out"
