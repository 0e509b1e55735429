#!/usr/bin/env bash
# `just bench-cost`: what one V3 admission and one persisted row cost, per
# process, on MariaDB + single Redis + tansu — the figures the projection
# to 1,000,000 admissions/s (scripts/bench_projection.py) is calibrated from.
#
# Each run deploys a service as the chart does: the API (`<svc>-service
# serve`) and the V3 consumer (`<svc>-service consume`) as two processes.
#  1. Admission: the API alone (no consumer), promo-bench for
#     PROMO_BENCH_SECONDS (10) with PROMO_BENCH_CONNECTIONS (256)
#     connections; the events wait in the topic.
#  2. Persistence: the API stopped, the consumer started; it drains the
#     topic with the box to itself, timed from its first persisted row to
#     its last.
# Over each phase: CPU ticks of the API, the consumer, MariaDB, Redis,
# tansu and the load generator (/proc/PID/stat), divided by the phase's
# admissions or rows. promo-bench checks its invariants once nothing is
# pending (every 202 one row, nobody twice, no oversell). PROMO_BENCH_ROUNDS
# (default 2) rounds of coupon-v3 and timesale-v3. Writes
# target/bench-cost/*.json, table.md and projection.md.
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_PER_RUN=${PROMO_BENCH_SECONDS:-10}
CONNECTIONS=${PROMO_BENCH_CONNECTIONS:-256}
ROUNDS=${PROMO_BENCH_ROUNDS:-2}
SCENARIOS=${PROMO_BENCH_COST_SCENARIOS:-"coupon-v3 timesale-v3"}
out=target/bench-cost
log() { printf '[bench-cost] %s\n' "$*" >&2; }
# The admission phase is measured from 2 s into the load to 1 s before its end.
[ "$SECONDS_PER_RUN" -ge 5 ] || { log "PROMO_BENCH_SECONDS must be at least 5"; exit 2; }
. scripts/lib/bench.sh
cargo build --release -q --bin coupon-service --bin timesale-service
rm -rf "$out" && mkdir -p "$out"
cport=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cpid=
trap '[ -n "$pid" ] && kill "$pid" 2>/dev/null; [ -n "$cpid" ] && kill "$cpid" 2>/dev/null; true' EXIT

# listener_pid PORT: the process listening on 127.0.0.1:PORT.
listener_pid() { ss -Hltnp "sport = :$1" | grep -o 'pid=[0-9]*' | head -1 | cut -d= -f2; }
# ticks PID: user + system CPU ticks of PID so far (children not counted).
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
# snapshot NAME=PID...: one "name ticks" line per process, plus the clock
# and the whole box's busy and stolen ticks.
snapshot() {
  printf 'clock %s\n' "$(date +%s.%N)"
  # The whole box: user, nice, system, irq and softirq ticks of every core,
  # and the ticks the hypervisor ran something else while this VM was ready.
  awk '/^cpu / {print "box", $2 + $3 + $4 + $7 + $8; print "steal", $9}' /proc/stat
  for np in "$@"; do printf '%s %s\n' "${np%%=*}" "$(ticks "${np#*=}")"; done
}
# persisted URL: requests the consumer at URL has decided (accepted + rejected).
persisted() {
  curl -sf "$1/metrics" | awk '/^promo_consumer_messages_total\{/ && !/redelivered/ {s += $NF} END {printf "%d\n", s}'
}
# admissions URL: "admissions N", V3 admission attempts the API at URL answered.
admissions() {
  curl -sf "$1/metrics" | awk '/^promo_admissions_total\{/ {s += $NF} END {printf "admissions %d\n", s}'
}

mariadb_pid=$(listener_pid 3306)
redis_pid=$(listener_pid "${PROMO_REDIS_URL##*:}")
getconf CLK_TCK > "$out/hz"  # ticks per second of /proc/PID/stat

for round in $(seq 1 "$ROUNDS"); do
  for s in $SCENARIOS; do
    svc=${s%-v3}
    run=$out/r$round-$s
    tag=bc$(date +%s%N | cut -c1-13)
    drop_databases bc_
    scripts/infra.sh fresh-broker
    tansu_pid=$(listener_pid "${PROMO_KAFKA_BROKERS##*:}")
    common=(--mysql-url "$PROMO_MYSQL_URL" --database-prefix bc_ --redis-url "$PROMO_REDIS_URL"
      --redis-prefix "$tag:" --kafka-brokers "$PROMO_KAFKA_BROKERS"
      "--$svc-topic" "$tag.$svc" "--$svc-consumer-group" "$tag-g")
    log "round $round $s: the API alone on 127.0.0.1:$port"
    "${only_flags[@]}" "target/release/$svc-service" serve --listen "127.0.0.1:$port" "${common[@]}" > "$run-api.log" 2>&1 &
    pid=$!
    wait_ready "$port" "$run-api.log"

    # Phase 1: admission. promo-bench sets its promotion up first, so the
    # snapshots are taken from inside the load's window.
    target/release/promo-bench --target "http://127.0.0.1:$port" --scenario "$s" --label "r$round" \
      --seconds "$SECONDS_PER_RUN" --connections "$CONNECTIONS" --json "$run.json" > "$run-bench.log" 2>&1 &
    bpid=$!
    sleep 2
    snapshot api="$pid" mariadb="$mariadb_pid" redis="$redis_pid" tansu="$tansu_pid" load="$bpid" > "$run-admit.before"
    admissions "http://127.0.0.1:$port" >> "$run-admit.before"
    sleep $((SECONDS_PER_RUN - 3))
    snapshot api="$pid" mariadb="$mariadb_pid" redis="$redis_pid" tansu="$tansu_pid" load="$bpid" > "$run-admit.after"
    admissions "http://127.0.0.1:$port" >> "$run-admit.after"

    # Phase 2: persistence. Once the load is over (promo-bench now waits
    # for nothing to be pending, through the API), the consumer starts
    # and drains the topic.
    sleep 2.5
    log "round $round $s: the consumer alone drains the topic"
    "${only_flags[@]}" "target/release/$svc-service" consume --listen "127.0.0.1:$cport" "${common[@]}" > "$run-consumer.log" 2>&1 &
    cpid=$!
    c="http://127.0.0.1:$cport"
    for _ in $(seq 1 1200); do
      n=$(persisted "$c" 2>/dev/null) || n=0
      [ "$n" -gt 0 ] && break
      sleep 0.05
    done
    snapshot consumer="$cpid" mariadb="$mariadb_pid" redis="$redis_pid" tansu="$tansu_pid" > "$run-persist.before"
    echo "rows $(persisted "$c")" >> "$run-persist.before"
    last=-1
    while kill -0 "$bpid" 2>/dev/null; do
      n=$(persisted "$c")
      if [ "$n" != "$last" ]; then
        last=$n
        snapshot consumer="$cpid" mariadb="$mariadb_pid" redis="$redis_pid" tansu="$tansu_pid" > "$run-persist.after"
        echo "rows $n" >> "$run-persist.after"
      fi
      sleep 0.05
    done
    # promo-bench checked the invariants once nothing was pending; it
    # fails (and so does this script) when one broke.
    wait "$bpid" || { log "promo-bench failed: $run-bench.log"; tail "$run-bench.log" >&2; exit 1; }
    kill "$pid" "$cpid"; wait "$pid" "$cpid" 2>/dev/null || true; pid=; cpid=
    unlink_prefix "$tag"
    sleep 2
  done
done
drop_databases bc_

python3 scripts/bench_projection.py "$out" | tee "$out/projection.md"
