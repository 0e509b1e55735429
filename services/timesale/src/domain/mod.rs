//! Time-sale rules: sales, windows, orders and the ordering strategies.
//! Nothing here knows about HTTP, but the strategies do their own I/O through
//! the ports (database, counters, queue) — see docs/architecture.md, "A
//! request's path". Errors are [`TimesaleError`], which the
//! HTTP layer maps to problem+json.

pub mod cancel;
pub mod holds;
pub mod order;
pub mod ordering;
pub mod sale;

use promo_platform::ports::{counters::CountersError, LockConflict, QueueError, SqlError};

pub use order::{Order, OrderStatus};
pub use sale::{Product, Sale, SaleSpec, Strategy};

/// Everything an operation on time sales can answer besides success.
#[derive(Debug, thiserror::Error)]
pub enum TimesaleError {
    #[error("sale {0:?} does not exist")]
    UnknownSale(String),
    #[error("order {0:?} does not exist")]
    UnknownOrder(String),
    #[error("not enough stock left for {0} unit(s)")]
    SoldOut(i64),
    #[error("the order would take the user past the per-user limit of {0} unit(s)")]
    LimitExceeded(i64),
    #[error("{0}")]
    NotActive(String),
    #[error("{0}")]
    InvalidQuantity(String),
    #[error("{0}")]
    InvalidSale(String),
    #[error("stock {stock} is below the {sold} units already sold")]
    StockBelowSold { stock: i64, sold: i64 },
    #[error("{0}")]
    NotCancellable(String),
    #[error("{0}")]
    NotHeld(String),
    #[error("{0}")]
    AlreadyConfirmed(String),
    #[error("{0}")]
    HoldExpired(String),
    #[error("{0}")]
    InvalidPaymentRef(String),
    #[error("the admission counters are being rebuilt from the database")]
    CountersRebuilding,
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

impl From<sqlx::Error> for TimesaleError {
    fn from(e: sqlx::Error) -> Self {
        TimesaleError::Sql(SqlError::Query(e))
    }
}

impl LockConflict for TimesaleError {
    fn is_lock_conflict(&self) -> bool {
        matches!(self, TimesaleError::Sql(e) if e.is_lock_conflict())
    }
}

impl promo_platform::queued::QueuedError for TimesaleError {
    fn unknown(id: &str) -> Self {
        TimesaleError::UnknownSale(id.to_string())
    }

    fn rebuilding() -> Self {
        TimesaleError::CountersRebuilding
    }

    fn unsettled() -> Self {
        TimesaleError::Unsettled
    }

    fn stopped(why: &str) -> Self {
        TimesaleError::Stopped(why.to_string())
    }

    fn persist_reason(&self) -> &'static str {
        match self {
            TimesaleError::Sql(e) => e.persist_reason(),
            TimesaleError::Counters(_) => "counters",
            TimesaleError::Queue(_) => "queue",
            _ => "other",
        }
    }

    fn outcome(&self) -> &'static str {
        match self {
            TimesaleError::SoldOut(_) => "sold_out",
            TimesaleError::LimitExceeded(_) => "limit_exceeded",
            TimesaleError::NotActive(_) => "not_active",
            TimesaleError::UnknownSale(_) | TimesaleError::InvalidQuantity(_) => "rejected",
            TimesaleError::CountersRebuilding | TimesaleError::Stopped(_) => "unavailable",
            _ => "error",
        }
    }
}
