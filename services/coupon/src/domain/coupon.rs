//! An issued coupon, as stored and as answered.

use chrono::{DateTime, Utc};
use promo_platform::outbox::Change;
use rand::Rng;
use serde::Serialize;
use utoipa::ToSchema;

use super::Campaign;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum CouponStatus {
    Issued,
    Redeemed,
    /// Not stored: an ISSUED coupon past its expiry reads as EXPIRED.
    Expired,
}

#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Coupon {
    pub coupon_id: String,
    pub code: String,
    pub campaign: String,
    pub user_id: String,
    pub status: CouponStatus,
    pub issued_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

impl Coupon {
    /// A new coupon for `user_id`, the user's `seq`-th of `campaign`.
    pub fn issue(campaign: &Campaign, user_id: &str, now: DateTime<Utc>) -> Self {
        Self {
            coupon_id: uuid::Uuid::now_v7().to_string(),
            code: new_code(),
            campaign: campaign.id.clone(),
            user_id: user_id.to_string(),
            status: CouponStatus::Issued,
            issued_at: now,
            expires_at: campaign.coupon_expiry(now),
        }
    }

    /// `dev.promo.coupon.issued`, with the coupon as answered.
    pub fn issued_event(&self) -> Change {
        let data = serde_json::to_value(self).unwrap_or_default();
        Change::new(
            "dev.promo.coupon.issued",
            &self.coupon_id,
            &self.campaign,
            data,
        )
    }

    /// The status a reader sees at `now` (ISSUED turns EXPIRED after expiry).
    pub fn status_at(mut self, now: DateTime<Utc>) -> Self {
        if self.status == CouponStatus::Issued && now >= self.expires_at {
            self.status = CouponStatus::Expired;
        }
        self
    }
}

/// 16 characters of Crockford base32 (80 bits): unguessable, and readable
/// aloud without 0/O or 1/I confusion.
pub fn new_code() -> String {
    const ALPHABET: &[u8] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
    let mut rng = rand::rng();
    (0..16)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn codes_are_distinct_and_well_formed() {
        let a = super::new_code();
        let b = super::new_code();
        assert_eq!(a.len(), 16);
        assert_ne!(a, b);
        assert!(a
            .chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit()));
    }
}
