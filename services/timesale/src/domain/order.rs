//! An order of a time sale.

use chrono::{DateTime, Utc};
use promo_platform::{
    outbox::Change,
    time::{from_ms, to_ms},
};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{Sale, Strategy};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum OrderStatus {
    /// Admitted (V3), not yet decided by the consumer.
    Pending,
    Confirmed,
    /// Refused by the consumer; see `reason`.
    Rejected,
    /// Cancelled after confirmation or while held; its units went back to
    /// the sale.
    Cancelled,
    /// Sold and held for payment until `holdExpiresAt` (sales with
    /// `holdSeconds`); confirmed with a payment reference.
    Held,
    /// A hold that was not confirmed in time; its units went back to the sale.
    Expired,
}

impl OrderStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            OrderStatus::Pending => "PENDING",
            OrderStatus::Confirmed => "CONFIRMED",
            OrderStatus::Rejected => "REJECTED",
            OrderStatus::Cancelled => "CANCELLED",
            OrderStatus::Held => "HELD",
            OrderStatus::Expired => "EXPIRED",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "PENDING" => Some(OrderStatus::Pending),
            "CONFIRMED" => Some(OrderStatus::Confirmed),
            "REJECTED" => Some(OrderStatus::Rejected),
            "CANCELLED" => Some(OrderStatus::Cancelled),
            "HELD" => Some(OrderStatus::Held),
            "EXPIRED" => Some(OrderStatus::Expired),
            _ => None,
        }
    }
}

/// `GET /orders/{orderId}`. A pending (V3) order is known only by its id
/// and status until the consumer has decided it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Order {
    pub order_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sale: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quantity: Option<i64>,
    /// salePrice × quantity, minor units.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub amount: Option<i64>,
    pub status: OrderStatus,
    /// Why it was rejected: sold_out, limit_exceeded, unknown_sale.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub strategy: Option<Strategy>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created_at: Option<DateTime<Utc>>,
    /// When a hold ends (HELD orders, and those that were held).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hold_expires_at: Option<DateTime<Utc>>,
    /// The payment reference a held order was confirmed with.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payment_ref: Option<String>,
}

impl Order {
    /// A decided order (what the database stores): CONFIRMED, or HELD until
    /// the sale's hold has passed from now when the sale holds; REJECTED
    /// with its reason.
    pub fn decided(
        order_id: String,
        sale: &Sale,
        user_id: &str,
        quantity: i64,
        strategy: Strategy,
        outcome: Result<(), &str>,
        at: DateTime<Utc>,
    ) -> Self {
        Order {
            order_id,
            sale: Some(sale.id.clone()),
            user_id: Some(user_id.to_string()),
            quantity: Some(quantity),
            amount: Some(sale.amount(quantity)),
            status: match (outcome, sale.spec.hold_seconds) {
                (Err(_), _) => OrderStatus::Rejected,
                (Ok(()), None) => OrderStatus::Confirmed,
                (Ok(()), Some(_)) => OrderStatus::Held,
            },
            reason: outcome.err().map(str::to_string),
            strategy: Some(strategy),
            created_at: Some(from_ms(to_ms(at))),
            // In stored (millisecond) precision, so the first answer and
            // every later read agree.
            hold_expires_at: match outcome {
                Ok(()) => sale.spec.hold().map(|h| from_ms(to_ms(Utc::now() + h))),
                Err(_) => None,
            },
            payment_ref: None,
        }
    }

    /// The event that records this order reaching its status (none while
    /// PENDING): `dev.promo.order.<status>` about its sale, carrying the
    /// order as `GET /orders/{id}` shows it. An order reaches each status at
    /// most once, so `order.<status>:<orderId>` identifies the change.
    pub fn event(&self) -> Option<Change> {
        let kind = match self.status {
            OrderStatus::Pending => return None,
            OrderStatus::Held => "dev.promo.order.held",
            OrderStatus::Confirmed => "dev.promo.order.confirmed",
            OrderStatus::Rejected => "dev.promo.order.rejected",
            OrderStatus::Cancelled => "dev.promo.order.cancelled",
            OrderStatus::Expired => "dev.promo.order.expired",
        };
        let data = serde_json::to_value(self).unwrap_or_default();
        let sale = self.sale.as_deref().unwrap_or_default();
        Some(Change::new(kind, &self.order_id, sale, data))
    }

    /// Whether this is a hold that has run out at `now` (whether or not
    /// the sweep has expired it yet).
    pub fn hold_due(&self, now: DateTime<Utc>) -> bool {
        self.status == OrderStatus::Held && self.hold_expires_at.is_some_and(|t| t <= now)
    }

    /// The order as of `now`: a hold that has run out reads EXPIRED even
    /// before the sweep has reached it.
    pub fn as_of(mut self, now: DateTime<Utc>) -> Self {
        if self.hold_due(now) {
            self.status = OrderStatus::Expired;
        }
        self
    }

    /// A V3 order whose sale no longer exists when the consumer decides it:
    /// REJECTED `unknown_sale`, like a coupon request for an unknown campaign.
    pub fn for_unknown_sale(
        order_id: String,
        sale: &str,
        user_id: &str,
        quantity: i64,
        at: DateTime<Utc>,
    ) -> Self {
        Order {
            order_id,
            sale: Some(sale.to_string()),
            user_id: Some(user_id.to_string()),
            quantity: Some(quantity),
            amount: Some(0),
            status: OrderStatus::Rejected,
            reason: Some("unknown_sale".into()),
            strategy: Some(Strategy::Queued),
            created_at: Some(at),
            hold_expires_at: None,
            payment_ref: None,
        }
    }

    pub fn pending(order_id: String) -> Self {
        Order {
            order_id,
            sale: None,
            user_id: None,
            quantity: None,
            amount: None,
            status: OrderStatus::Pending,
            reason: None,
            strategy: None,
            created_at: None,
            hold_expires_at: None,
            payment_ref: None,
        }
    }
}
