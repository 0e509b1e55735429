//! Issuance, one file per strategy. Outcomes are identical across them:
//! sold out, user at limit, not active, unknown campaign.

pub(crate) mod batch;
pub mod database;
pub mod queued;
pub mod redis_lock;

use std::sync::Arc;

use promo_platform::shield::to_completion;

use crate::{domain::CouponError, CouponService};

use super::{Coupon, Strategy};

/// What issuance answers: a coupon (V1, V2) or an accepted request (V3).
#[derive(Debug)]
pub enum Issued {
    Coupon(Coupon),
    Pending { request_id: String },
}

/// Issues with `strategy`, or with the campaign's own when `None`. Runs to
/// completion even if the client goes away (see `promo_platform::shield`):
/// an admitted unit is always either published or given back, a lock always
/// released.
pub async fn issue(
    svc: &Arc<CouponService>,
    strategy: Option<Strategy>,
    campaign: &str,
    user_id: &str,
) -> Result<Issued, CouponError> {
    let (svc, campaign, user_id) = (svc.clone(), campaign.to_string(), user_id.to_string());
    to_completion(async move { issue_now(&svc, strategy, &campaign, &user_id).await }).await
}

async fn issue_now(
    svc: &Arc<CouponService>,
    strategy: Option<Strategy>,
    campaign: &str,
    user_id: &str,
) -> Result<Issued, CouponError> {
    let strategy = match strategy {
        Some(s) => s,
        None => svc.campaign(campaign).await?.spec.strategy,
    };
    let result = match strategy {
        Strategy::Database => database::issue(svc, campaign, user_id)
            .await
            .map(Issued::Coupon),
        Strategy::RedisLock => redis_lock::issue(svc, campaign, user_id)
            .await
            .map(Issued::Coupon),
        Strategy::Queued => queued::admit(svc, campaign, user_id)
            .await
            .map(|request_id| Issued::Pending { request_id }),
    };
    svc.count(strategy, campaign, &result);
    result
}
