#!/usr/bin/env bash
# `just bench-outbox` (also run by `just bench`): what writing every change
# to the outbox costs. `promo standalone` with `--events on` vs `--events off`
# (off: no outbox rows, nothing published), paired run by run over
# PROMO_BENCH_ROUNDS rounds (default 2) so the box's drift hits both alike:
#  - V1/V2 throughput (requests/s) of the coupon, time-sale and point writes;
#  - V3 admissions/s and the consumer's rows/s (while backlogged, and alone
#    after the load: its capacity with the cores to itself);
#  - the whole box's CPU time per request while the load ran;
# on the embedded default and on MariaDB + Redis + tansu. Writes
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

# cpu_ticks PID: CPU time so far (clock ticks) of the whole box, of the
# server PID and of MariaDB (0 when it is not running here).
cpu_ticks() {
  local m; m=$(pgrep -x mariadbd | head -1 || true)
  printf '%s %s %s' "$(awk '/^cpu /{print $2+$3+$4+$7+$8}' /proc/stat)" \
    "$(awk '{print $14+$15}' "/proc/$1/stat")" "$( [ -n "$m" ] && awk '{print $14+$15}' "/proc/$m/stat" || echo 0)"
}

# Each scenario's on and off runs follow each other, each on a fresh server
# (its own data folder, databases, topics and keys), the order alternating
# from one scenario and round to the next: the box's speed drifts over
# minutes, so runs compared with each other are seconds apart, and neither
# setting inherits the other's leftovers (a backlog still being relayed, a
# larger database).
turn=0
for round in $(seq 1 "$ROUNDS"); do
  for mode in $MODES; do
    for s in $SCENARIOS; do
      if [ $((turn % 2)) = 0 ]; then order="on off"; else order="off on"; fi
      turn=$((turn + 1))
      for events in $order; do
        name="$mode-$events-r$round"
        data=$(mktemp -d)
        tag=bo$(date +%s%N | cut -c1-13)
        # shellcheck disable=SC2207
        args=(--data-dir "$data" --events "$events" --events-topic "$tag.events" $(mode_args "$mode" bo_ "$tag"))
        log "$name $s: promo standalone on 127.0.0.1:$port"
        start_standalone "$out/$name-$s.log" "${args[@]}"
        before=$(cpu_ticks "$pid")
        target/release/promo-bench --target "http://127.0.0.1:$port" --scenario "$s" --label "$name" \
          --seconds "$SECONDS_PER_RUN" --connections "$CONNECTIONS" --json "$out/$name-$s.json"
        echo "$before $(cpu_ticks "$pid")" > "$out/$name-$s.cpu"
        end_run "$mode" "$data" "$tag"
        sleep 2
      done
    done
  done
done
drop_databases bo_

python3 - "$out" "$ROUNDS" "$(getconf CLK_TCK)" <<'PY' | tee "$out/table.md"
import json, pathlib, statistics, sys
from collections import defaultdict
out, rounds = pathlib.Path(sys.argv[1]), sys.argv[2]
runs = defaultdict(list)
for f in sorted(out.glob("*.json")):
    mode, events, rnd, *_ = f.stem.split("-")
    r = json.loads(f.read_text())
    p = r.get("persistence") or {}
    cpu = f.with_suffix(".cpu")
    box = None
    if cpu.exists() and r["requests"]:
        t = [int(x) for x in cpu.read_text().split()]
        box = (t[3] - t[0]) * 1e6 / int(sys.argv[3]) / r["requests"]
    runs[(mode, r["scenario"], events)].append({
        "round": rnd, "per_sec": r["achieved_per_sec"], "p99": r["p99_ms"],
        "busy": p.get("backlogged_per_sec"), "alone": p.get("drain_per_sec"), "box": box})
def med(rows, k):
    xs = [x[k] for x in rows if x.get(k)]
    return statistics.median(xs) if xs else None
fmt = lambda v, p=0: "–" if v is None else f"{v:,.{p}f}"
ratio = lambda a, b: f"{a / b:.2f}" if a and b else "–"
def pairs(on, off):
    offs = {x["round"]: x["per_sec"] for x in off}
    return [x["per_sec"] / offs[x["round"]] for x in sorted(on, key=lambda x: int(x["round"][1:])) if offs.get(x["round"])]
print("| backends | scenario | requests/s on | off | on/off | each pair's on/off (median) | p99 ms on / off | box CPU µs per request on / off | V3 consumer rows/s backlogged on / off | alone on / off | alone on/off |")
print("|---|---|---|---|---|---|---|---|---|---|---|")
for (mode, scen) in sorted({k[:2] for k in runs}):
    on, off = runs[(mode, scen, "on")], runs[(mode, scen, "off")]
    a, b = med(on, "per_sec"), med(off, "per_sec")
    ca, cb = med(on, "alone"), med(off, "alone")
    ps = pairs(on, off)
    each = ", ".join(f"{x:.2f}" for x in ps) + (f" ({statistics.median(ps):.2f})" if ps else "")
    print(f"| {mode} | {scen} | {fmt(a)} | {fmt(b)} | {ratio(a, b)} | {each} | {fmt(med(on, 'p99'), 1)} / {fmt(med(off, 'p99'), 1)} | "
          f"{fmt(med(on, 'box'))} / {fmt(med(off, 'box'))} | {fmt(med(on, 'busy'))} / {fmt(med(off, 'busy'))} | {fmt(ca)} / {fmt(cb)} | {ratio(ca, cb)} |")
print()
print(f"Medians of {rounds} rounds, each scenario's on and off runs back to back; `on` writes every change's event in its transaction and "
      "relays it, `off` (`--events off`) writes none. Every run's invariants checked by promo-bench. Box CPU: the whole "
      "machine's busy CPU time (`/proc/stat`: user, nice, system, irq, softirq) while the load ran, per request answered, "
      "a second view of the cost that counts no idle or stolen time; it leaves out what the relay or the V3 consumer still "
      "did after the load stopped. Each run's `.cpu` "
      "file holds the box's, the server's and MariaDB's clock ticks before and after.")
PY
log "wrote $out/table.md"
