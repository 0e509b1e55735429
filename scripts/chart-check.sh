#!/usr/bin/env bash
# `just chart-check`: the chart and the CRD, checked with no API server.
#  1. helm lint (strict), default values and every optional feature on;
#  2. helm template both ways; every rendered object, and the workloads the
#     operator would apply, against the Kubernetes 1.35 OpenAPI schemas
#     (strict: unknown fields fail);
#  3. the CRD itself; every example Promotion against the CRD's schema and
#     CEL rules, and every manifest in tests/promotions/invalid rejected;
#  4. dashboards query only metrics the components export.
set -euo pipefail
cd "$(dirname "$0")/.."
eval "$(scripts/k8s-tools.sh | sed 's/^/export /')"

CHART=charts/promotion-system
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
ALL_ON=(--set dashboards.enabled=true --set monitoring.serviceMonitor.enabled=true
        --set monitoring.podMonitor.enabled=true --set monitoring.prometheusRule.enabled=true
        --set operator.replicas=2
        --set 'backends.redisClusterNodes={redis-0:6379,redis-1:6379,redis-2:6379}'
        --set 'backends.namespaces={shop,flash}')
step() { printf '\n== %s\n' "$*"; }

step "helm lint"
"$PROMO_HELM" lint --strict "$CHART"
"$PROMO_HELM" lint --strict "$CHART" "${ALL_ON[@]}"

step "helm template (default values, every optional feature on)"
"$PROMO_HELM" template promo "$CHART" -n promo-system > "$out/default.yaml"
"$PROMO_HELM" template promo "$CHART" -n promo-system "${ALL_ON[@]}" > "$out/all-on.yaml"
grep -q 'PROMO_REDIS_CLUSTER_NODES: "redis-0:6379,redis-1:6379,redis-2:6379"' "$out/all-on.yaml" \
  || { echo "FAIL backends.redisClusterNodes did not reach the backends Secret"; exit 1; }
for bad in "operator.replicas=0" "platform.partitions=0" "backends.redisUrl=http://x" \
           "backends.redisClusterNodes={redis://x}"; do
  if "$PROMO_HELM" template promo "$CHART" --set "$bad" >/dev/null 2>&1; then
    echo "FAIL values.schema.json accepted $bad"; exit 1
  fi
  echo "ok   values.schema.json rejects $bad"
done

step "workloads the operator applies (promotion-operator render)"
"$PROMO_HELM" template promo "$CHART" -n promo-system --show-only templates/configmap-platform.yaml \
  | "$PROMO_K8S_PYTHON" -c 'import sys, yaml; print(yaml.safe_load(sys.stdin)["data"]["platform.yaml"])' \
  > "$out/platform.yaml"
cargo run -q --bin promotion-operator -- render --platform-config "$out/platform.yaml" --namespace shop \
  > "$out/workloads.yaml"

step "objects against the Kubernetes OpenAPI schemas"
"$PROMO_K8S_PYTHON" scripts/chart_check.py objects "$out/default.yaml" "$out/all-on.yaml" "$out/workloads.yaml"

step "CRD and Promotions"
cmp -s crds/promotion.yaml "$CHART/crds/promotion.yaml" \
  || { echo "FAIL $CHART/crds/promotion.yaml differs from crds/promotion.yaml: run just crds"; exit 1; }
"$PROMO_K8S_PYTHON" scripts/chart_check.py crd crds/promotion.yaml
"$PROMO_K8S_PYTHON" scripts/chart_check.py promotions crds/promotion.yaml \
  tests/promotions/invalid examples/promotions tests/promotions/valid

step "dashboards"
"$PROMO_K8S_PYTHON" scripts/chart_check.py dashboards "$CHART/dashboards" \
  services/platform/src/metrics.rs operator/src/metrics.rs

printf '\nchart-check: all passed\n'
