//! Redemption: applying a coupon to an order, idempotent per order id, and
//! cancelling it so the coupon is usable again.

use chrono::Utc;
use promo_platform::outbox::{self, Change};
use serde::Serialize;
use serde_json::{json, Value};
use utoipa::ToSchema;

use crate::{
    domain::{Coupon, CouponError, CouponStatus},
    store, CouponService,
};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Redemption {
    pub coupon_id: String,
    pub order_id: String,
    pub order_amount: i64,
    pub discount_amount: i64,
    pub payable_amount: i64,
}

/// A redemption's event: `data` plus the coupon's campaign and user. A
/// coupon can be redeemed, cancelled and redeemed again, so each change's
/// id carries a new UUIDv7 after the coupon id; it is stored with the row,
/// so a redelivery repeats it.
fn redemption_event(kind: &'static str, coupon: &Coupon, mut data: Value) -> Change {
    if let Value::Object(fields) = &mut data {
        fields.insert("campaign".into(), json!(coupon.campaign));
        fields.insert("userId".into(), json!(coupon.user_id));
    }
    let change = format!("{}:{}", coupon.coupon_id, uuid::Uuid::now_v7());
    Change::new(kind, &change, &coupon.campaign, data)
}

impl CouponService {
    pub async fn redeem(
        &self,
        code: &str,
        user_id: &str,
        order_id: &str,
        order_amount: i64,
    ) -> Result<Redemption, CouponError> {
        let dialect = self.core.db.dialect();
        let mut tx = self.core.db.pool().begin().await?;
        let row = store::lock_coupon_by_code(&mut tx, dialect, code)
            .await?
            .ok_or_else(|| CouponError::UnknownCoupon(code.to_string()))?;
        if row.coupon.user_id != user_id {
            return Err(CouponError::WrongUser);
        }
        if row.coupon.status == CouponStatus::Redeemed {
            // The same order again gets the first answer; another order is refused.
            return match (row.order_id, row.order_amount, row.discount_amount) {
                (Some(o), Some(amount), Some(off)) if o == order_id => Ok(Redemption {
                    coupon_id: row.coupon.coupon_id,
                    order_id: o,
                    order_amount: amount,
                    discount_amount: off,
                    payable_amount: amount - off,
                }),
                _ => Err(CouponError::AlreadyRedeemed),
            };
        }
        if Utc::now() >= row.coupon.expires_at {
            return Err(CouponError::Expired);
        }
        let campaign = store::read_campaign(&mut tx, dialect, &row.coupon.campaign, false)
            .await?
            .ok_or_else(|| CouponError::UnknownCampaign(row.coupon.campaign.clone()))?;
        let discount = &campaign.spec.discount;
        if let Some(minimum) = discount.min_order_amount {
            if order_amount < minimum {
                return Err(CouponError::BelowMinimumOrder {
                    amount: order_amount,
                    minimum,
                });
            }
        }
        let off = discount.amount_off(order_amount);
        store::mark_redeemed(&mut tx, &row.coupon.coupon_id, order_id, order_amount, off).await?;
        let redemption = Redemption {
            coupon_id: row.coupon.coupon_id.clone(),
            order_id: order_id.to_string(),
            order_amount,
            discount_amount: off,
            payable_amount: order_amount - off,
        };
        let event = redemption_event(
            "dev.promo.coupon.redeemed",
            &row.coupon,
            serde_json::to_value(&redemption).unwrap_or_default(),
        );
        outbox::record(&mut tx, &[event]).await?;
        tx.commit().await?;
        Ok(redemption)
    }

    /// Undoes the redemption for `order_id`. Repeating it (the coupon is
    /// already usable again) answers the same; another order's redemption
    /// is refused.
    pub async fn cancel_redemption(
        &self,
        code: &str,
        order_id: &str,
    ) -> Result<Coupon, CouponError> {
        let dialect = self.core.db.dialect();
        let mut tx = self.core.db.pool().begin().await?;
        let row = store::lock_coupon_by_code(&mut tx, dialect, code)
            .await?
            .ok_or_else(|| CouponError::UnknownCoupon(code.to_string()))?;
        let mut coupon = row.coupon;
        match (coupon.status, row.order_id.as_deref()) {
            (CouponStatus::Redeemed, Some(o)) if o == order_id => {
                store::clear_redemption(&mut tx, &coupon.coupon_id).await?;
                let event = redemption_event(
                    "dev.promo.coupon.redemption_cancelled",
                    &coupon,
                    json!({ "couponId": coupon.coupon_id, "orderId": order_id }),
                );
                outbox::record(&mut tx, &[event]).await?;
                tx.commit().await?;
                coupon.status = CouponStatus::Issued;
            }
            (CouponStatus::Redeemed, _) => {
                return Err(CouponError::OrderMismatch(order_id.to_string()))
            }
            _ => {}
        }
        Ok(coupon.status_at(Utc::now()))
    }
}
