//! V3 `Queued`: one atomic counters step admits (per-user check + quota
//! decrement + pending ticket), the event goes to Kafka, and the answer is
//! 202 with a request id. The consumer (`crate::consumer`) persists in
//! batches and decides the final status; `GET /issue-requests/{id}` reads it.
//!
//! The counters only admit; the database still decides. When the counters
//! are missing (Redis restarted, flushed), admission fails closed with 503
//! until `super::super::rebuild` has re-derived them from the database.

use std::sync::Arc;

use chrono::Utc;
use promo_platform::{
    admission::{self, admit_and_publish},
    ports::Admission,
};

use crate::{
    domain::CouponError,
    events::{CouponEvent, Event},
    CouponService,
};

/// [`admit_once`], and once more after waiting up to
/// [`admission::REBUILD_WAIT`] when the pool was missing and is rebuilt
/// meanwhile. The request id is `request_id` (an idempotency key's effect
/// id) or a new one.
pub async fn admit(
    svc: &Arc<CouponService>,
    campaign: &str,
    user_id: &str,
    request_id: Option<&str>,
) -> Result<String, CouponError> {
    let request_id = request_id.map_or_else(|| uuid::Uuid::now_v7().to_string(), str::to_string);
    admission::once_more_after_rebuild(
        &*svc.counters,
        &CouponService::pool(campaign),
        |e| matches!(e, CouponError::CountersRebuilding),
        || admit_once(svc, campaign, user_id, &request_id),
    )
    .await
}

async fn admit_once(
    svc: &Arc<CouponService>,
    campaign: &str,
    user_id: &str,
    request_id: &str,
) -> Result<String, CouponError> {
    let c = svc.campaign(campaign).await?;
    let now = Utc::now();
    c.check_active(now)?;
    let request_id = request_id.to_string();
    let event = CouponEvent::Issue {
        request_id: request_id.clone(),
        campaign: campaign.to_string(),
        user_id: user_id.to_string(),
        admitted_at: now.timestamp_millis(),
    };
    let admission = admit_and_publish::<CouponError>(
        &*svc.counters,
        &*svc.producer,
        &CouponService::pool(campaign),
        campaign,
        user_id,
        1,
        c.spec.per_user_limit,
        (&request_id, svc.settings.ticket_ttl),
        event.encode(),
    )
    .await?;
    match admission {
        Admission::Admitted { remaining } => {
            svc.metrics
                .remaining
                .with_label_values(&[crate::SERVICE, campaign])
                .set(remaining);
            Ok(request_id)
        }
        Admission::LimitReached => Err(CouponError::AlreadyIssued(c.spec.per_user_limit)),
        Admission::SoldOut => Err(CouponError::SoldOut),
        Admission::Missing => {
            svc.trigger_rebuild(campaign);
            Err(CouponError::CountersRebuilding)
        }
    }
}
