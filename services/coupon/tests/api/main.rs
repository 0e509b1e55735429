//! Coupon service through HTTP, every scenario on the embedded backends and
//! on MariaDB + Redis + tansu (started by `just infra-up`).

mod helpers;

mod audit;
mod bad_input;
mod buckets;
mod consumer;
mod counters;
mod events;
mod idempotency;
mod issuance;
mod metrics;
mod redemption;
mod rules;
