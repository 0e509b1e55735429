#!/usr/bin/env bash
# `just events-check`: the events topic read by a consumer that knows only
# the CloudEvents Kafka protocol binding (Python: `cloudevents` +
# `confluent-kafka` from PyPI, installed once into ~/.cache/promo-tools).
# `promo standalone` runs on MariaDB + Redis + tansu with databases, Redis
# keys and an events topic of its own; tests/events/consume.py makes one
# change of every kind, then reads the topic from its start and validates
# every message against docs/events.md and the GET /admin/events feed.
# Needs `scripts/infra.sh up`.
set -euo pipefail
cd "$(dirname "$0")/.."
log() { printf '[events-check] %s\n' "$*"; }
CACHE=${PROMO_TOOLS_CACHE:-$HOME/.cache/promo-tools}
VENV="$CACHE/venv-events-1"

if ! "$VENV/bin/python" -c 'import cloudevents.kafka, confluent_kafka' 2>/dev/null; then
  log "installing cloudevents and confluent-kafka into $VENV"
  rm -rf "$VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check 'cloudevents==1.12.1' 'confluent-kafka==2.16.1'
fi

eval "$(scripts/infra.sh env | sed 's/^/export /')"
cargo build -q --bin promo
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
work=$(mktemp -d)
run="evchk$$"
topic="promo.events.$run"
token="events-check-$RANDOM$RANDOM"
pid=
cleanup() {
  [ -n "$pid" ] && { kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null || true; }
  redis-cli -u "$PROMO_REDIS_URL" --scan --pattern "$run:*" | xargs -r redis-cli -u "$PROMO_REDIS_URL" del >/dev/null || true
  for db in coupon timesale point; do
    mysql -h 127.0.0.1 -u root -e "DROP DATABASE IF EXISTS \`${run}_promo_$db\`" 2>/dev/null || true
  done
  rm -rf "$work"
}
trap cleanup EXIT

log "promo standalone on MariaDB + Redis + tansu, events topic $topic"
env -u PROMO_REDIS_CLUSTER_NODES RUST_LOG=warn \
  target/debug/promo standalone --listen "127.0.0.1:$port" --data-dir "$work/data" \
  --database-prefix "${run}_" --redis-prefix "$run:" --events-topic "$topic" \
  --admin-token "$token" > "$work/promo.log" 2>&1 &
pid=$!
for _ in $(seq 1 150); do curl -sf "http://127.0.0.1:$port/readyz" >/dev/null && break; sleep 0.2; done
curl -sf "http://127.0.0.1:$port/readyz" >/dev/null || { tail -20 "$work/promo.log"; log "standalone did not start"; exit 1; }

status=0
"$VENV/bin/python" tests/events/consume.py drive "http://127.0.0.1:$port" "$token" &&
  "$VENV/bin/python" tests/events/consume.py check "http://127.0.0.1:$port" "$token" "$PROMO_KAFKA_BROKERS" "$topic" || status=$?
if [ "$status" -ne 0 ]; then
  log "failed; the server's log:"; tail -20 "$work/promo.log"
fi
exit "$status"
