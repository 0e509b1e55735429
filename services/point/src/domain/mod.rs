//! Point rules: the ledger's entries, the operations and their errors.
//! Nothing here knows about HTTP; the ledger does its own I/O through the
//! ports (database, cache) — see docs/architecture.md.

pub mod ledger;
pub mod view;

use chrono::{DateTime, Utc};
use promo_platform::{
    outbox::Change,
    ports::{LockConflict, SqlError},
};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// What an entry did to the balance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Kind {
    Earn,
    Use,
    Refund,
    Expire,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Earn => "EARN",
            Kind::Use => "USE",
            Kind::Refund => "REFUND",
            Kind::Expire => "EXPIRE",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "EARN" => Some(Kind::Earn),
            "USE" => Some(Kind::Use),
            "REFUND" => Some(Kind::Refund),
            "EXPIRE" => Some(Kind::Expire),
            _ => None,
        }
    }

    /// The `kind` metric label.
    pub fn label(self) -> &'static str {
        match self {
            Kind::Earn => "earn",
            Kind::Use => "use",
            Kind::Refund => "refund",
            Kind::Expire => "expire",
        }
    }
}

/// One ledger entry. `amount` is signed (EARN and REFUND add, USE and
/// EXPIRE take), so the ledger of a user sums to their balance.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Entry {
    #[serde(skip)]
    pub seq: i64,
    pub entry_id: String,
    #[serde(skip)]
    pub user_id: String,
    pub kind: Kind,
    pub amount: i64,
    pub balance_after: i64,
    pub reason: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub order_id: Option<String>,
    /// EARN: when these points expire.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<DateTime<Utc>>,
    /// REFUND: the USE it reverses.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refund_of: Option<String>,
    pub created_at: DateTime<Utc>,
}

impl Entry {
    /// The entry's event, about the user: `dev.promo.points.<earned|used|
    /// refunded|expired>` with the entry as the history lists it, plus
    /// `userId`. Entry ids are unique, so the entry id names the change.
    pub fn event(&self) -> Change {
        let kind = match self.kind {
            Kind::Earn => "dev.promo.points.earned",
            Kind::Use => "dev.promo.points.used",
            Kind::Refund => "dev.promo.points.refunded",
            Kind::Expire => "dev.promo.points.expired",
        };
        let mut data = serde_json::to_value(self).unwrap_or_default();
        if let serde_json::Value::Object(fields) = &mut data {
            fields.insert("userId".into(), self.user_id.clone().into());
        }
        Change::new(kind, &self.entry_id, &self.user_id, data)
    }
}

/// Everything a point operation can answer besides success.
#[derive(Debug, thiserror::Error)]
pub enum PointError {
    #[error("the balance is {balance}, below the {amount} points asked for")]
    InsufficientBalance { balance: i64, amount: i64 },
    #[error("entry {0:?} does not exist for this user")]
    EntryNotFound(String),
    #[error("entry {0:?} is not a USE and cannot be refunded")]
    NotRefundable(String),
    #[error("use {0:?} was already refunded")]
    AlreadyRefunded(String),
    #[error("{0}")]
    Invalid(String),
    #[error("the Idempotency-Key header is required on this operation")]
    IdempotencyKeyRequired,
    #[error("this Idempotency-Key was used with a different request")]
    IdempotencyKeyReused,
    #[error("the account kept changing; retry")]
    Conflict,
    /// The stored answer of an earlier request with the same key.
    #[error("{detail}")]
    Replayed {
        status: u16,
        code: String,
        detail: String,
    },
    /// Lost the optimistic version check (or a lock conflict): run again.
    #[error("stale read")]
    Stale,
    #[error(transparent)]
    Sql(#[from] SqlError),
}

impl From<sqlx::Error> for PointError {
    fn from(e: sqlx::Error) -> Self {
        let e = SqlError::Query(e);
        if e.is_lock_conflict() {
            PointError::Stale
        } else {
            PointError::Sql(e)
        }
    }
}

impl PointError {
    /// The answer to store for an Idempotency-Key: business refusals are
    /// part of the first answer; anything else is not an answer at all.
    pub fn stored(&self) -> Option<(u16, &'static str)> {
        match self {
            PointError::InsufficientBalance { .. } => Some((409, "insufficient_balance")),
            PointError::EntryNotFound(_) => Some((404, "entry_not_found")),
            PointError::NotRefundable(_) => Some((409, "not_refundable")),
            PointError::AlreadyRefunded(_) => Some((409, "already_refunded")),
            _ => None,
        }
    }

    /// The `outcome` label of `promo_ledger_operations_total`.
    pub fn outcome(&self) -> &'static str {
        match self {
            PointError::Replayed { .. } => "replayed",
            PointError::Conflict => "conflict",
            PointError::IdempotencyKeyReused => "key_reused",
            e => e.stored().map(|(_, code)| code).unwrap_or("error"),
        }
    }
}
