//! Discount math. Amounts are integers in minor units; a percent discount
//! rounds down (the customer never gets a fraction of a unit more than
//! promised) and is capped by `maxAmount`.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum DiscountKind {
    Fixed,
    Percent,
}

impl DiscountKind {
    pub fn as_str(self) -> &'static str {
        match self {
            DiscountKind::Fixed => "FIXED",
            DiscountKind::Percent => "PERCENT",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "FIXED" => Some(DiscountKind::Fixed),
            "PERCENT" => Some(DiscountKind::Percent),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Discount {
    pub kind: DiscountKind,
    /// FIXED: the amount off; PERCENT: 1..=100.
    #[schema(minimum = 1, maximum = 1_000_000_000_000_f64)]
    pub value: i64,
    /// Cap of a PERCENT discount.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 1_000_000_000_000_f64)]
    pub max_amount: Option<i64>,
    /// Smallest order the coupon applies to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 0, maximum = 1_000_000_000_000_f64)]
    pub min_order_amount: Option<i64>,
}

/// Largest amount accepted anywhere (keeps `amount * percent` far from overflow).
pub const MAX_AMOUNT: i64 = 1_000_000_000_000;

impl Discount {
    pub fn validate(&self) -> Result<(), String> {
        if self.value <= 0 || self.value > MAX_AMOUNT {
            return Err("discount.value must be positive".into());
        }
        if self.kind == DiscountKind::Percent && self.value > 100 {
            return Err("a PERCENT discount.value must be at most 100".into());
        }
        if matches!(self.max_amount, Some(m) if m <= 0 || m > MAX_AMOUNT) {
            return Err("discount.maxAmount must be positive".into());
        }
        if matches!(self.min_order_amount, Some(m) if !(0..=MAX_AMOUNT).contains(&m)) {
            return Err("discount.minOrderAmount must not be negative".into());
        }
        Ok(())
    }

    /// The amount taken off an order of `order_amount`, never more than the order.
    pub fn amount_off(&self, order_amount: i64) -> i64 {
        let raw = match self.kind {
            DiscountKind::Fixed => self.value,
            DiscountKind::Percent => {
                let pct = order_amount.saturating_mul(self.value) / 100;
                self.max_amount.map_or(pct, |cap| pct.min(cap))
            }
        };
        raw.clamp(0, order_amount)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(kind: DiscountKind, value: i64, max: Option<i64>) -> Discount {
        Discount {
            kind,
            value,
            max_amount: max,
            min_order_amount: None,
        }
    }

    #[test]
    fn fixed_never_exceeds_the_order() {
        assert_eq!(d(DiscountKind::Fixed, 3000, None).amount_off(10_000), 3000);
        assert_eq!(d(DiscountKind::Fixed, 3000, None).amount_off(2000), 2000);
    }

    #[test]
    fn percent_rounds_down_and_is_capped() {
        let p = d(DiscountKind::Percent, 10, Some(30_000));
        assert_eq!(p.amount_off(50_000), 5_000);
        assert_eq!(p.amount_off(12_345), 1_234);
        assert_eq!(p.amount_off(1_000_000), 30_000, "capped");
        assert_eq!(d(DiscountKind::Percent, 100, None).amount_off(777), 777);
    }

    #[test]
    fn validation() {
        assert!(d(DiscountKind::Percent, 101, None).validate().is_err());
        assert!(d(DiscountKind::Fixed, 0, None).validate().is_err());
        assert!(d(DiscountKind::Fixed, -5, None).validate().is_err());
        assert!(d(DiscountKind::Percent, 10, Some(0)).validate().is_err());
        assert!(d(DiscountKind::Fixed, 500, None).validate().is_ok());
    }
}
