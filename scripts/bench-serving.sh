#!/usr/bin/env bash
# Serving benchmark: starts `a3kv serve` with a config, stores the loadgen document pool
# through the chunk API, sweeps Poisson request rates for each fusion method on the same
# arrival traces, and reports per method the highest rate whose requests meet the TTFT SLO
# (99% by default, i.e. p99 TTFT <= SLO), with each method's rate as a ratio to the first.
# The server listens on 127.0.0.1 only and is stopped when the script exits.
#
#   scripts/bench-serving.sh [CONFIG.toml]          # default: configs/default.toml
#
# Knobs (environment): METHODS (full,a3), RATES (0.1,0.2,0.3,0.5,0.8,1.2), SLO_TTFT (3s),
# DURATION (seconds per rate point, 60), DOC_WORDS (256), DOCS (4 per request), POOL (32),
# OUTPUT_TOKENS (16), SEED (0), PORT (18480), OUT (results/serving.json), A3KV (the binary;
# default target/release/a3kv, built if missing).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
CONFIG="${1:-configs/default.toml}"
METHODS="${METHODS:-full,a3}"
RATES="${RATES:-0.1,0.2,0.3,0.5,0.8,1.2}"
SLO_TTFT="${SLO_TTFT:-3s}"
DURATION="${DURATION:-60}"
DOC_WORDS="${DOC_WORDS:-256}"
DOCS="${DOCS:-4}"
POOL="${POOL:-32}"
OUTPUT_TOKENS="${OUTPUT_TOKENS:-16}"
SEED="${SEED:-0}"
PORT="${PORT:-18480}"
OUT="${OUT:-results/serving.json}"
A3KV="${A3KV:-target/release/a3kv}"

[[ -f "$CONFIG" ]] || { echo "config $CONFIG not found" >&2; exit 2; }
if [[ ! -x "$A3KV" ]]; then
  cargo build --release -p a3kv-cli
fi
mkdir -p "$(dirname "$OUT")"
LOG="${OUT%.json}.server.log"

"$A3KV" serve -c "$CONFIG" --listen "127.0.0.1:$PORT" --log-level warn >"$LOG" 2>&1 &
SERVER=$!
trap 'kill -TERM "$SERVER" 2>/dev/null || true; wait "$SERVER" 2>/dev/null || true' EXIT

for _ in $(seq 1 120); do
  if curl -fsS "http://127.0.0.1:$PORT/ready" >/dev/null 2>&1; then break; fi
  if ! kill -0 "$SERVER" 2>/dev/null; then
    echo "server exited; log:" >&2; cat "$LOG" >&2; exit 1
  fi
  sleep 0.5
done
curl -fsS "http://127.0.0.1:$PORT/ready" >/dev/null || { echo "server not ready" >&2; exit 1; }

echo "server ready on 127.0.0.1:$PORT ($CONFIG); sweeping $METHODS at $RATES req/s, SLO TTFT $SLO_TTFT"
"$A3KV" loadgen \
  --target "http://127.0.0.1:$PORT" \
  --precompute \
  --num-docs "$POOL" --doc-words "$DOC_WORDS" --docs-per-request "$DOCS" \
  --output-tokens "$OUTPUT_TOKENS" --seed "$SEED" \
  --arrival poisson --duration-secs "$DURATION" --drain-secs 120 --request-timeout-secs 120 \
  --compare "$METHODS" --sweep-rate "$RATES" --slo-ttft "$SLO_TTFT" \
  --no-progress --out "$OUT"
echo "results: $OUT (server log: $LOG)"
