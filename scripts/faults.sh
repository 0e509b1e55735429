#!/usr/bin/env bash
# `just faults`: the fault suite. Real processes are killed (kill -9, SIGTERM)
# mid-storm with demand above the quota or stock; afterwards every
# acknowledged request must be decided (none lost), exactly the quota or
# stock persisted, nobody over their limit. Prints one table row per
# experiment, then the whole table (services/standalone/tests/faults/).
#
#   scripts/faults.sh            every experiment, one run each (CI runs this)
#   scripts/faults.sh FILTER     only the experiments whose name contains FILTER
set -uo pipefail
cd "$(dirname "$0")/.."
filter=${1:-}
out=$(mktemp)
trap 'rm -f "$out"' EXIT
# The experiments start the service binaries themselves, and the broker
# experiment its own tansu on durable (SQLite) storage.
cargo build -q --bins || exit 1
PROMO_TEST_DURABLE_TANSU=$(scripts/infra.sh durable-broker) || exit 1
export PROMO_TEST_DURABLE_TANSU
if command -v cargo-nextest >/dev/null; then
  cargo nextest run -p promo-standalone --test faults --run-ignored only --no-capture --no-fail-fast \
    ${filter:+-E "test(/$filter/)"} 2>&1 | tee "$out"
else
  cargo test -p promo-standalone --test faults -- --ignored --nocapture --test-threads 1 \
    ${filter:+"$filter"} 2>&1 | tee "$out"
fi
status=${PIPESTATUS[0]}
echo
echo "fault table:"
grep -m2 -E '^\| fault|^\|---' "$out" || true
grep -E '^\| ' "$out" | grep -vE '^\| fault|^\|---' || true
exit "$status"
