//! What every promotion service runs on.
//!
//! - [`config`]: the backend selection shared by every binary (clap + env);
//! - [`telemetry`]: tracing set-up;
//! - [`metrics`]: the Prometheus registry and the metric families shared by services;
//! - [`http`]: problem+json errors, JSON extraction with body limits, health,
//!   `/metrics`, admin authentication and the server loop;
//! - [`ports`]: the three backend ports of DESIGN.md (SQL store, counters + locks,
//!   queue), each with its production and its embedded implementation;
//! - [`consumer`]: the batch consumer loop shared by the queued strategies;
//! - [`group_commit`]: many requests decided in one transaction (V2);
//! - [`strategy`], [`admission`], [`cache`]: what the coupon and time-sale
//!   services share around admission (strategies, pools, V3 step, rebuild).

pub mod admission;
pub mod cache;
pub mod config;
pub mod consumer;
pub mod group_commit;
pub mod http;
pub mod ids;
pub mod metrics;
pub mod ports;
pub mod service;
pub mod shield;
pub mod strategy;
pub mod telemetry;
#[cfg(feature = "testing")]
pub mod testing;
pub mod time;

/// Every binary built on the platform allocates with mimalloc: in a V3
/// admission's profile glibc's malloc/free were the largest items (≈ 10 %);
/// see bench/bounds.md for the before and after.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
