#!/usr/bin/env bash
# `just bench`: the benchmark ladder, side by side in one run.
#  - release builds of `promo` and `promo-bench`;
#  - for each backend set (embedded default; MariaDB + Redis + tansu), a fresh
#    `promo standalone` on loopback, then every scenario for PROMO_BENCH_SECONDS
#    (closed model, PROMO_BENCH_CONNECTIONS connections), invariants checked
#    after each run (promo-bench fails the ladder if one breaks);
#  - BENCHMARKS.md: the table, ratios to `ceiling` and between strategies, the
#    machine, the date and the commands to reproduce. Raw JSON in target/bench/.
# The load generator shares the machine with the server and the backends.
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_PER_RUN=${PROMO_BENCH_SECONDS:-10}
CONNECTIONS=${PROMO_BENCH_CONNECTIONS:-64}
SCENARIOS=${PROMO_BENCH_SCENARIOS:-"ceiling coupon-v1 coupon-v2 coupon-v3 timesale-v1 timesale-v2 timesale-v3 points-earn points-use points-balance"}
# Variants after the ladder: name@cN = closed model with N connections,
# name@rN = open model at N requests/s (spread over the same connections).
VARIANTS=${PROMO_BENCH_VARIANTS:-"coupon-v3@c256 timesale-v3@c256 coupon-v3@r10000 points-balance@r20000"}
MODES=${PROMO_BENCH_MODES:-"embedded real"}
out=target/bench
log() { printf '[bench] %s\n' "$*" >&2; }

cargo build --release -q --bin promo --bin promo-bench
scripts/infra.sh up >/dev/null
eval "$(scripts/infra.sh env | sed 's/^/export /')"
rm -rf "$out" && mkdir -p "$out"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
pid=
trap '[ -n "$pid" ] && kill "$pid" 2>/dev/null; true' EXIT

for mode in $MODES; do
  data=$(mktemp -d)
  args=(--listen "127.0.0.1:$port" --data-dir "$data" --promotions /nonexistent)
  if [ "$mode" = real ]; then
    tag=bench$(date +%s)
    # Databases of its own (a prefix), never the ones `just run-real` uses.
    for db in promo_coupon promo_timesale promo_point; do
      mariadb -uroot -e "DROP DATABASE IF EXISTS bench_$db" 2>/dev/null || mysql -uroot -e "DROP DATABASE IF EXISTS bench_$db" 2>/dev/null || true
    done
    args+=(--database-prefix bench_ --mysql-url "$PROMO_MYSQL_URL" --redis-url "$PROMO_REDIS_URL" --kafka-brokers "$PROMO_KAFKA_BROKERS"
           --redis-prefix "$tag:" --coupon-topic "$tag.coupon" --coupon-consumer-group "$tag-c"
           --timesale-topic "$tag.timesale" --timesale-consumer-group "$tag-t")
  fi
  log "$mode: promo standalone on 127.0.0.1:$port"
  # Only the flags choose the backends: the PROMO_* URLs exported above
  # would otherwise turn the embedded run into a real one.
  env -u PROMO_MYSQL_URL -u PROMO_REDIS_URL -u PROMO_REDIS_CLUSTER_NODES -u PROMO_KAFKA_BROKERS RUST_LOG=warn \
    target/release/promo standalone "${args[@]}" > "$out/standalone-$mode.log" 2>&1 &
  pid=$!
  ready=
  for _ in $(seq 1 150); do curl -sf "http://127.0.0.1:$port/readyz" >/dev/null && { ready=1; break; }; sleep 0.2; done
  if [ -z "$ready" ]; then
    log "$mode: promo standalone never became ready (30 s); its log:"; tail -20 "$out/standalone-$mode.log" >&2
    exit 1
  fi
  for s in $SCENARIOS $VARIANTS; do
    load=(--connections "$CONNECTIONS")
    case $s in
      *@c*) load=(--connections "${s##*@c}") ;;
      *@r*) load=(--model open --rate "${s##*@r}" --connections "$CONNECTIONS") ;;
    esac
    target/release/promo-bench --target "http://127.0.0.1:$port" --scenario "${s%@*}" --label "$mode" \
      --seconds "$SECONDS_PER_RUN" "${load[@]}" --json "$out/$mode-$s.json"
    sleep 2
  done
  kill "$pid"; wait "$pid" 2>/dev/null || true; pid=
  rm -rf "$data"
  if [ "$mode" = real ]; then
    # The run's pools (one hash field per user who took a coupon or unit).
    redis-cli -u "$PROMO_REDIS_URL" --scan --pattern "$tag:*" | xargs -r -n 5000 redis-cli -u "$PROMO_REDIS_URL" del >/dev/null
  fi
done
python3 scripts/bench_report.py "$out" "$SECONDS_PER_RUN" "$CONNECTIONS" > BENCHMARKS.md
log "wrote BENCHMARKS.md"
