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

# Formatting check and clippy with warnings as errors.
lint:
    cargo fmt --all -- --check
    cargo clippy --workspace --all-targets -- -D warnings

# Lint, bring up the real backends, run every test (embedded and real).
test: lint infra-up
    if command -v cargo-nextest >/dev/null; then \
        cargo nextest run --workspace --no-fail-fast; \
    else \
        cargo test --workspace --no-fail-fast; \
    fi
