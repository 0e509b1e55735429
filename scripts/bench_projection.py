#!/usr/bin/env python3
"""The cost table and the projection of `just bench-cost`.

Reads target/bench-cost (or the folder given): per run, CPU ticks of each
process at the start and end of the admission phase (the API alone) and of
the persistence phase (the consumer alone), with the admissions or rows
counted between them. Prints, in Markdown:
  - per scenario, the medians over the rounds: admissions/s, rows/s and CPU
    µs per admission or row, per process;
  - what this 2-core box can do end to end (both phases on its cores);
  - a projection to TARGET admissions/s (1,000,000 unless PROMO_PROJECT_RATE
    says otherwise) for one campaign, calibrated from those costs, with its
    assumptions stated.
The projection is arithmetic from measured per-operation costs, not a
measurement at that scale.
"""

import json
import math
import os
import statistics
import sys
from pathlib import Path

TARGET = int(os.environ.get("PROMO_PROJECT_RATE", "1000000"))
# Assumptions of the projection (stated in its output).
POD_CORES = 2  # cores per API or consumer pod
UTIL = 0.7  # busiest a core is planned to run at the peak
MAX_BUCKETS = 256  # the Promotion spec's limit
SPREAD = 16  # buckets per master for shares within ±15 % (measured: 64 over 3)
BOX_CORES = 2


def read(path):
    """{name: value} of one snapshot file ("name value" lines)."""
    out = {}
    for line in Path(path).read_text().splitlines():
        k, v = line.split()
        out[k] = float(v)
    return out


def phase(run, name, count_key, hz):
    """(count, seconds, busy cores, stolen cores, {process: µs per counted item}) of one phase."""
    a, b = read(f"{run}-{name}.before"), read(f"{run}-{name}.after")
    n = b[count_key] - a[count_key]
    secs = b["clock"] - a["clock"]
    if n <= 0 or secs <= 0:
        raise SystemExit(f"{run}-{name}: nothing counted ({n} in {secs:.2f} s)")
    busy = (b["box"] - a["box"]) / hz / secs
    stolen = (b["steal"] - a["steal"]) / hz / secs
    skip = {"clock", "box", "steal", count_key}
    cost = {k: (b[k] - a[k]) / hz * 1e6 / n for k in a if k not in skip and k in b}
    return n, secs, busy, stolen, cost


def runs(out):
    by = {}
    hz = float((out / "hz").read_text())
    for j in sorted(out.glob("r*-*.json")):
        run = str(j)[: -len(".json")]
        scenario = json.loads(j.read_text())["scenario"]
        n_a, s_a, busy_a, steal_a, adm = phase(run, "admit", "admissions", hz)
        n_p, s_p, busy_p, steal_p, per = phase(run, "persist", "rows", hz)
        by.setdefault(scenario, []).append(
            {"admit_rate": n_a / s_a, "rows_rate": n_p / s_p, "admit": adm, "persist": per,
             "busy_admit": busy_a, "busy_persist": busy_p, "steal_admit": steal_a, "steal_persist": steal_p}
        )
    return by


def med(xs):
    return statistics.median(xs)


def fmt(x, nd=1):
    return f"{x:,.{nd}f}"


def main():
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "target/bench-cost")
    by = runs(out)
    if not by:
        raise SystemExit(f"no runs in {out}")
    figures = {}
    print("| scenario | rounds | admissions/s, API alone | cores busy / stolen | API µs | Redis µs | tansu µs | MariaDB µs | "
          "load generator µs | rows/s, consumer alone | cores busy / stolen | consumer µs | MariaDB µs | Redis µs | tansu µs |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for scenario, rs in sorted(by.items()):
        f = {
            "admit_rate": med([r["admit_rate"] for r in rs]),
            "rows_rate": med([r["rows_rate"] for r in rs]),
            **{k: med([r[k] for r in rs]) for k in ("busy_admit", "busy_persist", "steal_admit", "steal_persist")},
            "admit": {k: med([r["admit"][k] for r in rs]) for k in rs[0]["admit"]},
            "persist": {k: med([r["persist"][k] for r in rs]) for k in rs[0]["persist"]},
        }
        figures[scenario] = f
        a, p = f["admit"], f["persist"]
        print(f"| {scenario} | {len(rs)} | {fmt(f['admit_rate'], 0)} | {fmt(f['busy_admit'], 2)} / {fmt(f['steal_admit'], 2)} | {fmt(a['api'])} | "
              f"{fmt(a['redis'])} | {fmt(a['tansu'])} | {fmt(a['mariadb'])} | {fmt(a['load'])} | "
              f"{fmt(f['rows_rate'], 0)} | {fmt(f['busy_persist'], 2)} / {fmt(f['steal_persist'], 2)} | {fmt(p['consumer'])} | {fmt(p['mariadb'])} | "
              f"{fmt(p['redis'])} | {fmt(p['tansu'])} |")
    print()
    print("Admission columns: CPU µs per admission while the API ran alone; persistence columns: CPU µs "
          f"per row while the consumer drained the topic alone; \"cores busy / stolen\": of the box's {BOX_CORES}, "
          "how many were in use during the phase, and how many the hypervisor gave to something else while this "
          "VM wanted them (steal; it varies with the host's load and is one reason this box's speed drifts) — "
          "medians over the rounds.\n")

    print("**This box, end to end.** Both phases on the same two cores (as `promo standalone` runs them):\n")
    for scenario, f in sorted(figures.items()):
        a, p = f["admit"], f["persist"]
        server = sum(v for k, v in a.items() if k != "load") + sum(p.values())
        total = server + a["load"]
        print(f"- {scenario}: {fmt(total)} µs of CPU per admission in all ({fmt(server)} without the load "
              f"generator) → at most {fmt(BOX_CORES * 1e6 / total, 0)}/s on {BOX_CORES} cores with the load "
              f"generator on them; 35,000/s would need ≤ {fmt(BOX_CORES * 1e6 / 35000)} µs.")
    print()

    print(f"**Projection: one campaign at {TARGET:,} admissions/s**, from the costs above (arithmetic, not a "
          f"measurement at that scale). Assumptions: pods of {POD_CORES} cores and every core planned at "
          f"≤ {UTIL:.0%} busy; Redis runs one command thread per master, and one bucket's keys are one slot, so "
          f"one bucket is served by one master's thread; buckets ≥ {SPREAD} × masters so the masters' shares "
          f"land within ±15 % (measured: 64 buckets over 3 masters, −13.5…+11.5 %); one partition per bucket; "
          f"the consumers persist at the admission rate (no backlog); per-process costs stay those of this "
          f"box (the backends' machines may be faster or slower). tansu stands in for Kafka here, so its "
          f"figure says little about Apache Kafka brokers.\n")
    print("| scenario | API cores (pods) | Redis cores (masters) | buckets ≥ | partitions | consumer cores (pods) | "
          "MariaDB cores | tansu cores |")
    print("|---|---|---|---|---|---|---|---|")
    notes = []
    for scenario, f in sorted(figures.items()):
        a, p = f["admit"], f["persist"]
        k = TARGET / 1e6  # cores per µs of CPU per item
        api = a["api"] * k
        redis = (a["redis"] + p["redis"]) * k
        masters = math.ceil(redis / UTIL)
        per_bucket = UTIL * 1e6 / (a["redis"] + p["redis"])
        need = math.ceil(TARGET / per_bucket)
        wanted = 2 ** math.ceil(math.log2(max(need, SPREAD * masters)))
        buckets = min(wanted, MAX_BUCKETS)
        consumer = p["consumer"] * k
        mariadb = (p["mariadb"] + a["mariadb"]) * k
        tansu = (a["tansu"] + p["tansu"]) * k
        shown = f"{buckets}" if buckets == wanted else f"{buckets} (the limit; {wanted} for an even spread)"
        print(f"| {scenario} | {fmt(api)} ({math.ceil(api / (POD_CORES * UTIL))}) | {fmt(redis)} ({masters}) | "
              f"{shown} | {buckets} | {fmt(consumer)} ({math.ceil(consumer / (POD_CORES * UTIL))}) | "
              f"{fmt(mariadb)} | {fmt(tansu)} |")
        notes.append(
            f"- {scenario}: one bucket's master thread admits at most {fmt(per_bucket, 0)}/s at {UTIL:.0%} "
            f"({fmt(a['redis'] + p['redis'])} µs of Redis per admission, its consumer's clearing included), so "
            f"{TARGET:,}/s needs ≥ {need} buckets for Redis alone; fewer than {SPREAD} buckets per master spread "
            f"the masters' shares wider than ±15 %, so the busiest master sets the pace. Persisting {TARGET:,} rows/s takes "
            f"{fmt(mariadb)} cores of MariaDB at this box's {fmt(p['mariadb'] + a['mariadb'])} µs per row — one "
            f"campaign's rows go to one database, so one primary must have them; where it cannot, the topic holds "
            f"the backlog and the consumers drain it after the peak (a 1,000,000-unit quota at this box's "
            f"{fmt(f['rows_rate'], 0)} rows/s per consumer process: {fmt(1e6 / f['rows_rate'], 0)} s)."
        )
    print()
    print("\n".join(notes))


if __name__ == "__main__":
    main()
