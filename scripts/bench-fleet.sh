#!/usr/bin/env bash
# Fleet benchmark: the same Zipf trace (`a3kv loadgen`, fixed seed, closed loop) sent through
# the HAProxy gateway of scripts/fleet.sh to four fleets, started and stopped one after the
# other on 127.0.0.1:
#   a  one replica                                  (REPLICAS=1, FLEET_REMOTE=0)
#   b  two replicas, no shared tier                 (REPLICAS=2, FLEET_REMOTE=0)
#   c  two replicas + the shared Redis tier         (REPLICAS=2, FLEET_REMOTE=1)
#   d  c + chunk-aware routing                      (loadgen --route-header x-a3kv-route)
# Per configuration it reports, from each replica's /metrics scraped before and after the run
# and summed over the fleet: chunk computations (`a3kv:chunk_load_seconds_count{tier="computed"}`)
# and loads by source, hit rates per tier (`a3kv:chunk_lookups_total{tier,result}`: hits /
# lookups, errors apart), Redis errors; from loadgen: requests ok/failed and TTFT p50/p99. The
# trace's distinct chunks are counted from loadgen's per-request records (distinct documents
# cited + the shared prompt prefix; every document is one chunk while DOC_WORDS stays well
# under engine.chunk_tokens), and the trace is checked to be the same in every configuration.
# Two cores cannot show compute scale-out; what this shows is how many chunk computations
# each fleet spends on one trace, and what that costs in TTFT.
#
#   scripts/bench-fleet.sh                    # a,b,c,d, ~1-2 min each on 2 cores
#   CONFIGS=a,d NUM_REQUESTS=20 scripts/bench-fleet.sh
#
# Prints a table and writes $OUT/summary.json, plus per configuration $OUT/<c>/loadgen.json
# (with every request's record), metrics before/after per replica and the fleet's logs.
#
# Knobs (environment): CONFIGS (a,b,c,d), POOL (16 documents), DOC_WORDS (60-100 words),
# DOCS (2 per request), ZIPF (1.0), NUM_REQUESTS (40), CONCURRENCY (1, closed loop; see below),
# OUTPUT_TOKENS (2-8), SEED (0), ROUTE_HEADER (x-a3kv-route), REQUEST_TIMEOUT (300 s),
# OUT (target/bench-fleet), CONFIG / REPLICA_ARGS (passed to scripts/fleet.sh for every
# replica), A3KV (target/release/a3kv, built if missing), FLEET_TIMEOUT (240 s for a fleet to
# come up).
#
# Counting: `tier="computed"` counts each request that got a chunk by computing it, so with
# CONCURRENCY > 1 two requests missing the same chunk on one replica at once count twice
# although the store's single flight computes it once (the second waits); at CONCURRENCY 1
# the count is exact. Across replicas the shared tier's lease does the same for the fleet,
# and a replica that waited for another's value counts a remote load, not a computation.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
CONFIGS="${CONFIGS:-a,b,c,d}"
POOL="${POOL:-16}"
DOC_WORDS="${DOC_WORDS:-60-100}"
DOCS="${DOCS:-2}"
ZIPF="${ZIPF:-1.0}"
NUM_REQUESTS="${NUM_REQUESTS:-40}"
CONCURRENCY="${CONCURRENCY:-1}"
OUTPUT_TOKENS="${OUTPUT_TOKENS:-2-8}"
SEED="${SEED:-0}"
ROUTE_HEADER="${ROUTE_HEADER:-x-a3kv-route}"
REQUEST_TIMEOUT="${REQUEST_TIMEOUT:-300}"
OUT="${OUT:-target/bench-fleet}"
CONFIG="${CONFIG:-}"
REPLICA_ARGS="${REPLICA_ARGS:-}"
A3KV="${A3KV:-target/release/a3kv}"
FLEET_TIMEOUT="${FLEET_TIMEOUT:-240}"

say() { echo "bench-fleet: $*"; }
die() { echo "bench-fleet: $*" >&2; exit 2; }
[[ "$NUM_REQUESTS" =~ ^[0-9]+$ ]] && (( NUM_REQUESTS >= 1 )) || die "NUM_REQUESTS must be an integer >= 1"
[[ "$CONCURRENCY" =~ ^[0-9]+$ ]] && (( CONCURRENCY >= 1 )) || die "CONCURRENCY must be an integer >= 1"
IFS=',' read -r -a WANT <<<"$CONFIGS"
for c in "${WANT[@]}"; do
  [[ "$c" =~ ^[abcd]$ ]] || die "CONFIGS: unknown configuration '$c' (a, b, c, d)"
done
command -v python3 >/dev/null || die "python3 is needed"
if [[ ! -x "$A3KV" ]]; then
  cargo build --release -p a3kv-cli
fi
A3KV="$(cd "$(dirname "$A3KV")" && pwd)/$(basename "$A3KV")"
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
rm -f "$OUT/summary.json"

py() { python3 - "$@"; }
free_port() {
  py <<'EOF'
import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])
EOF
}
# Saves GET $1/metrics to $2.
scrape() {
  py "$1" "$2" <<'EOF'
import sys, urllib.request
open(sys.argv[2], "wb").write(urllib.request.urlopen(sys.argv[1] + "/metrics", timeout=30).read())
EOF
}

# The fleet of the configuration being measured; stopped (drained) whatever way this ends.
FLEET_PID=""
stop_fleet() {
  [[ -n "$FLEET_PID" ]] || return 0
  kill -TERM "$FLEET_PID" 2>/dev/null || true
  wait "$FLEET_PID" 2>/dev/null || true
  FLEET_PID=""
}
trap stop_fleet EXIT
trap 'exit 130' INT TERM

# Starts scripts/fleet.sh for configuration $1 in $OUT/$1/fleet and waits for its fleet.env.
start_fleet() {
  local c="$1" replicas=2 remote=0 dir="$OUT/$1"
  [[ "$c" == a ]] && replicas=1
  [[ "$c" == c || "$c" == d ]] && remote=1
  rm -rf "$dir"
  mkdir -p "$dir"
  REPLICAS="$replicas" FLEET_REMOTE="$remote" GATEWAY_PORT="$(free_port)" \
    FLEET_DIR="$dir/fleet" CONFIG="$CONFIG" REPLICA_ARGS="$REPLICA_ARGS" A3KV="$A3KV" \
    ROUTE_HEADER="$ROUTE_HEADER" STOP_TIMEOUT=30 \
    scripts/fleet.sh up >"$dir/fleet.out" 2>&1 &
  FLEET_PID=$!
  local t=0
  until [[ -f "$dir/fleet/fleet.env" ]]; do
    if ! kill -0 "$FLEET_PID" 2>/dev/null; then
      wait "$FLEET_PID" 2>/dev/null || true
      FLEET_PID=""
      cat "$dir/fleet.out" >&2
      die "scripts/fleet.sh exited at start (configuration $c)"
    fi
    (( t++ < FLEET_TIMEOUT * 5 )) || die "fleet of configuration $c not up in $FLEET_TIMEOUT s"
    sleep 0.2
  done
}

# Value of KEY in configuration $1's fleet.env (quotes removed).
envval() { sed -n "s/^$2=//p" "$1/fleet/fleet.env" | tr -d '"'; }

CPU="$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
AVX512="$(grep -m1 -o -w 'avx512f' /proc/cpuinfo || true)"
HAS_AVX512=without
[[ -n "$AVX512" ]] && HAS_AVX512=with
say "trace: pool $POOL documents of $DOC_WORDS words, $DOCS per request, Zipf $ZIPF, $NUM_REQUESTS requests, closed loop x$CONCURRENCY, $OUTPUT_TOKENS output tokens, seed $SEED"
say "cpu: $CPU ($(nproc) cores, $HAS_AVX512 AVX-512)"

for c in "${WANT[@]}"; do
  dir="$OUT/$c"
  t0="$(date +%s.%N)"
  start_fleet "$c"
  GATEWAY_URL="$(envval "$dir" GATEWAY_URL)"
  REPLICA_URLS="$(envval "$dir" REPLICA_URLS)"
  REDIS_URL="$(envval "$dir" REDIS_URL)"
  up_secs="$(py "$t0" <<<'import sys, time; print(f"{time.time() - float(sys.argv[1]):.1f}")')"
  read -r -a urls <<<"$REPLICA_URLS"
  say "[$c] fleet up in ${up_secs}s: ${#urls[@]} replica(s)${REDIS_URL:+, redis $REDIS_URL}, gateway $GATEWAY_URL"
  for i in "${!urls[@]}"; do scrape "${urls[$i]}" "$dir/metrics.r$((i + 1)).before"; done
  ROUTE=()
  [[ "$c" == d ]] && ROUTE=(--route-header "$ROUTE_HEADER")
  "$A3KV" loadgen --target "$GATEWAY_URL" --num-docs "$POOL" --doc-words "$DOC_WORDS" \
    --docs-per-request "$DOCS" --zipf "$ZIPF" --output-tokens "$OUTPUT_TOKENS" --seed "$SEED" \
    --arrival closed --concurrency "$CONCURRENCY" --num-requests "$NUM_REQUESTS" \
    --request-timeout-secs "$REQUEST_TIMEOUT" --drain-secs "$REQUEST_TIMEOUT" "${ROUTE[@]}" \
    --detailed --no-progress --out "$dir/loadgen.json" >"$dir/loadgen.log" 2>&1 \
    || { cat "$dir/loadgen.log" >&2; die "[$c] loadgen failed"; }
  for i in "${!urls[@]}"; do scrape "${urls[$i]}" "$dir/metrics.r$((i + 1)).after"; done
  stop_fleet
  echo "${#urls[@]}" >"$dir/replicas"
  say "[$c] done: $(grep -m1 '^requests:' "$dir/loadgen.log" || echo 'see loadgen.log')"
done

py "$OUT" "$CONFIGS" "$CPU" "${AVX512:-}" "$POOL" "$DOC_WORDS" "$DOCS" "$ZIPF" "$NUM_REQUESTS" \
  "$CONCURRENCY" "$OUTPUT_TOKENS" "$SEED" <<'EOF'
import glob, json, os, re, sys

out, configs, cpu, avx512 = sys.argv[1:5]
pool, doc_words, docs, zipf, num, conc, outtok, seed = sys.argv[5:13]
names = {
    "a": "1 replica",
    "b": "2 replicas, no shared tier",
    "c": "2 replicas + Redis",
    "d": "2 replicas + Redis + routing",
}

def samples(path):
    """{(name, labels): value} of a Prometheus text exposition."""
    s = {}
    for line in open(path):
        m = re.match(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)$', line.strip())
        if m and not line.startswith("#"):
            s[(m.group(1), m.group(2) or "")] = float(m.group(3))
    return s

def total(s, name, *labels):
    return sum(v for (n, l), v in s.items() if n == name and all(x in l for x in labels))

rows = []
traces = {}
for c in configs.split(","):
    d = f"{out}/{c}"
    n = int(open(f"{d}/replicas").read())
    delta = lambda name, *labels: sum(
        total(samples(f"{d}/metrics.r{i}.after"), name, *labels)
        - total(samples(f"{d}/metrics.r{i}.before"), name, *labels) for i in range(1, n + 1))
    per_replica = lambda name, *labels: [
        round(total(samples(f"{d}/metrics.r{i}.after"), name, *labels)
              - total(samples(f"{d}/metrics.r{i}.before"), name, *labels)) for i in range(1, n + 1)]
    report = json.load(open(f"{d}/loadgen.json"))
    run = report["runs"][0]
    s = run["summary"]
    recs = sorted(run.get("records") or [], key=lambda r: r["index"])
    traces[c] = [r.get("docs", []) for r in recs]
    distinct_docs = len({i for r in recs for i in r.get("docs", [])})
    loads = {t: round(delta("a3kv:chunk_load_seconds_count", f'tier="{t}"'))
             for t in ("memory", "disk", "remote", "computed")}
    tiers = {}
    for t in ("memory", "disk", "remote"):
        hit = delta("a3kv:chunk_lookups_total", f'tier="{t}"', 'result="hit"')
        miss = delta("a3kv:chunk_lookups_total", f'tier="{t}"', 'result="miss"')
        err = delta("a3kv:chunk_lookups_total", f'tier="{t}"', 'result="error"')
        looked = hit + miss + err
        if looked:
            tiers[t] = {"lookups": round(looked), "hits": round(hit), "misses": round(miss),
                        "errors": round(err), "hit_rate": hit / looked}
    ttft = s.get("ttft_secs") or {}
    row = {
        "config": c, "name": names[c], "replicas": n,
        "requests_ok": s["succeeded"], "requests_failed": s["failed"], "errors": s["errors"],
        "chunk_computations": loads["computed"],
        "computations_per_request": loads["computed"] / max(1, s["sent"]),
        "chunk_loads_by_source": loads,
        "distinct_documents": distinct_docs,
        # + the prompt prefix, one chunk shared by every request.
        "distinct_chunks": distinct_docs + 1,
        "tiers": tiers,
        "remote_errors": round(delta("a3kv:remote_errors_total")),
        "served_per_replica": per_replica("a3kv:request_success_total"),
        "computations_per_replica": per_replica("a3kv:chunk_load_seconds_count", 'tier="computed"'),
        "ttft_p50_secs": ttft.get("p50"), "ttft_p99_secs": ttft.get("p99"),
        "ttft_mean_secs": ttft.get("mean"),
        "e2e_p50_secs": (s.get("e2e_secs") or {}).get("p50"),
        "window_secs": s["window_secs"], "request_throughput": s["request_throughput"],
    }
    json.dump(row, open(f"{d}/result.json", "w"), indent=2)
    rows.append(row)

same = len({json.dumps(t) for t in traces.values()}) == 1
summary = {
    "cpu": cpu, "avx512": bool(avx512), "cores": os.cpu_count(),
    "trace": {"pool": int(pool), "doc_words": doc_words, "docs_per_request": docs,
              "zipf": float(zipf), "requests": int(num), "arrival": "closed",
              "concurrency": int(conc), "output_tokens": outtok, "seed": int(seed),
              "same_in_every_config": same},
    "configs": rows,
}
json.dump(summary, open(f"{out}/summary.json", "w"), indent=2)

def pct(r, t):
    x = r["tiers"].get(t)
    if not x:
        return "-"
    e = f" ({x['errors']} err)" if x["errors"] else ""
    return f"{100 * x['hit_rate']:.0f}%{e}"

def secs(v):
    return "-" if v is None else f"{v:.2f} s"

print()
print("| config | requests ok / failed | served per replica | chunk computations | per request "
      "| memory hit rate | remote hit rate | loads memory / remote / computed | TTFT p50 | TTFT p99 |")
print("|---|---|---|---|---|---|---|---|---|---|")
for r in rows:
    l = r["chunk_loads_by_source"]
    print(f"| ({r['config']}) {r['name']} | {r['requests_ok']} / {r['requests_failed']} "
          f"| {' / '.join(map(str, r['served_per_replica']))} | {r['chunk_computations']} | {r['computations_per_request']:.2f} | {pct(r, 'memory')} "
          f"| {pct(r, 'remote')} | {l['memory']} / {l['remote']} / {l['computed']} "
          f"| {secs(r['ttft_p50_secs'])} | {secs(r['ttft_p99_secs'])} |")
dc = {r["distinct_chunks"] for r in rows}
print()
print(f"distinct chunks in the trace: {', '.join(map(str, sorted(dc)))} "
      f"(distinct documents cited + the prompt prefix); the same trace in every configuration: "
      f"{'yes' if same else 'NO'}")
print(f"summary: {out}/summary.json")
EOF
