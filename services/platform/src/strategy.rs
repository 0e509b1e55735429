//! The three admission strategies shared by coupon issuance and time-sale
//! ordering (docs/architecture.md).

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// How a campaign or sale admits requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Strategy {
    /// V1: the database alone decides, in one transaction.
    Database,
    /// V2: Redis in front of the database transaction (a per-user lock for
    /// coupons, a stock counter for time sales).
    RedisLock,
    /// V3: one atomic Redis step admits, Kafka carries the event, a consumer persists.
    Queued,
}

impl Strategy {
    pub fn as_str(self) -> &'static str {
        match self {
            Strategy::Database => "DATABASE",
            Strategy::RedisLock => "REDIS_LOCK",
            Strategy::Queued => "QUEUED",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "DATABASE" => Some(Strategy::Database),
            "REDIS_LOCK" => Some(Strategy::RedisLock),
            "QUEUED" => Some(Strategy::Queued),
            _ => None,
        }
    }

    /// The `strategy` metric label.
    pub fn label(self) -> &'static str {
        match self {
            Strategy::Database => "v1_database",
            Strategy::RedisLock => "v2_redis_lock",
            Strategy::Queued => "v3_queued",
        }
    }
}
