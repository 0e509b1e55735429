#!/usr/bin/env bash
# `just e2e`, after `just kind-up images deploy`: proves the Kubernetes loop.
#  1. every example Promotion reaches the phase its window implies
#     (Active inside the window, Scheduled before it);
#  2. coupons are issued through a port-forward to the coupon Service, with
#     a V1 (Database) and a V3 (Queued) campaign;
#  3. the operator's status counts catch up: issued = what was answered.
# Needs kubectl, curl and a cluster; not runnable on the dev machines.
set -euo pipefail
cd "$(dirname "$0")/.."
NS=${PROMO_E2E_NAMESPACE:-shop}
PORT=${PROMO_E2E_PORT:-18080}
N=${PROMO_E2E_ISSUES:-20}
TIMEOUT=${PROMO_E2E_TIMEOUT:-300}
log() { printf '[e2e] %s\n' "$*"; }
die() { log "FAIL: $*"; exit 1; }

wait_for() { # description command...
  local what=$1; shift
  for _ in $(seq 1 "$TIMEOUT"); do "$@" >/dev/null 2>&1 && { log "ok: $what"; return 0; }; sleep 1; done
  die "$what (waited ${TIMEOUT}s)"
}

phase_is() { [ "$(kubectl -n "$NS" get promotion "$1" -o jsonpath='{.status.phase}')" = "$2" ]; }
field_is() { [ "$(kubectl -n "$NS" get promotion "$1" -o jsonpath="{.status.$2}")" = "$3" ]; }

now=$(date -u +%s)
for name in $(kubectl -n "$NS" get promotions -o jsonpath='{.items[*].metadata.name}'); do
  starts=$(date -u -d "$(kubectl -n "$NS" get promotion "$name" -o jsonpath='{.spec.window.startsAt}')" +%s)
  ends=$(date -u -d "$(kubectl -n "$NS" get promotion "$name" -o jsonpath='{.spec.window.endsAt}')" +%s)
  if [ "$now" -lt "$starts" ]; then want=Scheduled; elif [ "$now" -ge "$ends" ]; then want=Ended; else want=Active; fi
  wait_for "$name is $want" phase_is "$name" "$want"
done
kubectl -n "$NS" get promo   # the printer columns: TYPE PHASE REMAINING AGE

kubectl -n "$NS" port-forward svc/promo-coupon "$PORT:8080" >/dev/null 2>&1 &
PF=$!
trap 'kill "$PF" 2>/dev/null || true' EXIT
wait_for "port-forward to promo-coupon" curl -sf "http://127.0.0.1:$PORT/healthz"

# The service's own count, read before issuing: the status must then pass it
# by N, which stale or earlier runs' figures cannot do.
TOKEN=$(kubectl -n "$NS" get secrets -o jsonpath='{range .items[*]}{.data.PROMO_ADMIN_TOKEN}{"\n"}{end}' \
  | grep -m1 . | base64 -d) || die "no secret with PROMO_ADMIN_TOKEN in namespace $NS"
issued_now() { # campaign
  curl -sf -H "Authorization: Bearer $TOKEN" "http://127.0.0.1:$PORT/admin/campaigns/$1" \
    | grep -o '"issued":[0-9]*' | cut -d: -f2
}
before_v1=$(issued_now welcome-coupon) || die "cannot read welcome-coupon's issued count"
before_v3=$(issued_now cyber-week-queued) || die "cannot read cyber-week-queued's issued count"

issue() { # campaign expected-status user
  code=$(curl -s -o /dev/null -w '%{http_code}' -X POST -H 'content-type: application/json' \
    -d "{\"userId\":\"$3\"}" "http://127.0.0.1:$PORT/campaigns/$1/issue")
  [ "$code" = "$2" ] || die "issuing $1 for $3 answered $code, want $2"
}
run=$(date +%s)
for i in $(seq 1 "$N"); do
  issue welcome-coupon 201 "e2e-$run-$i"
  issue cyber-week-queued 202 "e2e-$run-$i"
done
log "ok: issued $N coupons each from welcome-coupon (V1) and cyber-week-queued (V3)"

# The operator refreshes status every 15 s while a promotion is active.
status_reaches() { # promotion count
  [ "$(kubectl -n "$NS" get promotion "$1" -o jsonpath='{.status.issued}')" -ge "$2" ]
}
wait_for "welcome-coupon status counts this run's coupons (>= $((before_v1 + N)))" \
  status_reaches welcome-coupon $((before_v1 + N))
wait_for "cyber-week-queued persisted everything (pending 0)" field_is cyber-week-queued pending 0
wait_for "cyber-week-queued status counts this run's coupons (>= $((before_v3 + N)))" \
  status_reaches cyber-week-queued $((before_v3 + N))
kubectl -n "$NS" get promo
log "passed (issued before this run: welcome-coupon $before_v1, cyber-week-queued $before_v3)"
