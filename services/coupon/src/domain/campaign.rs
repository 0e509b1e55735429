//! A campaign: its specification (what the admin API and a Promotion declare)
//! and its live figures.

use chrono::{DateTime, Utc};
use promo_platform::{outbox::Change, time::inactive_reason};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;

use super::{CouponError, Discount};

pub use promo_platform::strategy::Strategy;

/// The body of `PUT /admin/campaigns/{campaign}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CampaignSpec {
    /// Coupons to issue in total (> 0).
    #[schema(minimum = 1, maximum = 1000000000)]
    pub quota: i64,
    /// Coupons one user may hold (> 0).
    #[schema(minimum = 1, maximum = 1000000000)]
    pub per_user_limit: i64,
    pub starts_at: DateTime<Utc>,
    pub ends_at: DateTime<Utc>,
    pub strategy: Strategy,
    pub discount: Discount,
    /// Days a coupon stays redeemable after issuance; default: until the campaign ends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 3650)]
    pub valid_for_days: Option<i64>,
    #[serde(default)]
    pub paused: bool,
    /// Buckets the quota's counters are split over (1–256; default 1): a
    /// hot campaign spreads over Redis Cluster slots and queue partitions.
    /// A user always counts in bucket `xxh3_64(userId) mod buckets`.
    #[serde(default = "promo_platform::buckets::one")]
    #[schema(minimum = 1, maximum = 256, default = 1)]
    pub buckets: u32,
}

/// Upper bounds that keep arithmetic far from overflow.
pub const MAX_QUOTA: i64 = 1_000_000_000;
pub const MAX_VALID_DAYS: i64 = 3650;

impl CampaignSpec {
    pub fn validate(&self) -> Result<(), CouponError> {
        let bad = |m: String| Err(CouponError::InvalidCampaign(m));
        if !(1..=MAX_QUOTA).contains(&self.quota) {
            return bad(format!("quota must be between 1 and {MAX_QUOTA}"));
        }
        if !(1..=MAX_QUOTA).contains(&self.per_user_limit) {
            return bad("perUserLimit must be at least 1".into());
        }
        if self.ends_at <= self.starts_at {
            return bad("endsAt must be after startsAt".into());
        }
        if let Some(d) = self.valid_for_days {
            if !(1..=MAX_VALID_DAYS).contains(&d) {
                return bad(format!(
                    "validForDays must be between 1 and {MAX_VALID_DAYS}"
                ));
            }
        }
        promo_platform::buckets::check_count(self.buckets).map_err(CouponError::InvalidCampaign)?;
        self.discount
            .validate()
            .map_err(CouponError::InvalidCampaign)
    }
}

/// A stored campaign with its live figures.
#[derive(Debug, Clone, PartialEq)]
pub struct Campaign {
    pub id: String,
    pub spec: CampaignSpec,
    /// Coupons persisted in the database.
    pub issued: i64,
}

impl Campaign {
    /// Whether issuance is open at `now`: not paused, inside the window.
    pub fn check_active(&self, now: DateTime<Utc>) -> Result<(), CouponError> {
        let s = &self.spec;
        match inactive_reason("campaign", &self.id, s.starts_at, s.ends_at, s.paused, now) {
            Some(reason) => Err(CouponError::NotActive(reason)),
            None => Ok(()),
        }
    }

    /// When a coupon issued at `issued_at` stops being redeemable.
    pub fn coupon_expiry(&self, issued_at: DateTime<Utc>) -> DateTime<Utc> {
        match self.spec.valid_for_days {
            Some(days) => issued_at + chrono::Duration::days(days),
            None => self.spec.ends_at,
        }
    }

    /// `dev.promo.campaign.sold_out`: the issuance that took the last coupon
    /// of the quota, when `issued` reached it. Issued counts only grow, so
    /// the count names the change (a raised quota sells out again at a
    /// higher one).
    pub fn sold_out_event(campaign: &str, issued: i64) -> Change {
        Change::new(
            "dev.promo.campaign.sold_out",
            &format!("{campaign}:{issued}"),
            campaign,
            json!({ "campaign": campaign, "issued": issued }),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::DiscountKind;

    pub(crate) fn spec() -> CampaignSpec {
        CampaignSpec {
            quota: 10,
            per_user_limit: 1,
            starts_at: "2026-01-01T00:00:00Z".parse().unwrap(),
            ends_at: "2026-01-02T00:00:00Z".parse().unwrap(),
            strategy: Strategy::Database,
            discount: Discount {
                kind: DiscountKind::Fixed,
                value: 1000,
                max_amount: None,
                min_order_amount: None,
            },
            valid_for_days: None,
            paused: false,
            buckets: 1,
        }
    }

    #[test]
    fn window_and_pause() {
        let c = Campaign {
            id: "c".into(),
            spec: spec(),
            issued: 0,
        };
        let at = |s: &str| s.parse::<DateTime<Utc>>().unwrap();
        assert!(c.check_active(at("2025-12-31T23:59:59Z")).is_err());
        assert!(c.check_active(at("2026-01-01T00:00:00Z")).is_ok());
        assert!(
            c.check_active(at("2026-01-02T00:00:00Z")).is_err(),
            "end is exclusive"
        );
        let mut paused = c.clone();
        paused.spec.paused = true;
        assert!(matches!(
            paused.check_active(at("2026-01-01T12:00:00Z")),
            Err(CouponError::NotActive(_))
        ));
    }

    #[test]
    fn validation() {
        assert!(spec().validate().is_ok());
        let mut s = spec();
        s.quota = 0;
        assert!(s.validate().is_err());
        let mut s = spec();
        s.ends_at = s.starts_at;
        assert!(s.validate().is_err());
        let mut s = spec();
        s.per_user_limit = -1;
        assert!(s.validate().is_err());
        let mut s = spec();
        s.valid_for_days = Some(0);
        assert!(s.validate().is_err());
    }

    #[test]
    fn expiry() {
        let mut c = Campaign {
            id: "c".into(),
            spec: spec(),
            issued: 0,
        };
        let t: DateTime<Utc> = "2026-01-01T10:00:00Z".parse().unwrap();
        assert_eq!(c.coupon_expiry(t), c.spec.ends_at);
        c.spec.valid_for_days = Some(30);
        assert_eq!(
            c.coupon_expiry(t),
            "2026-01-31T10:00:00Z".parse::<DateTime<Utc>>().unwrap()
        );
    }
}
