#!/usr/bin/env bash
# How the files in this folder were made (2026-11-30, quiet 2-core AMD EPYC with AVX-512
# F/BW/VL/VNNI/BF16, load average 1.6-2.0 from the measuring process itself; one run of
# this sequence, so every ratio in the README compares numbers from one sitting).
# prefill-base.txt is the binary of commit af001d7 (before the flash attention kernel).
set -euo pipefail
O=${1:-docs/results/engine-speed}
../shared/tools/llamacpp-anchor.sh models/SmolLM2-135M-Instruct.Q4_1.gguf ../llamacpp-anchor 512,2048,4096 3
cp ../llamacpp-anchor/llama-bench.jsonl "$O/"
a3kv bench prefill --lengths 512,2048,4096 --runs 3 --no-reference --out "$O/prefill.json" | tee "$O/prefill.txt"
a3kv bench fusion --lengths 4096 --methods full,a3,cacheblend --runs 3 --out "$O/fusion.json" | tee "$O/fusion.txt"
a3kv bench decode --runs 3 --llamacpp "$O/llama-bench.jsonl" --out "$O/decode.json" | tee "$O/decode.txt"
# candle's element-wise thread pool kept to the calling thread: no difference measured.
CANDLE_NUM_THREADS=1 a3kv bench prefill --lengths 512,2048,4096 --runs 3 --no-reference | tee "$O/prefill-c1.txt"
CANDLE_NUM_THREADS=1 a3kv bench fusion --lengths 4096 --methods full,a3,cacheblend --runs 3 | tee "$O/fusion-c1.txt"
