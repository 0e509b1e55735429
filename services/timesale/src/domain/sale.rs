//! A sale: its specification (what the admin API and a TimeSale Promotion
//! declare) and its live figures.

use chrono::{DateTime, Utc};
use promo_platform::time::inactive_reason;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

pub use promo_platform::strategy::Strategy;

use super::TimesaleError;

/// The product on sale.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Product {
    pub sku: String,
    pub name: String,
    /// Regular price, minor units.
    #[schema(minimum = 1, maximum = 1_000_000_000_000_f64)]
    pub price: i64,
}

/// The body of `PUT /admin/time-sales/{sale}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SaleSpec {
    pub product: Product,
    /// Price during the sale, minor units (> 0, at most the regular price).
    #[schema(minimum = 1, maximum = 1_000_000_000_000_f64)]
    pub sale_price: i64,
    /// Units on sale in total (> 0).
    #[schema(minimum = 1, maximum = 1000000000)]
    pub stock: i64,
    /// Units one user may buy in total (> 0).
    #[schema(minimum = 1, maximum = 1000000000)]
    pub per_user_limit: i64,
    pub starts_at: DateTime<Utc>,
    pub ends_at: DateTime<Utc>,
    pub strategy: Strategy,
    #[serde(default)]
    pub paused: bool,
    /// Buckets the stock's counters are split over (1–256; default 1): a
    /// hot sale spreads over Redis Cluster slots and queue partitions. A
    /// user always counts in bucket `xxh3_64(userId) mod buckets`.
    #[serde(default = "promo_platform::buckets::one")]
    #[schema(minimum = 1, maximum = 256, default = 1)]
    pub buckets: u32,
    /// Seconds a successful order is HELD for payment before it expires and
    /// its units return to the sale (30–86,400); absent: orders are
    /// CONFIRMED at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 30, maximum = 86400)]
    pub hold_seconds: Option<i64>,
}

/// Upper bounds that keep `price × quantity` far from overflow.
pub const MAX_STOCK: i64 = 1_000_000_000;
pub const MAX_PRICE: i64 = 1_000_000_000_000;
/// Bounds of `holdSeconds`.
pub const HOLD_SECONDS: std::ops::RangeInclusive<i64> = 30..=86_400;

impl SaleSpec {
    pub fn validate(&self) -> Result<(), TimesaleError> {
        let bad = |m: String| Err(TimesaleError::InvalidSale(m));
        if !(1..=MAX_STOCK).contains(&self.stock) {
            return bad(format!("stock must be between 1 and {MAX_STOCK}"));
        }
        if !(1..=MAX_STOCK).contains(&self.per_user_limit) {
            return bad(format!("perUserLimit must be between 1 and {MAX_STOCK}"));
        }
        if !(1..=MAX_PRICE).contains(&self.product.price) {
            return bad(format!("product.price must be between 1 and {MAX_PRICE}"));
        }
        if !(1..=self.product.price).contains(&self.sale_price) {
            return bad("salePrice must be positive and at most product.price".into());
        }
        if self.product.sku.is_empty() || self.product.sku.len() > 128 {
            return bad("product.sku must be 1 to 128 bytes".into());
        }
        if self.product.name.is_empty() || self.product.name.len() > 255 {
            return bad("product.name must be 1 to 255 bytes".into());
        }
        if self.ends_at <= self.starts_at {
            return bad("endsAt must be after startsAt".into());
        }
        if let Some(h) = self.hold_seconds {
            if !HOLD_SECONDS.contains(&h) {
                return bad(format!(
                    "holdSeconds must be between {} and {}",
                    HOLD_SECONDS.start(),
                    HOLD_SECONDS.end()
                ));
            }
        }
        promo_platform::buckets::check_count(self.buckets).map_err(TimesaleError::InvalidSale)
    }

    /// How long a successful order is held, when the sale holds.
    pub fn hold(&self) -> Option<chrono::Duration> {
        self.hold_seconds.map(chrono::Duration::seconds)
    }

    /// Whether orders go through the stock counters (V2, V3).
    pub fn counted(&self) -> bool {
        self.strategy != Strategy::Database
    }
}

/// A stored sale with its live figures.
#[derive(Debug, Clone, PartialEq)]
pub struct Sale {
    pub id: String,
    pub spec: SaleSpec,
    /// Units sold (confirmed or held; not cancelled, expired), persisted.
    pub sold: i64,
    /// The part of `sold` held for payment (HELD orders).
    pub held: i64,
    /// Units given back in the database (cancel, expiry) that the counters
    /// have not got yet: a counter rebuild counts them as still taken.
    pub restocking: i64,
}

impl Sale {
    /// Whether ordering is open at `now`: not paused, inside the window.
    pub fn check_active(&self, now: DateTime<Utc>) -> Result<(), TimesaleError> {
        let s = &self.spec;
        match inactive_reason("sale", &self.id, s.starts_at, s.ends_at, s.paused, now) {
            Some(reason) => Err(TimesaleError::NotActive(reason)),
            None => Ok(()),
        }
    }

    /// Refuses a quantity that can never be ordered: not positive, or above
    /// the per-user limit on its own.
    pub fn check_quantity(&self, quantity: i64) -> Result<(), TimesaleError> {
        if quantity < 1 {
            return Err(TimesaleError::InvalidQuantity(
                "quantity must be at least 1".into(),
            ));
        }
        if quantity > self.spec.per_user_limit {
            return Err(TimesaleError::LimitExceeded(self.spec.per_user_limit));
        }
        Ok(())
    }

    /// How many of `units` just sold are held for payment: all of them
    /// when the sale holds, none otherwise.
    pub fn held_part(&self, units: i64) -> i64 {
        if self.spec.hold_seconds.is_some() {
            units
        } else {
            0
        }
    }

    /// What `quantity` units cost.
    pub fn amount(&self, quantity: i64) -> i64 {
        self.spec.sale_price.saturating_mul(quantity)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn spec() -> SaleSpec {
        SaleSpec {
            product: Product {
                sku: "S1".into(),
                name: "Shoe".into(),
                price: 10_000,
            },
            sale_price: 7_000,
            stock: 10,
            per_user_limit: 3,
            starts_at: "2026-01-01T00:00:00Z".parse().unwrap(),
            ends_at: "2026-01-02T00:00:00Z".parse().unwrap(),
            strategy: Strategy::Database,
            paused: false,
            buckets: 1,
            hold_seconds: None,
        }
    }

    #[test]
    fn validation() {
        assert!(spec().validate().is_ok());
        for h in [30, 86_400] {
            let held = SaleSpec {
                hold_seconds: Some(h),
                ..spec()
            };
            assert!(held.validate().is_ok(), "{h}");
        }
        for broken in [
            SaleSpec { stock: 0, ..spec() },
            SaleSpec {
                per_user_limit: 0,
                ..spec()
            },
            SaleSpec {
                sale_price: 0,
                ..spec()
            },
            SaleSpec {
                sale_price: 10_001,
                ..spec()
            },
            SaleSpec {
                ends_at: spec().starts_at,
                ..spec()
            },
            SaleSpec {
                hold_seconds: Some(29),
                ..spec()
            },
            SaleSpec {
                hold_seconds: Some(86_401),
                ..spec()
            },
        ] {
            assert!(broken.validate().is_err(), "{broken:?}");
        }
    }

    #[test]
    fn quantity_and_window() {
        let s = Sale {
            id: "s".into(),
            spec: spec(),
            sold: 0,
            held: 0,
            restocking: 0,
        };
        assert!(s.check_quantity(1).is_ok());
        assert!(s.check_quantity(3).is_ok());
        assert!(matches!(
            s.check_quantity(0),
            Err(TimesaleError::InvalidQuantity(_))
        ));
        assert!(matches!(
            s.check_quantity(-2),
            Err(TimesaleError::InvalidQuantity(_))
        ));
        assert!(matches!(
            s.check_quantity(4),
            Err(TimesaleError::LimitExceeded(3))
        ));
        assert_eq!(s.amount(3), 21_000);
        let at = |t: &str| t.parse::<DateTime<Utc>>().unwrap();
        assert!(s.check_active(at("2025-12-31T23:00:00Z")).is_err());
        assert!(s.check_active(at("2026-01-01T12:00:00Z")).is_ok());
        assert!(s.check_active(at("2026-01-02T00:00:00Z")).is_err());
    }
}
