#!/usr/bin/env bash
# `just api-check`: the OpenAPI document against the server that serves it.
# schemathesis (PyPI, installed once into ~/.cache/promo-tools) runs every
# check in every phase — examples, coverage, fuzzing and stateful (following
# the document's links) — against `promo standalone` on loopback with an admin
# token, and fails on any failure. Config: tests/api/schemathesis.toml,
# hooks: tests/api/hooks.py.
#   PROMO_API_CHECK_EXAMPLES   examples per operation (default 200)
set -euo pipefail
cd "$(dirname "$0")/.."
log() { printf '[api-check] %s\n' "$*"; }
CACHE=${PROMO_TOOLS_CACHE:-$HOME/.cache/promo-tools}
VENV="$CACHE/venv-schemathesis-4.32"
EXAMPLES=${PROMO_API_CHECK_EXAMPLES:-200}

if [ ! -x "$VENV/bin/schemathesis" ]; then
  log "installing schemathesis into $VENV"
  rm -rf "$VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check 'schemathesis==4.32.5'
fi

cargo build -q --bin promo
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
work=$(mktemp -d)
token=api-check-$RANDOM$RANDOM
pid=
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT
# Embedded backends only: the flags decide, whatever PROMO_* is exported.
env -u PROMO_MYSQL_URL -u PROMO_REDIS_URL -u PROMO_REDIS_CLUSTER_NODES -u PROMO_KAFKA_BROKERS RUST_LOG=warn \
  target/debug/promo standalone --listen "127.0.0.1:$port" --data-dir "$work/data" \
  --admin-token "$token" > "$work/promo.log" 2>&1 &
pid=$!
for _ in $(seq 1 150); do curl -sf "http://127.0.0.1:$port/readyz" >/dev/null && break; sleep 0.2; done

# One worker: CPython 3.11 before 3.11.8 fails building ASTs in two threads
# at once ("AST constructor recursion depth mismatch", in hypothesis).
log "schemathesis: every check, every phase, $EXAMPLES examples per operation"
cd tests/api
status=0
SCHEMATHESIS_HOOKS=hooks PYTHONPATH=. "$VENV/bin/schemathesis" --config-file schemathesis.toml run \
  "http://127.0.0.1:$port/api-docs/openapi.json" \
  --checks all --max-examples "$EXAMPLES" --workers 1 --continue-on-failure \
  --header "Authorization: Bearer $token" --seed 1 --warnings off || status=$?
cd ../..
if [ "$status" -ne 0 ]; then
  log "failed; the server's log:"; tail -20 "$work/promo.log"
fi
exit "$status"
