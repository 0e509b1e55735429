# Every routine task of the promotion platform. `just --list` shows them.
set shell := ["bash", "-euo", "pipefail", "-c"]

# List the recipes.
default:
    @just --list

# Run `promo standalone`: every service on 127.0.0.1:8080, embedded backends, examples loaded.
run *ARGS:
    cargo run --bin promo -- standalone {{ARGS}}

# Run `promo standalone` against MariaDB, Redis and tansu (started if needed).
run-real *ARGS: infra-up
    eval "$(scripts/infra.sh env | sed 's/^/export /')" && cargo run --bin promo -- standalone {{ARGS}}

# Check, install if missing, and start MariaDB, Redis and tansu on loopback; prints the URLs.
infra-up:
    scripts/infra.sh up

# Stop what infra-up started (services it found already running are left alone).
infra-down:
    scripts/infra.sh down

# Format the code.
fmt:
    cargo fmt --all

# Formatting check and clippy with warnings as errors; the operator also on
# its own (the platform without its `service` feature), and it links no
# service, no sqlx, no utoipa.
lint:
    cargo fmt --all -- --check
    cargo clippy --workspace --all-targets -- -D warnings
    cargo clippy -p promotion-operator --all-targets -- -D warnings
    if cargo tree -p promotion-operator -e normal,dev | grep -E 'sqlx|utoipa|(coupon|timesale|point)-service'; then \
        echo "the operator depends on a service crate, sqlx or utoipa" >&2; exit 1; \
    fi

# Lint, bring up the real backends, run every test (embedded and real).
test: lint infra-up
    if command -v cargo-nextest >/dev/null; then \
        cargo nextest run --workspace --no-fail-fast; \
    else \
        cargo test --workspace --no-fail-fast; \
    fi
    scripts/faults.sh
    scripts/api-check.sh
    scripts/events-check.sh
    scripts/chart-check.sh
    scripts/obs-check.sh

# Every test that needs no real backend (no MariaDB, Redis or broker; no lint): the quick loop.
# Tests against the real backends are named `…::real`, `mysql_…`, `mariadb_…`, `redis_…`, `…_on_tansu`.
test-fast:
    if command -v cargo-nextest >/dev/null; then \
        cargo nextest run --workspace --no-fail-fast \
            -E 'not (test(/::(real|cluster)$/) | test(/^(mysql|mariadb|redis)_|_on_tansu$/))'; \
    else \
        cargo test --workspace --no-fail-fast -- --skip ::real --skip ::cluster --skip mysql_ --skip mariadb_ \
            --skip redis_cache --skip redis_counters --skip redis_cluster --skip _on_tansu; \
    fi

# The OpenAPI document against the server: schemathesis, every check and phase, zero failures allowed.
api-check:
    scripts/api-check.sh

# The events topic read by a plain CloudEvents consumer (Python cloudevents + confluent-kafka), checked against the feed.
events-check: infra-up
    scripts/events-check.sh

# The fault suite: processes and backends killed mid-storm, then nothing lost, nothing oversold (FILTER: part of a name).
faults *FILTER: infra-up
    scripts/faults.sh {{FILTER}}

# Alert rules through promtool, then every dashboard panel's query against a real Prometheus scraping a loaded standalone.
obs-check: infra-up
    scripts/obs-check.sh

# The benchmark ladder on the embedded default and on MariaDB + Redis + tansu, then bench-outbox and bench-cost; writes BENCHMARKS.md.
bench:
    scripts/bench.sh

# One hot promotion over 1 vs 8 buckets on Redis and the Redis Cluster, and
# the consumer's pace with 1 vs 4 partitions persisted at once (real backends).
bench-buckets:
    scripts/bench-buckets.sh

# The outbox's cost: every write scenario with --events on vs off (embedded and real; V3 consumer rows/s too).
bench-outbox:
    scripts/bench-outbox.sh

# V3 admission coalescing on vs off (one hot bucket; embedded and real; 64 and 256 connections).
bench-coalesce:
    scripts/bench-coalesce.sh

# V3 against V2 on MariaDB + Redis + tansu, the scenarios interleaved round by round (V3 ÷ V2 per round).
bench-v3-v2:
    scripts/bench-v3-v2.sh

# CPU per V3 admission and per row, per process (API and consumer apart), and the 1,000,000/s projection from it.
bench-cost:
    scripts/bench-cost.sh

# Regenerate the Promotion CRD YAML (crds/ and the chart's copy) from the Rust types.
crds:
    cargo run -q --bin promotion-operator -- crd > crds/promotion.yaml
    cp crds/promotion.yaml charts/promotion-system/crds/promotion.yaml

# helm lint + template, every object against the Kubernetes 1.35 schemas, Promotions against the CRD.
chart-check:
    scripts/chart-check.sh

# --- kind loop: needs Docker, kind, kubectl and helm (not runnable on the dev machines) ---

# Create the local cluster and the in-cluster backends (MariaDB, Redis, Kafka).
kind-up:
    kind create cluster --name promo --config kind-config.yaml
    kubectl apply -f deploy/kind/backends.yaml
    kubectl -n promo-infra rollout status deploy/mariadb deploy/redis deploy/kafka --timeout=300s

# Build the images and load them into the kind cluster.
images:
    for bin in promotion-operator coupon-service timesale-service point-service; do \
        docker build --build-arg BIN=$bin -t promo-dev/$bin:dev . ; \
    done
    kind load docker-image --name promo promo-dev/promotion-operator:dev promo-dev/coupon-service:dev promo-dev/timesale-service:dev promo-dev/point-service:dev

# helm install the chart and apply the example Promotions into namespace shop.
deploy:
    kubectl create namespace shop --dry-run=client -o yaml | kubectl apply -f -
    helm upgrade --install promo charts/promotion-system -n promo-system --create-namespace -f deploy/kind/values.yaml --wait
    kubectl -n shop apply -f examples/promotions/

# Prove the loop end to end: Promotions Active, coupons issued through a port-forward, status counts.
e2e:
    scripts/kind-e2e.sh

# Delete the kind cluster.
kind-down:
    kind delete cluster --name promo
