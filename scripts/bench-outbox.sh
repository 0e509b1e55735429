#!/usr/bin/env bash
# `just bench-outbox` (also run by `just bench`): what writing every change
# to the outbox costs. `promo standalone` with `--events on` vs `--events off`
# (off: no outbox rows, nothing published), interleaved over
# PROMO_BENCH_ROUNDS rounds (default 2) so the box's drift hits both alike:
#  - V1/V2 throughput (requests/s) of the coupon, time-sale and point writes;
#  - V3 admissions/s and the consumer's rows/s (while backlogged, and alone
#    after the load: its capacity with the cores to itself);
# on the embedded default and on MariaDB + Redis + tansu. Each scenario
# starts after the previous one's events are relayed (outbox_idle). Writes
# target/bench-outbox/*.json and table.md. The load generator shares the box.
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_PER_RUN=${PROMO_BENCH_SECONDS:-10}
ROUNDS=${PROMO_BENCH_ROUNDS:-2}
CONNECTIONS=${PROMO_BENCH_CONNECTIONS:-64}
SCENARIOS=${PROMO_BENCH_OUTBOX_SCENARIOS:-"coupon-v1 coupon-v2 coupon-v3 timesale-v1 timesale-v2 timesale-v3 points-use"}
MODES=${PROMO_BENCH_MODES:-"embedded real"}
out=target/bench-outbox
log() { printf '[bench-outbox] %s\n' "$*" >&2; }
. scripts/lib/bench.sh
rm -rf "$out" && mkdir -p "$out"

# outbox_idle WHAT: waits until the server's outbox backlog is relayed, so
# one scenario's relaying does not run during the next one's load. The
# backlog gauge is refreshed every 5 s, so it is first read 6 s after the
# load (both settings wait those 6 s; with events off there is no backlog).
outbox_idle() {
  local waited=6 backlog
  sleep 6
  while :; do
    backlog=$(curl -sf "http://127.0.0.1:$port/metrics" |
      awk '/^promo_outbox_backlog[{ ]/ {n += $NF} END {print n + 0}')
    [ "$backlog" = 0 ] && break
    if [ "$waited" -ge 180 ]; then log "$1: outbox backlog still $backlog after ${waited} s; going on"; break; fi
    sleep 2; waited=$((waited + 2))
  done
  [ "$waited" -gt 6 ] && log "$1: waited ${waited} s for the outbox relay"
  return 0
}

for round in $(seq 1 "$ROUNDS"); do
  for mode in $MODES; do
    for events in on off; do
      name="$mode-$events-r$round"
      data=$(mktemp -d)
      tag=bo$(date +%s%N | cut -c1-13)
      # shellcheck disable=SC2207
      args=(--data-dir "$data" --events "$events" --events-topic "$tag.events" $(mode_args "$mode" bo_ "$tag"))
      log "$name: promo standalone on 127.0.0.1:$port"
      start_standalone "$out/$name.log" "${args[@]}"
      for s in $SCENARIOS; do
        target/release/promo-bench --target "http://127.0.0.1:$port" --scenario "$s" --label "$name" \
          --seconds "$SECONDS_PER_RUN" --connections "$CONNECTIONS" --json "$out/$name-$s.json"
        outbox_idle "$name $s"
      done
      end_run "$mode" "$data" "$tag"
    done
  done
done
drop_databases bo_

python3 - "$out" "$ROUNDS" <<'PY' | tee "$out/table.md"
import json, pathlib, statistics, sys
from collections import defaultdict
out, rounds = pathlib.Path(sys.argv[1]), sys.argv[2]
runs = defaultdict(list)
for f in sorted(out.glob("*.json")):
    mode, events, _round, *_ = f.stem.split("-")
    r = json.loads(f.read_text())
    p = r.get("persistence") or {}
    runs[(mode, r["scenario"], events)].append({
        "per_sec": r["achieved_per_sec"], "p99": r["p99_ms"],
        "busy": p.get("backlogged_per_sec"), "alone": p.get("drain_per_sec")})
def med(rows, k):
    xs = [x[k] for x in rows if x.get(k)]
    return statistics.median(xs) if xs else None
fmt = lambda v, p=0: "–" if v is None else f"{v:,.{p}f}"
ratio = lambda a, b: f"{a / b:.2f}" if a and b else "–"
print("| backends | scenario | requests/s on | off | on/off | p99 ms on / off | V3 consumer rows/s backlogged on / off | alone on / off | alone on/off |")
print("|---|---|---|---|---|---|---|---|---|")
for (mode, scen) in sorted({k[:2] for k in runs}):
    on, off = runs[(mode, scen, "on")], runs[(mode, scen, "off")]
    a, b = med(on, "per_sec"), med(off, "per_sec")
    ca, cb = med(on, "alone"), med(off, "alone")
    print(f"| {mode} | {scen} | {fmt(a)} | {fmt(b)} | {ratio(a, b)} | {fmt(med(on, 'p99'), 1)} / {fmt(med(off, 'p99'), 1)} | "
          f"{fmt(med(on, 'busy'))} / {fmt(med(off, 'busy'))} | {fmt(ca)} / {fmt(cb)} | {ratio(ca, cb)} |")
print()
print(f"Medians of {rounds} interleaved rounds; `on` writes every change's event in its transaction and "
      "relays it, `off` (`--events off`) writes none. Every run's invariants checked by promo-bench.")
PY
log "wrote $out/table.md"
