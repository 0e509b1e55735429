#!/usr/bin/env bash
# `just bench-buckets`: one hot campaign (or sale) on the real backends
# (MariaDB + Redis + tansu), spread over 1 vs 8 buckets:
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

cargo build --release -q --bin promo --bin promo-bench
scripts/infra.sh up >/dev/null
eval "$(scripts/infra.sh env | sed 's/^/export /')"
cluster_ports=(7001 7002 7003)
rm -rf "$out" && mkdir -p "$out"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
pid=
trap '[ -n "$pid" ] && kill "$pid" 2>/dev/null; true' EXIT

# Redis commands served per master since the last reset (0 for a replica).
commands() {
  redis-cli -p "$1" info commandstats | sed -n 's/^cmdstat_[^:]*:calls=\([0-9]*\),.*/\1/p' | awk '{s+=$1} END {print s+0}'
}

# run NAME COUNTERS(single|cluster) PARALLELISM BUCKETS...
run() {
  local name=$1 counters=$2 parallelism=$3; shift 3
  local tag=bb$(date +%s%N | cut -c1-13) data; data=$(mktemp -d)
  for db in promo_coupon promo_timesale promo_point; do
    mariadb -uroot -e "DROP DATABASE IF EXISTS bb_$db" 2>/dev/null || mysql -uroot -e "DROP DATABASE IF EXISTS bb_$db" 2>/dev/null || true
  done
  local args=(--listen "127.0.0.1:$port" --data-dir "$data" --promotions /nonexistent
    --database-prefix bb_ --mysql-url "$PROMO_MYSQL_URL" --kafka-brokers "$PROMO_KAFKA_BROKERS"
    --redis-prefix "$tag:" --coupon-topic "$tag.coupon" --coupon-consumer-group "$tag-c"
    --timesale-topic "$tag.timesale" --timesale-consumer-group "$tag-t"
    --coupon-topic-partitions 8 --timesale-topic-partitions 8
    --coupon-consumer-parallelism "$parallelism" --timesale-consumer-parallelism "$parallelism")
  if [ "$counters" = cluster ]; then
    args+=(--redis-cluster-nodes "127.0.0.1:7001,127.0.0.1:7002,127.0.0.1:7003")
  else
    args+=(--redis-url "$PROMO_REDIS_URL")
  fi
  env -u PROMO_MYSQL_URL -u PROMO_REDIS_URL -u PROMO_REDIS_CLUSTER_NODES -u PROMO_KAFKA_BROKERS RUST_LOG=warn \
    target/release/promo standalone "${args[@]}" > "$out/$name.log" 2>&1 &
  pid=$!
  local ready=
  for _ in $(seq 1 150); do curl -sf "http://127.0.0.1:$port/readyz" >/dev/null && { ready=1; break; }; sleep 0.2; done
  [ -n "$ready" ] || { log "$name: never ready; its log:"; tail -20 "$out/$name.log" >&2; exit 1; }
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
  kill "$pid"; wait "$pid" 2>/dev/null || true; pid=
  rm -rf "$data"
  if [ "$counters" = cluster ]; then
    for p in "${cluster_ports[@]}"; do
      redis-cli -c -p "$p" --scan --pattern "$tag:*" | xargs -r -n 1 redis-cli -c -p "$p" unlink >/dev/null
    done
  else
    redis-cli -u "$PROMO_REDIS_URL" --scan --pattern "$tag:*" | xargs -r -n 5000 redis-cli -u "$PROMO_REDIS_URL" unlink >/dev/null
  fi
}

run single-p4 single 4 1 8
run cluster-p4 cluster 4 1 8
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
