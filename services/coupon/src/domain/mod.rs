//! Coupon rules: campaigns, windows, discounts, and the issuance strategies.
//! Nothing here knows about HTTP, but the strategies do their own I/O through
//! the ports (database, counters, queue) — see docs/architecture.md, "A
//! request's path". Errors are [`CouponError`], which the HTTP
//! layer maps to problem+json.

pub mod campaign;
pub mod coupon;
pub mod discount;
pub mod issue;
pub mod redeem;

use promo_platform::ports::{counters::CountersError, QueueError, SqlError};

pub use campaign::{Campaign, CampaignSpec, Strategy};
pub use coupon::{Coupon, CouponStatus};
pub use discount::{Discount, DiscountKind};

/// Everything an operation on coupons can answer besides success.
#[derive(Debug, thiserror::Error)]
pub enum CouponError {
    #[error("campaign {0:?} does not exist")]
    UnknownCampaign(String),
    #[error("coupon {0:?} does not exist")]
    UnknownCoupon(String),
    #[error("issue request {0:?} does not exist")]
    UnknownRequest(String),
    #[error("the campaign's quota is exhausted")]
    SoldOut,
    #[error("the user already holds {0} coupon(s) of this campaign, its per-user limit")]
    AlreadyIssued(i64),
    #[error("{0}")]
    NotActive(String),
    #[error("{0}")]
    InvalidCampaign(String),
    #[error("quota {quota} is below the {issued} coupons already issued")]
    QuotaBelowIssued { quota: i64, issued: i64 },
    #[error("the coupon belongs to another user")]
    WrongUser,
    #[error("the coupon is already redeemed for another order")]
    AlreadyRedeemed,
    #[error("the coupon is redeemed for another order than {0:?}")]
    OrderMismatch(String),
    #[error("the coupon expired")]
    Expired,
    #[error("the order amount {amount} is below the minimum of {minimum}")]
    BelowMinimumOrder { amount: i64, minimum: i64 },
    #[error("the admission counters are being rebuilt from the database")]
    CountersRebuilding,
    #[error("another request of this user holds the lock; retry")]
    LockTimeout,
    #[error("{0}")]
    Stopped(String),
    #[error("the first request with this Idempotency-Key is still being decided")]
    Unsettled,
    #[error(transparent)]
    Sql(#[from] SqlError),
    #[error(transparent)]
    Counters(#[from] CountersError),
    #[error(transparent)]
    Queue(#[from] QueueError),
}

impl From<sqlx::Error> for CouponError {
    fn from(e: sqlx::Error) -> Self {
        CouponError::Sql(SqlError::Query(e))
    }
}

impl promo_platform::ports::LockConflict for CouponError {
    fn is_lock_conflict(&self) -> bool {
        matches!(self, CouponError::Sql(e) if e.is_lock_conflict())
    }
}

impl promo_platform::queued::QueuedError for CouponError {
    fn unknown(id: &str) -> Self {
        CouponError::UnknownCampaign(id.to_string())
    }

    fn rebuilding() -> Self {
        CouponError::CountersRebuilding
    }

    fn unsettled() -> Self {
        CouponError::Unsettled
    }

    fn stopped(why: &str) -> Self {
        CouponError::Stopped(why.to_string())
    }

    fn persist_reason(&self) -> &'static str {
        match self {
            CouponError::Sql(e) => e.persist_reason(),
            CouponError::Counters(_) => "counters",
            CouponError::Queue(_) => "queue",
            _ => "other",
        }
    }

    fn outcome(&self) -> &'static str {
        match self {
            CouponError::SoldOut => "sold_out",
            CouponError::AlreadyIssued(_) => "duplicate",
            CouponError::NotActive(_) => "not_active",
            CouponError::UnknownCampaign(_) => "rejected",
            CouponError::CountersRebuilding
            | CouponError::LockTimeout
            | CouponError::Stopped(_) => "unavailable",
            _ => "error",
        }
    }
}
