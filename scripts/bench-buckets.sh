#!/usr/bin/env bash
# `just bench-buckets`: one hot campaign (or sale) on the real backends
# (MariaDB + Redis + tansu), spread over 1 vs 8 buckets (and 64 on the cluster):
#  - on single Redis and on the 3-master Redis Cluster, with each master's
#    Redis command count for the run (INFO commandstats after CONFIG
#    RESETSTAT) and how far the masters' shares are apart;
#  - the consumer's pace over 8 partitions with 1 vs 4 partitions persisted
#    at once (--<service>-consumer-parallelism).
# Every run is promo-bench's closed model with PROMO_BENCH_CONNECTIONS
# connections for PROMO_BENCH_SECONDS, its invariants checked afterwards.
# Writes target/bench-buckets/*.json and prints a Markdown table (also in
# target/bench-buckets/table.md). The load generator shares the machine.
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_PER_RUN=${PROMO_BENCH_SECONDS:-10}
CONNECTIONS=${PROMO_BENCH_CONNECTIONS:-64}
SCENARIOS=${PROMO_BENCH_BUCKET_SCENARIOS:-"coupon-v3 timesale-v3"}
out=target/bench-buckets
log() { printf '[bench-buckets] %s\n' "$*" >&2; }

. scripts/lib/bench.sh
cluster_ports=(7001 7002 7003)
rm -rf "$out" && mkdir -p "$out"

# Redis commands served per master since the last reset (0 for a replica).
commands() {
  redis-cli -p "$1" info commandstats | sed -n 's/^cmdstat_[^:]*:calls=\([0-9]*\),.*/\1/p' | awk '{s+=$1} END {print s+0}'
}

# run NAME COUNTERS(single|cluster) PARALLELISM BUCKETS...
run() {
  local name=$1 counters=$2 parallelism=$3; shift 3
  local tag=bb$(date +%s%N | cut -c1-13) data; data=$(mktemp -d)
  drop_databases bb_
  scripts/infra.sh fresh-broker
  # shellcheck disable=SC2207
  local args=(--data-dir "$data" $(real_args bb_ "$tag") --redis-prefix "$tag:"
    --coupon-topic-partitions 8 --timesale-topic-partitions 8
    --coupon-consumer-parallelism "$parallelism" --timesale-consumer-parallelism "$parallelism")
  if [ "$counters" = cluster ]; then
    args+=(--redis-cluster-nodes "127.0.0.1:7001,127.0.0.1:7002,127.0.0.1:7003")
  else
    args+=(--redis-url "$PROMO_REDIS_URL")
  fi
  start_standalone "$out/$name.log" "${args[@]}"
  for s in $SCENARIOS; do
    for b in "$@"; do
      if [ "$counters" = cluster ]; then
        for p in "${cluster_ports[@]}"; do redis-cli -p "$p" config resetstat >/dev/null; done
      else
        redis-cli -u "$PROMO_REDIS_URL" config resetstat >/dev/null
      fi
      log "$name: $s over $b bucket(s)"
      target/release/promo-bench --target "http://127.0.0.1:$port" --scenario "$s" --label "$name" \
        --buckets "$b" --seconds "$SECONDS_PER_RUN" --connections "$CONNECTIONS" --json "$out/$name-$s-b$b.json"
      if [ "$counters" = cluster ]; then
        for p in "${cluster_ports[@]}"; do commands "$p"; done | paste -sd, > "$out/$name-$s-b$b.masters"
      fi
      sleep 2
    done
  done
  stop_standalone
  rm -rf "$data"
  if [ "$counters" = cluster ]; then
    for p in "${cluster_ports[@]}"; do
      redis-cli -c -p "$p" --scan --pattern "$tag:*" | xargs -r -n 1 redis-cli -c -p "$p" unlink >/dev/null
    done
  else
    unlink_prefix "$tag"
  fi
}

run single-p4 single 4 1 8
run cluster-p4 cluster 4 1 8 64
run single-p1 single 1 8

python3 - "$out" <<'EOF' | tee "$out/table.md"
import json, pathlib, sys
out = pathlib.Path(sys.argv[1])
print("| counters | parallel partitions | scenario | buckets | admitted/s | p99 ms | consumer rows/s backlogged | drained alone rows/s | Redis commands per master (share spread) |")
print("|---|---|---|---|---|---|---|---|---|")
for f in sorted(out.glob("*.json")):
    r = json.loads(f.read_text())
    name = f.stem.split("-")
    counters, parallel = name[0], name[1][1:]
    p = r.get("persistence") or {}
    fmt = lambda v: "–" if v is None else f"{v:,.0f}"
    masters = f.with_suffix(".masters")
    spread = "–"
    if masters.exists():
        calls = [int(x) for x in masters.read_text().strip().split(",")]
        total = sum(calls) or 1
        shares = [c / total for c in calls]
        spread = f"{' / '.join(f'{c:,}' for c in calls)} ({(max(shares) - min(shares)) * 100:.0f} pts)"
    print(f"| {counters} | {parallel} | {r['scenario']} | {r['buckets']} | {r['achieved_per_sec']:,.0f} | {r['p99_ms']:.1f} | "
          f"{fmt(p.get('backlogged_per_sec'))} | {fmt(p.get('drain_per_sec'))} | {spread} |")
EOF
log "wrote $out/table.md"
