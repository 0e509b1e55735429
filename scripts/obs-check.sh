#!/usr/bin/env bash
# `just obs-check`: the dashboards and alerts, proven against a real Prometheus.
#  1. promtool checks the alert rules and runs their unit tests;
#  2. `promo standalone` (embedded database and queue, the real Redis so that
#     counters can be lost) serves the examples; Prometheus scrapes it every
#     second on loopback;
#  3. a short load drives every service (and a counter rebuild);
#  4. every dashboard panel's query runs through Prometheus' HTTP API and must
#     neither fail nor come back empty.
# Needs `scripts/infra.sh up` (Redis); installs Debian's prometheus if missing.
set -euo pipefail
cd "$(dirname "$0")/.."
log() { printf '[obs-check] %s\n' "$*"; }
LOAD_SECONDS=${PROMO_OBS_LOAD_SECONDS:-20}

if ! command -v prometheus >/dev/null || ! command -v promtool >/dev/null; then
  log "installing prometheus (apt-get)"
  [ "$(id -u)" -eq 0 ] || { log "need root to install prometheus; install it and retry"; exit 1; }
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends prometheus >&2
fi

log "alert rules"
promtool check rules charts/promotion-system/rules/alerts.yaml
promtool test rules tests/alerts/alerts_test.yaml

eval "$(scripts/infra.sh env | sed 's/^/export /')"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
APP_PORT=$(free_port)
PROM_PORT=$(free_port)
work=$(mktemp -d)
prefix="obs$$:"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  redis-cli -u "$PROMO_REDIS_URL" --scan --pattern "${prefix}*" | xargs -r redis-cli -u "$PROMO_REDIS_URL" del >/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

cargo build -q --bin promo
log "promo standalone on 127.0.0.1:$APP_PORT"
# Embedded database and queue: the exported PROMO_* URLs must not apply.
env -u PROMO_MYSQL_URL -u PROMO_REDIS_CLUSTER_NODES -u PROMO_KAFKA_BROKERS RUST_LOG=warn \
  target/debug/promo standalone --listen "127.0.0.1:$APP_PORT" --data-dir "$work/data" \
  --redis-url "$PROMO_REDIS_URL" --redis-prefix "$prefix" > "$work/promo.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$APP_PORT/readyz" >/dev/null && break; sleep 0.2; done
curl -sf "http://127.0.0.1:$APP_PORT/readyz" >/dev/null || { cat "$work/promo.log"; log "standalone did not start"; exit 1; }

cat > "$work/prometheus.yml" <<YAML
global: { scrape_interval: 1s, evaluation_interval: 1s }
rule_files: [ "$PWD/charts/promotion-system/rules/alerts.yaml" ]
scrape_configs:
  - job_name: promo
    static_configs: [ { targets: [ "127.0.0.1:$APP_PORT" ] } ]
YAML
log "prometheus on 127.0.0.1:$PROM_PORT"
prometheus --config.file "$work/prometheus.yml" --storage.tsdb.path "$work/tsdb" \
  --web.listen-address "127.0.0.1:$PROM_PORT" > "$work/prometheus.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$PROM_PORT/-/ready" >/dev/null && break; sleep 0.2; done
curl -sf "http://127.0.0.1:$PROM_PORT/-/ready" >/dev/null || { cat "$work/prometheus.log"; log "prometheus did not start"; exit 1; }

log "load for ${LOAD_SECONDS}s"
flush="redis-cli -u '$PROMO_REDIS_URL' --scan --pattern '${prefix}pool:*' | xargs -r redis-cli -u '$PROMO_REDIS_URL' del"
python3 scripts/obs_check.py load "http://127.0.0.1:$APP_PORT" "$LOAD_SECONDS" "$flush"
# One rebuild for certain: drop the counters, then ask until the V3 route admits again.
eval "$flush" >/dev/null
rebuilt=
for i in $(seq 1 300); do
  code=$(curl -s -o /dev/null -w '%{http_code}' -X POST -H 'content-type: application/json' \
    -d "{\"userId\":\"rebuild-$i\"}" "http://127.0.0.1:$APP_PORT/v3/campaigns/cyber-week-queued/issue")
  if [ "$code" = 202 ]; then rebuilt=yes; break; fi
  [ "$code" = 503 ] || { log "V3 answered $code while its counters were gone"; exit 1; }
  sleep 0.1
done
[ -n "$rebuilt" ] || { log "the counters were never rebuilt"; exit 1; }
log "counters rebuilt after $i tries (a request waits up to 1 s for the rebuild, then answers 503)"
sleep 8 # gauges refresh every 5 s; let Prometheus scrape them

log "dashboard panels"
python3 scripts/obs_check.py panels "http://127.0.0.1:$PROM_PORT" charts/promotion-system/dashboards/*.json
log "rules loaded by Prometheus: $(curl -s "http://127.0.0.1:$PROM_PORT/api/v1/rules" | python3 -c 'import sys,json; print(sum(len(g["rules"]) for g in json.load(sys.stdin)["data"]["groups"]))')"
log "all panels answered"
