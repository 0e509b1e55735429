//! HTTP plumbing shared by every service.

pub mod auth;
#[cfg(feature = "service")]
pub mod events;
pub mod extract;
pub mod health;
#[cfg(feature = "service")]
pub mod idempotency;
#[cfg(feature = "service")]
pub mod openapi;
#[cfg(feature = "service")]
pub mod page;
pub mod problem;
pub mod server;

pub use extract::{ApiJson, ApiPath, ApiQuery};
pub use problem::ApiError;

/// Request bodies larger than this are refused with 413 (docs/api.md).
pub const BODY_LIMIT_BYTES: usize = 64 * 1024;
