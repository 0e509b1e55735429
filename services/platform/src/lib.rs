//! What every promotion service runs on.
//!
//! - [`config`]: the backend selection shared by every binary (clap + env);
//! - [`telemetry`]: tracing set-up;
//! - [`metrics`]: the Prometheus registry and the metric families shared by services;
//! - [`http`]: problem+json errors, JSON extraction with body limits, health,
//!   `/metrics`, admin authentication and the server loop;
//! - [`ports`]: the three backend ports (docs/architecture.md) (SQL store, counters + locks,
//!   queue), each with its production and its embedded implementation;
//! - [`consumer`]: the batch consumer loop shared by the queued strategies;
//! - [`group_commit`]: many requests decided in one transaction (V2);
//! - [`outbox`]: state changes recorded with them and relayed as CloudEvents;
//! - [`queued`]: the one core of the coupon and time-sale services
//!   (settings and flags, backends, gauges, rebuild, the consumer's batch);
//! - [`strategy`], [`admission`], [`cache`]: the pieces that core and the
//!   services' strategies use (strategies, pools, V3 step, fenced rebuild).

#[cfg(feature = "service")]
pub mod admission;
pub mod buckets;
pub mod cache;
#[cfg(feature = "service")]
pub mod coalesce;
#[cfg(feature = "service")]
pub mod config;
#[cfg(feature = "service")]
pub mod consumer;
pub mod group_commit;
pub mod http;
pub mod ids;
pub mod metrics;
#[cfg(feature = "service")]
pub mod outbox;
pub mod ports;
#[cfg(feature = "service")]
pub mod queued;
#[cfg(feature = "service")]
pub mod service;
pub mod shield;
#[cfg(feature = "service")]
pub mod strategy;
pub mod telemetry;
#[cfg(feature = "testing")]
pub mod testing;
pub mod time;
