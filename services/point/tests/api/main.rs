//! Point service through HTTP, every scenario on the embedded backends and
//! on MariaDB + Redis (started by `just infra-up`).

mod helpers;

mod bad_input;
mod cache;
mod concurrency;
mod events;
mod expiry;
mod idempotency;
mod pagination;
