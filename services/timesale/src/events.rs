//! Messages on the V3 topic. Keyed by sale, so one sale's events stay in
//! order on one partition — which is what makes a fence mean "everything
//! admitted before me is persisted".

pub use promo_platform::consumer::Event;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum OrderEvent {
    /// An order admitted by the counters; the consumer decides and persists.
    #[serde(rename_all = "camelCase")]
    Order {
        order_id: String,
        sale: String,
        user_id: String,
        quantity: i64,
        /// Epoch milliseconds of admission (the order's time).
        admitted_at: i64,
        /// The user's bucket when the sale has several (absent with one).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        bucket: Option<u32>,
    },
    /// Marks a point in the sale's stream for a counter rebuild.
    #[serde(rename_all = "camelCase")]
    Fence { fence_id: String, sale: String },
}

/// What the consumer needs of an order beyond its id and sale.
pub struct OrderBody {
    pub user_id: String,
    pub quantity: i64,
    /// Epoch milliseconds of admission.
    pub admitted_at: i64,
}

impl Event for OrderEvent {
    fn request_id(self) -> Option<String> {
        match self {
            OrderEvent::Order { order_id, .. } => Some(order_id),
            OrderEvent::Fence { .. } => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let e = OrderEvent::Order {
            order_id: "o".into(),
            sale: "s".into(),
            user_id: "u".into(),
            quantity: 2,
            admitted_at: 5,
            bucket: Some(3),
        };
        let bytes = e.encode();
        assert!(String::from_utf8_lossy(&bytes).contains(r#""type":"order""#));
        assert_eq!(OrderEvent::decode(&bytes).unwrap(), e);
    }
}
