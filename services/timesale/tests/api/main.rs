//! Time-sale service through HTTP, every scenario on the embedded backends
//! and on MariaDB + Redis + tansu (started by `just infra-up`).

mod helpers;

mod audit;
mod bad_input;
mod cancel;
mod consumer;
mod counters;
mod events;
mod holds;
mod idempotency;
mod ordering;
mod rules;
