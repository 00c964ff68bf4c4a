#!/usr/bin/env bash
# KV in 16 bits (issue #14 item 4): first-token KL vs full prefill, HotpotQA items 0-19, per
# engine.kv_dtype, same binary, one after another (2-core AMD EPYC with AVX-512; other builds
# shared the cores, so the TTFT columns are not benchmarks). summary.txt: paired differences.
set -euo pipefail
for dt in f32 f16 bf16; do
  a3kv eval --dataset hotpotqa --limit 20 --max-tokens 1 \
    --methods 'full,cacheblend,a3,a3:hybrid=0.5' --set engine.kv_dtype=$dt \
    --out hotpotqa20-$dt.json
done
# Peak RSS of a 4,096-token full prefill without the candle reference:
a3kv bench prefill --lengths 4096 --runs 1 --no-reference --kv-dtype f32   # 1053 MiB
a3kv bench prefill --lengths 4096 --runs 1 --no-reference --kv-dtype f16   # 962 MiB
