//! V1 `Database`: one transaction holding the campaign row lock decides and
//! writes. Simple and exactly right; its throughput is bounded by how fast
//! one row lock can be taken and released.

use chrono::Utc;
use promo_platform::ports::{sql::is_unique_violation, with_conflict_retry};

use crate::{
    domain::{Coupon, CouponError},
    store::{self, NewCoupon},
    CouponService,
};

pub async fn issue(
    svc: &CouponService,
    campaign: &str,
    user_id: &str,
) -> Result<Coupon, CouponError> {
    with_deadlock_retry(|| issue_in_transaction(svc, campaign, user_id, true)).await
}

/// The transaction shared by V1 and V2. With `row_lock` the campaign row is
/// locked from the first read (V1); without, the only lock is the final
/// conditional `issued + 1 <= quota` update (V2, whose Redis lock already
/// serialises each user). Either way the database decides: the conditional
/// update cannot pass the quota and UNIQUE (campaign, user, seq) cannot pass
/// the per-user limit.
pub(crate) async fn issue_in_transaction(
    svc: &CouponService,
    campaign: &str,
    user_id: &str,
    row_lock: bool,
) -> Result<Coupon, CouponError> {
    let dialect = svc.db.dialect();
    let mut tx = svc.db.pool().begin().await?;
    let c = store::read_campaign(&mut tx, dialect, campaign, row_lock)
        .await?
        .ok_or_else(|| CouponError::UnknownCampaign(campaign.to_string()))?;
    let now = Utc::now();
    c.check_active(now)?;
    let held = store::count_user_coupons(&mut tx, campaign, user_id).await?;
    if held >= c.spec.per_user_limit {
        return Err(CouponError::AlreadyIssued(held));
    }
    if c.issued >= c.spec.quota {
        return Err(CouponError::SoldOut);
    }
    let coupon = Coupon::issue(&c, user_id, now);
    let row = NewCoupon {
        coupon: &coupon,
        seq: held + 1,
        request_id: None,
    };
    if let Err(e) = store::insert_coupons(&mut tx, std::slice::from_ref(&row)).await {
        if is_unique_violation(&e) {
            // The same user's concurrent request took this seq first.
            return Err(CouponError::AlreadyIssued(held + 1));
        }
        return Err(e.into());
    }
    if !store::add_issued(&mut tx, campaign, 1).await? {
        return Err(CouponError::SoldOut);
    }
    tx.commit().await?;
    Ok(coupon)
}

/// Retries a transaction that lost a lock conflict (deadlock victim, lock
/// wait timeout, SQLite busy); each rolled back completely.
pub(crate) async fn with_deadlock_retry<T, F, Fut>(f: F) -> Result<T, CouponError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, CouponError>>,
{
    with_conflict_retry(4, f).await
}
