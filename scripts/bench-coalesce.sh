#!/usr/bin/env bash
# `just bench-coalesce`: V3 admission coalescing on vs off, one hot campaign
# (or sale) in one bucket — the case it is for: every admission in one pool.
#  - embedded (in-process counters, the durable queue) and real (MariaDB +
#    single Redis + tansu);
#  - 64 and 256 connections, PROMO_BENCH_ROUNDS rounds (default 2) with on
#    and off interleaved, so that the box's drift hits both alike;
#  - per run: admissions/s, p99, and on real Redis the commands and the
#    Redis CPU time (INFO commandstats, INFO cpu) per admission; the mean
#    coalesced step size from promo_admission_batch_size.
# Writes target/bench-coalesce/*.json and a Markdown table (also in
# target/bench-coalesce/table.md). The load generator shares the machine.
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_PER_RUN=${PROMO_BENCH_SECONDS:-10}
ROUNDS=${PROMO_BENCH_ROUNDS:-2}
SCENARIOS=${PROMO_BENCH_COALESCE_SCENARIOS:-"coupon-v3 timesale-v3"}
CONNECTIONS=${PROMO_BENCH_COALESCE_CONNECTIONS:-"64 256"}
MODES=${PROMO_BENCH_MODES:-"embedded real"}
out=target/bench-coalesce
log() { printf '[bench-coalesce] %s\n' "$*" >&2; }
. scripts/lib/bench.sh
rm -rf "$out" && mkdir -p "$out"

# Redis: commands served since the last reset, and CPU seconds used so far.
redis_calls() {
  redis-cli -u "$PROMO_REDIS_URL" info commandstats | sed -n 's/^cmdstat_[^:]*:calls=\([0-9]*\),.*/\1/p' | awk '{s+=$1} END {print s+0}'
}
redis_cpu() {
  redis-cli -u "$PROMO_REDIS_URL" info cpu | tr -d '\r' | awk -F: '/^used_cpu_(sys|user):/ {s+=$2} END {printf "%.6f\n", s}'
}
# The coalesced steps so far of a service: "sum count" of promo_admission_batch_size.
steps() {
  curl -sf "http://127.0.0.1:$port/metrics" | awk -v svc="$1" '
    $1 ~ "^promo_admission_batch_size_sum\\{service=\"" svc "\"" {s=$2}
    $1 ~ "^promo_admission_batch_size_count\\{service=\"" svc "\"" {c=$2}
    END {print s+0, c+0}'
}

for round in $(seq 1 "$ROUNDS"); do
  for mode in $MODES; do
    for coalesce in on off; do
      name="$mode-$coalesce-r$round"
      data=$(mktemp -d)
      tag=bc$(date +%s%N | cut -c1-13)
      # shellcheck disable=SC2207
      args=(--data-dir "$data" --coupon-admission-coalescing "$coalesce" --timesale-admission-coalescing "$coalesce"
        $(mode_args "$mode" bc_ "$tag"))
      log "$name: promo standalone on 127.0.0.1:$port"
      start_standalone "$out/$name.log" "${args[@]}"
      for s in $SCENARIOS; do
        svc=${s%-v3}
        for c in $CONNECTIONS; do
          if [ "$mode" = real ]; then redis-cli -u "$PROMO_REDIS_URL" config resetstat >/dev/null; cpu0=$(redis_cpu); fi
          read -r sum0 count0 < <(steps "$svc")
          target/release/promo-bench --target "http://127.0.0.1:$port" --scenario "$s" --label "$name" \
            --seconds "$SECONDS_PER_RUN" --connections "$c" --json "$out/$name-$s-c$c.json"
          read -r sum1 count1 < <(steps "$svc")
          echo "$sum0 $count0 $sum1 $count1" > "$out/$name-$s-c$c.steps"
          if [ "$mode" = real ]; then
            echo "$(redis_calls) $cpu0 $(redis_cpu)" > "$out/$name-$s-c$c.redis"
          fi
          sleep 2
        done
      done
      end_run "$mode" "$data" "$tag"
    done
  done
done

python3 - "$out" <<'PY' | tee "$out/table.md"
import json, pathlib, statistics, sys
from collections import defaultdict
out = pathlib.Path(sys.argv[1])
runs = defaultdict(list)
for f in sorted(out.glob("*.json")):
    mode, coalesce, _round, *rest = f.stem.split("-")
    r = json.loads(f.read_text())
    admitted = r["statuses"].get("202", 0)
    s0, c0, s1, c1 = (float(x) for x in f.with_suffix(".steps").read_text().split())
    row = {"per_sec": r["achieved_per_sec"], "p99": r["p99_ms"],
           "step": (s1 - s0) / (c1 - c0) if c1 > c0 else None}
    red = f.with_suffix(".redis")
    if red.exists() and admitted:
        calls, cpu0, cpu1 = (float(x) for x in red.read_text().split())
        row["calls"] = calls / admitted
        row["cpu_us"] = (cpu1 - cpu0) * 1e6 / admitted
    runs[(mode, r["scenario"], r["connections"], coalesce)].append(row)
def med(rows, k):
    xs = [x[k] for x in rows if x.get(k) is not None]
    return statistics.median(xs) if xs else None
fmt = lambda v, p=0: "–" if v is None else f"{v:,.{p}f}"
print("| backends | scenario | connections | admissions/s on | off | on/off | p99 ms on / off | mean step (on) | Redis commands per admission on / off | Redis CPU µs per admission on / off |")
print("|---|---|---|---|---|---|---|---|---|---|")
for (mode, scen, conns) in sorted({k[:3] for k in runs}):
    on, off = runs[(mode, scen, conns, "on")], runs[(mode, scen, conns, "off")]
    a, b = med(on, "per_sec"), med(off, "per_sec")
    ratio = f"{a / b:.2f}" if a and b else "–"
    print(f"| {mode} | {scen} | {conns} | {fmt(a)} | {fmt(b)} | {ratio} | {fmt(med(on, 'p99'), 1)} / {fmt(med(off, 'p99'), 1)} | "
          f"{fmt(med(on, 'step'), 1)} | {fmt(med(on, 'calls'), 2)} / {fmt(med(off, 'calls'), 2)} | {fmt(med(on, 'cpu_us'), 1)} / {fmt(med(off, 'cpu_us'), 1)} |")
print()
print(f"Medians of {len(next(iter(runs.values())))} interleaved rounds each; every run's invariants checked by promo-bench.")
PY
log "wrote $out/table.md"
