#!/usr/bin/env bash
# `just bench`: the benchmark ladder, side by side in one run.
#  - release builds of `promo` and `promo-bench`;
#  - for each backend set (embedded default; MariaDB + Redis + tansu), a fresh
#    `promo standalone` on loopback, then every scenario for PROMO_BENCH_SECONDS
#    (closed model, PROMO_BENCH_CONNECTIONS connections), invariants checked
#    after each run (promo-bench fails the ladder if one breaks);
#  - then `scripts/bench-outbox.sh` (the outbox's cost: --events on vs off;
#    PROMO_BENCH_OUTBOX=0 skips it) and `scripts/bench-cost.sh` (CPU per V3
#    admission and per row, the projection; PROMO_BENCH_COST=0 skips it);
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

. scripts/lib/bench.sh
rm -rf "$out" && mkdir -p "$out"

for mode in $MODES; do
  data=$(mktemp -d)
  tag=bench$(date +%s)
  # shellcheck disable=SC2207
  args=(--data-dir "$data" $(mode_args "$mode" bench_ "$tag"))
  log "$mode: promo standalone on 127.0.0.1:$port"
  start_standalone "$out/standalone-$mode.log" "${args[@]}"
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
  # Also the run's pools (one hash field per user who took a coupon or unit).
  end_run "$mode" "$data" "$tag"
done
# What the outbox costs: every write scenario with --events on vs off.
if [ "${PROMO_BENCH_OUTBOX:-1}" != 0 ]; then scripts/bench-outbox.sh >/dev/null; fi
# What one V3 admission and one persisted row cost, and the projection to
# 1,000,000 admissions/s (PROMO_BENCH_COST=0 skips it).
if [ "${PROMO_BENCH_COST:-1}" != 0 ]; then scripts/bench-cost.sh >/dev/null; fi
python3 scripts/bench_report.py "$out" "$SECONDS_PER_RUN" "$CONNECTIONS" > BENCHMARKS.md
log "wrote BENCHMARKS.md"
