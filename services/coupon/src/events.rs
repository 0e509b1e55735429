//! Messages on the V3 topic. Keyed by campaign, so one campaign's events
//! stay in order on one partition — which is what makes a fence mean
//! "everything admitted before me is persisted".

pub use promo_platform::consumer::Event;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum CouponEvent {
    /// A user admitted by the counters; the consumer decides and persists.
    #[serde(rename_all = "camelCase")]
    Issue {
        request_id: String,
        campaign: String,
        user_id: String,
        /// Epoch milliseconds of admission (the coupon's issue time).
        admitted_at: i64,
        /// The user's bucket when the campaign has several (absent with one).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        bucket: Option<u32>,
    },
    /// Marks a point in the campaign's stream for a counter rebuild.
    #[serde(rename_all = "camelCase")]
    Fence { fence_id: String, campaign: String },
}

/// What the consumer needs of an issue request beyond its id and campaign.
pub struct IssueBody {
    pub user_id: String,
    /// Epoch milliseconds of admission.
    pub admitted_at: i64,
}

impl CouponEvent {
    pub fn campaign(&self) -> &str {
        match self {
            CouponEvent::Issue { campaign, .. } | CouponEvent::Fence { campaign, .. } => campaign,
        }
    }
}

impl Event for CouponEvent {
    fn request_id(self) -> Option<String> {
        match self {
            CouponEvent::Issue { request_id, .. } => Some(request_id),
            CouponEvent::Fence { .. } => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let e = CouponEvent::Issue {
            request_id: "r".into(),
            campaign: "c".into(),
            user_id: "u".into(),
            admitted_at: 5,
            bucket: None,
        };
        let bytes = e.encode();
        assert!(String::from_utf8_lossy(&bytes).contains(r#""type":"issue""#));
        assert_eq!(CouponEvent::decode(&bytes).unwrap(), e);
    }
}
