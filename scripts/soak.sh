#!/usr/bin/env bash
# Soak test: runs `a3kv serve` (127.0.0.1, disk tier in a temp dir) under `a3kv loadgen` for a
# bounded time with mixed fusion methods, client cancellations and stored chunks, sampling the
# server's RSS and open file descriptors, then checks:
#   - RSS after warm-up (priming, then the first WARMUP_PCT % of the run) grows by at most
#     RSS_GROWTH_PCT % (peak of the last WARMUP_PCT % vs peak of the warm-up);
#   - open fds after warm-up stay within the warm-up peak + FD_SLACK;
#   - no request fails other than the designed cancellations (loadgen `failed` = 0);
#   - at the end the server is idle (`a3kv:num_requests_running` and `_waiting` are 0), and its
#     counters agree with loadgen: the `a3kv:request_success_total` delta equals loadgen's
#     succeeded count (plus at most the cancelled requests the server had already finished),
#     `a3kv:request_failure_total` has no kind but `client_gone`, no more of those than
#     cancellations, and every request sent ended exactly once on the server (a success or a
#     client_gone; priming requests cancelled just before the run may add to the latter).
# Exits non-zero naming every failed check; the server is always stopped. Writes
# $SOAK_OUT/summary.json, samples.csv (unix_secs,rss_kb,fds,threads), prime.json and
# loadgen.json (the priming and soak runs) and the logs.
#
#   scripts/soak.sh                    # 10 minutes
#   SOAK_SECS=60 scripts/soak.sh       # the CI length
#
# Knobs (environment): SOAK_SECS (600), SOAK_OUT (target/soak), SAMPLE_SECS (5, 2 below 300 s),
# WARMUP_PCT (20), RSS_GROWTH_PCT (10), FD_SLACK (16), METHODS (a3,cacheblend,full),
# CANCEL_FRACTION (0.2), CONCURRENCY (4), PRIME_REQUESTS (3 x CONCURRENCY), POOL (16),
# DOC_WORDS (60-160), DOCS (2-4), OUTPUT_TOKENS (8-24), SEED (0), A3KV (target/release/a3kv,
# built if missing).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
SOAK_SECS="${SOAK_SECS:-600}"
SOAK_OUT="${SOAK_OUT:-target/soak}"
if [[ -z "${SAMPLE_SECS:-}" ]]; then
  if (( SOAK_SECS >= 300 )); then SAMPLE_SECS=5; else SAMPLE_SECS=2; fi
fi
WARMUP_PCT="${WARMUP_PCT:-20}"
RSS_GROWTH_PCT="${RSS_GROWTH_PCT:-10}"
FD_SLACK="${FD_SLACK:-16}"
METHODS="${METHODS:-a3,cacheblend,full}"
CANCEL_FRACTION="${CANCEL_FRACTION:-0.2}"
CONCURRENCY="${CONCURRENCY:-4}"
POOL="${POOL:-16}"
DOC_WORDS="${DOC_WORDS:-60-160}"
DOCS="${DOCS:-2-4}"
OUTPUT_TOKENS="${OUTPUT_TOKENS:-8-24}"
SEED="${SEED:-0}"
A3KV="${A3KV:-target/release/a3kv}"

die() { echo "soak: $*" >&2; exit 2; }
[[ "$SOAK_SECS" =~ ^[0-9]+$ ]] && (( SOAK_SECS >= 10 )) || die "SOAK_SECS must be an integer >= 10"
if [[ ! -x "$A3KV" ]]; then
  cargo build --release -p a3kv-cli
fi
mkdir -p "$SOAK_OUT"
SOAK_OUT="$(cd "$SOAK_OUT" && pwd)"
rm -f "$SOAK_OUT"/{summary.json,samples.csv,loadgen.json,prime.json,server.log,loadgen.log}
TMP="$(mktemp -d)"
SERVER=""
SAMPLER=""
cleanup() {
  [[ -n "$SAMPLER" ]] && kill "$SAMPLER" 2>/dev/null || true
  if [[ -n "$SERVER" ]]; then
    kill -TERM "$SERVER" 2>/dev/null || true
    wait "$SERVER" 2>/dev/null || true
  fi
  rm -rf "$TMP"
}
trap cleanup EXIT

cat >"$TMP/serve.toml" <<EOF
listen = "127.0.0.1:0"
[engine.store.disk]
dir = "$TMP/store"
budget_bytes = 1073741824
[shutdown]
drain_secs = 5
[log]
format = "json"
level = "info"
EOF

"$A3KV" serve -c "$TMP/serve.toml" >"$SOAK_OUT/server.log" 2>&1 &
SERVER=$!
ADDR=""
for _ in $(seq 1 240); do
  ADDR="$(grep -o '"addr":"127\.0\.0\.1:[0-9]*"' "$SOAK_OUT/server.log" | head -n1 | cut -d'"' -f4 || true)"
  [[ -n "$ADDR" ]] && break
  kill -0 "$SERVER" 2>/dev/null || { cat "$SOAK_OUT/server.log" >&2; die "server exited at start"; }
  sleep 0.5
done
[[ -n "$ADDR" ]] || die "server did not log its address"
TARGET="http://$ADDR"

# HTTP and checks in Python (standard library only).
py() { python3 - "$@"; }
py "$TARGET" <<'EOF' || die "server not ready"
import sys, time, urllib.request
for _ in range(240):
    try:
        if urllib.request.urlopen(sys.argv[1] + "/ready", timeout=5).status == 200:
            sys.exit(0)
    except Exception:
        pass
    time.sleep(0.5)
sys.exit(1)
EOF

# Workload flags shared by the priming run and the soak run (same seed: same pool).
WORKLOAD=(--num-docs "$POOL" --doc-words "$DOC_WORDS" --seed "$SEED" --arrival closed
  --concurrency "$CONCURRENCY" --method-mix "$METHODS" --request-timeout-secs 300
  --drain-secs 120 --no-progress)

# RSS, fds and threads every SAMPLE_SECS from before priming (priming counts as warm-up).
echo "unix_secs,rss_kb,fds,threads" >"$SOAK_OUT/samples.csv"
(
  while kill -0 "$SERVER" 2>/dev/null; do
    rss=$(awk '/^VmRSS:/ {print $2}' "/proc/$SERVER/status" 2>/dev/null || echo "")
    thr=$(awk '/^Threads:/ {print $2}' "/proc/$SERVER/status" 2>/dev/null || echo "")
    fds=$(ls "/proc/$SERVER/fd" 2>/dev/null | wc -l)
    [[ -n "$rss" ]] && echo "$(date +%s.%N),$rss,$fds,$thr" >>"$SOAK_OUT/samples.csv"
    sleep "$SAMPLE_SECS"
  done
) &
SAMPLER=$!

# Priming: the same methods and cancellations at full concurrency, with the largest requests
# the workload can send (the upper ends of DOCS and OUTPUT_TOKENS), so buffers, the
# prompt-prefix chunk and the allocator's arenas reach their working size before RSS is judged.
PRIME_REQUESTS="${PRIME_REQUESTS:-$((CONCURRENCY * 3))}"
upper() { if [[ "$1" =~ ^[0-9]+-([0-9]+)$ ]]; then echo "${BASH_REMATCH[1]}"; else echo "$1"; fi; }
echo "soak: server $TARGET (pid $SERVER); storing a pool of $POOL documents, priming with $PRIME_REQUESTS requests"
"$A3KV" loadgen --target "$TARGET" "${WORKLOAD[@]}" --precompute \
  --docs-per-request "$(upper "$DOCS")" --output-tokens "$(upper "$OUTPUT_TOKENS")" \
  --cancel-fraction "$CANCEL_FRACTION" --num-requests "$PRIME_REQUESTS" \
  --out "$SOAK_OUT/prime.json" >"$SOAK_OUT/loadgen.log" 2>&1 \
  || { cat "$SOAK_OUT/loadgen.log" >&2; die "priming loadgen run failed"; }
save_metrics() {
  py "$TARGET" "$1" <<'EOF'
import sys, urllib.request
open(sys.argv[2], "wb").write(urllib.request.urlopen(sys.argv[1] + "/metrics", timeout=30).read())
EOF
}
save_metrics "$TMP/metrics.before"

SOAK_T0="$(date +%s.%N)"
echo "soak: ${SOAK_SECS}s of closed-loop load (concurrency $CONCURRENCY, methods $METHODS, cancel fraction $CANCEL_FRACTION)"
"$A3KV" loadgen --target "$TARGET" "${WORKLOAD[@]}" --duration-secs "$SOAK_SECS" \
  --docs-per-request "$DOCS" --output-tokens "$OUTPUT_TOKENS" \
  --cancel-fraction "$CANCEL_FRACTION" --out "$SOAK_OUT/loadgen.json" >>"$SOAK_OUT/loadgen.log" 2>&1 \
  || { cat "$SOAK_OUT/loadgen.log" >&2; die "soak loadgen run failed"; }
kill "$SAMPLER" 2>/dev/null || true
wait "$SAMPLER" 2>/dev/null || true
SAMPLER=""
kill -0 "$SERVER" 2>/dev/null || die "the server died during the run (log: $SOAK_OUT/server.log)"

py "$TARGET" "$TMP/metrics.before" "$SOAK_OUT" "$SOAK_SECS" "$WARMUP_PCT" "$RSS_GROWTH_PCT" \
  "$FD_SLACK" "$CANCEL_FRACTION" "$METHODS" "$SOAK_T0" <<'EOF'
import csv, json, re, sys, time, urllib.request

target, before_path, out, secs, warmup_pct, growth_pct, fd_slack, cancel, methods, t0 = sys.argv[1:]
secs, warmup_pct, growth_pct, fd_slack = int(secs), float(warmup_pct), float(growth_pct), int(fd_slack)

def samples(text):
    """{(name, labels): value} of a Prometheus text exposition."""
    out = {}
    for line in text.splitlines():
        m = re.match(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)$', line)
        if m and not line.startswith("#"):
            out[(m.group(1), m.group(2) or "")] = float(m.group(3))
    return out

def total(s, name, label=None):
    return sum(v for (n, l), v in s.items() if n == name and (label is None or label in l))

def scrape():
    return samples(urllib.request.urlopen(target + "/metrics", timeout=30).read().decode())

# Cancelled requests leave the engine at its next step: wait (bounded) until it is idle.
for _ in range(120):
    after = scrape()
    running = total(after, "a3kv:num_requests_running")
    waiting = total(after, "a3kv:num_requests_waiting")
    if running == 0 and waiting == 0:
        break
    time.sleep(0.5)
before = samples(open(before_path).read())

def delta(name, label=None):
    return total(after, name, label) - total(before, name, label)

# Seconds from the start of the soak run; negative while priming (part of the warm-up).
rows = [(float(r["unix_secs"]) - float(t0), int(r["rss_kb"]), int(r["fds"]), int(r["threads"] or 0))
        for r in csv.DictReader(open(f"{out}/samples.csv"))]
report = json.load(open(f"{out}/loadgen.json"))
prime = json.load(open(f"{out}/prime.json"))
s = report["runs"][0]["summary"]
p = prime["runs"][0]["summary"]

checks = []
def check(name, ok, detail):
    checks.append({"check": name, "ok": bool(ok), "detail": detail})

warm_end = secs * warmup_pct / 100
tail_start = secs * (1 - warmup_pct / 100)
warm = [r for r in rows if r[0] <= warm_end]
later = [r for r in rows if r[0] > warm_end]
tail = [r for r in rows if r[0] >= tail_start]
rss = {}
if len(warm) >= 2 and tail:
    rss = {"first_kb": rows[0][1], "priming_secs": round(-rows[0][0], 1),
           "warmup_peak_kb": max(r[1] for r in warm),
           "end_peak_kb": max(r[1] for r in tail), "last_kb": rows[-1][1],
           "max_kb": max(r[1] for r in rows)}
    rss["growth_pct"] = 100.0 * (rss["end_peak_kb"] / rss["warmup_peak_kb"] - 1)
    check("rss_growth", rss["growth_pct"] <= growth_pct,
          f"peak of the last {warmup_pct:.0f}% {rss['end_peak_kb']} kB vs warm-up (priming + "
          f"first {warmup_pct:.0f}%) peak "
          f"{rss['warmup_peak_kb']} kB: {rss['growth_pct']:+.1f}% (limit {growth_pct:+.0f}%)")
else:
    check("rss_growth", False, f"too few samples ({len(rows)}) to judge")
fds = {}
if warm and later:
    fds = {"warmup_peak": max(r[2] for r in warm), "after_peak": max(r[2] for r in later),
           "last": rows[-1][2]}
    check("fd_growth", fds["after_peak"] <= fds["warmup_peak"] + fd_slack,
          f"after warm-up peak {fds['after_peak']} vs warm-up peak {fds['warmup_peak']} + {fd_slack}")
check("requests_failed", s["failed"] == 0 and p["failed"] == 0,
      f"{s['failed']} failed ({s['errors']}), priming {p['failed']} failed; "
      f"{s['cancelled']} cancelled by design")
check("requests_sent", s["succeeded"] > 0, f"{s['sent']} sent, {s['succeeded']} succeeded")
check("idle_at_end", running == 0 and waiting == 0,
      f"a3kv:num_requests_running {running:g}, a3kv:num_requests_waiting {waiting:g}")
success = delta("a3kv:request_success_total")
dropped = delta("a3kv:request_failure_total", 'err="client_gone"')
other = delta("a3kv:request_failure_total") - dropped
check("success_counter", s["succeeded"] <= success <= s["succeeded"] + s["cancelled"],
      f"a3kv:request_success_total +{success:g} vs loadgen {s['succeeded']} succeeded "
      f"(+ up to {s['cancelled']} cancelled the server had finished)")
check("failure_counter", other == 0 and dropped <= s["cancelled"] + p["cancelled"],
      f"a3kv:request_failure_total +{dropped:g} client_gone (<= {s['cancelled']} cancelled "
      f"+ {p['cancelled']} priming), +{other:g} other")
check("every_request_ended_once", s["sent"] <= success + dropped <= s["sent"] + p["cancelled"],
      f"server successes + client_gone = {success + dropped:g} for {s['sent']} sent")
summary = {
    "ok": all(c["ok"] for c in checks), "soak_secs": secs, "samples": len(rows),
    "methods": methods, "cancel_fraction": float(cancel), "rss": rss, "fds": fds,
    "threads_last": rows[-1][3] if rows else None,
    "requests": {k: s[k] for k in ("sent", "succeeded", "cancelled", "failed", "errors")},
    "request_throughput": s["request_throughput"],
    "ttft_p50_secs": (s.get("ttft_secs") or {}).get("p50"),
    "server": {"success_delta": success, "client_gone_delta": dropped, "other_failures_delta": other,
               "running": running, "waiting": waiting},
    "checks": checks,
}
json.dump(summary, open(f"{out}/summary.json", "w"), indent=2)
for c in checks:
    print(f"soak: {'ok  ' if c['ok'] else 'FAIL'} {c['check']}: {c['detail']}")
sys.exit(0 if summary["ok"] else 1)
EOF
echo "soak: passed (summary: $SOAK_OUT/summary.json)"
