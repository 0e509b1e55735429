//! Issuance, one file per strategy. Outcomes are identical across them:
//! sold out, user at limit, not active, unknown campaign.

pub(crate) mod batch;
pub mod database;
pub mod queued;
pub mod redis_lock;

use std::sync::Arc;

use promo_platform::{http::idempotency::Keyed, shield::to_completion};

use crate::{domain::CouponError, store, CouponService};

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
///
/// A request with an `Idempotency-Key` (`keyed`) gives its coupon or queued
/// request the key's effect id; when it takes over the claim of a run that
/// died unanswered, it first answers from that run's effect if there is one.
pub async fn issue(
    svc: &Arc<CouponService>,
    strategy: Option<Strategy>,
    campaign: &str,
    user_id: &str,
    keyed: Option<Keyed>,
) -> Result<Issued, CouponError> {
    let (svc, campaign, user_id) = (svc.clone(), campaign.to_string(), user_id.to_string());
    to_completion(async move { issue_now(&svc, strategy, &campaign, &user_id, keyed).await }).await
}

async fn issue_now(
    svc: &Arc<CouponService>,
    strategy: Option<Strategy>,
    campaign: &str,
    user_id: &str,
    keyed: Option<Keyed>,
) -> Result<Issued, CouponError> {
    let strategy = match strategy {
        Some(s) => s,
        None => svc.core.promotion(campaign).await?.spec.strategy,
    };
    let id = keyed.as_ref().map(|k| k.effect_id.as_str());
    if let Some(k) = keyed.as_ref().filter(|k| k.retaken) {
        if let Some(earlier) = earlier_effect(svc, strategy, &k.effect_id).await? {
            return Ok(earlier);
        }
    }
    let result = match strategy {
        Strategy::Database => database::issue(svc, campaign, user_id, id)
            .await
            .map(Issued::Coupon),
        Strategy::RedisLock => redis_lock::issue(svc, campaign, user_id, id)
            .await
            .map(Issued::Coupon),
        Strategy::Queued => queued::admit(svc, campaign, user_id, id)
            .await
            .map(|request_id| Issued::Pending { request_id }),
    };
    svc.core.count(strategy.label(), campaign, &result);
    result
}

/// The first answer of a keyed request whose first run died unanswered,
/// when that run's effect (a coupon or a decided request under `id`)
/// happened; [`CouponError::Unsettled`] while its queued request is still
/// in flight; `None` when nothing happened, so this run issues.
///
/// The ticket is read before the database: the consumer clears a ticket
/// only after committing its decision, and the audit only when no decision
/// can come, so a ticket gone unseen is either decided in the database by
/// then or never will be.
async fn earlier_effect(
    svc: &CouponService,
    strategy: Strategy,
    id: &str,
) -> Result<Option<Issued>, CouponError> {
    if svc.core.counters.ticket_pending(id).await? {
        return Err(CouponError::Unsettled);
    }
    let pool = svc.core.db.pool();
    let Some(decided) = store::get_request(pool, id).await? else {
        return Ok(None);
    };
    if strategy == Strategy::Queued {
        return Ok(Some(Issued::Pending {
            request_id: decided.request_id,
        }));
    }
    let coupon = match &decided.coupon_id {
        Some(c) => store::get_coupon(pool, c).await?,
        None => None,
    };
    Ok(coupon.map(|c| Issued::Coupon(c.status_at(chrono::Utc::now()))))
}
