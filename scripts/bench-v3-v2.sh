#!/usr/bin/env bash
# `just bench-v3-v2`: V3 against V2 on the real backends (MariaDB + single
# Redis + tansu) at the same connections, the four scenarios interleaved
# round by round, each run on a fresh server and a fresh broker, so that
# the box's drift over minutes hits both strategies alike. Prints one row
# per scenario pair: each round's admissions/s and V3 ÷ V2.
# PROMO_BENCH_ROUNDS (default 3), PROMO_BENCH_SECONDS (10),
# PROMO_BENCH_CONNECTIONS (64). Writes target/bench-v3-v2/*.json and table.md.
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_PER_RUN=${PROMO_BENCH_SECONDS:-10}
ROUNDS=${PROMO_BENCH_ROUNDS:-3}
CONNECTIONS=${PROMO_BENCH_CONNECTIONS:-64}
out=target/bench-v3-v2
log() { printf '[bench-v3-v2] %s\n' "$*" >&2; }
. scripts/lib/bench.sh
rm -rf "$out" && mkdir -p "$out"

for round in $(seq 1 "$ROUNDS"); do
  for s in coupon-v2 coupon-v3 timesale-v2 timesale-v3; do
    data=$(mktemp -d)
    tag=bv$(date +%s%N | cut -c1-13)
    # shellcheck disable=SC2207
    args=(--data-dir "$data" $(mode_args real bv_ "$tag"))
    log "round $round $s: promo standalone on 127.0.0.1:$port"
    start_standalone "$out/r$round-$s.log" "${args[@]}"
    target/release/promo-bench --target "http://127.0.0.1:$port" --scenario "$s" --label "r$round" \
      --seconds "$SECONDS_PER_RUN" --connections "$CONNECTIONS" --json "$out/r$round-$s.json"
    end_run real "$data" "$tag"
    sleep 2
  done
done

python3 - "$out" "$CONNECTIONS" <<'PY' | tee "$out/table.md"
import json, pathlib, statistics, sys
out, conns = pathlib.Path(sys.argv[1]), sys.argv[2]
rate = {}
for f in out.glob("r*.json"):
    r = json.loads(f.read_text())
    rate[(int(f.stem.split("-")[0][1:]), r["scenario"])] = r["achieved_per_sec"]
rounds = sorted({k[0] for k in rate})
print(f"| service | V2 per round (/s) | V3 per round (/s) | V3 ÷ V2 per round | median | connections |")
print("|---|---|---|---|---|---|")
for svc in ["coupon", "timesale"]:
    v2 = [rate[(i, f"{svc}-v2")] for i in rounds]
    v3 = [rate[(i, f"{svc}-v3")] for i in rounds]
    ratios = [b / a for a, b in zip(v2, v3)]
    print(f"| {svc} | {' / '.join(f'{x:,.0f}' for x in v2)} | {' / '.join(f'{x:,.0f}' for x in v3)} | "
          f"{' / '.join(f'{x:.2f}' for x in ratios)} | {statistics.median(ratios):.2f} | {conns} |")
PY
