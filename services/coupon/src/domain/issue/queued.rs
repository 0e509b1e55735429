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

use crate::{domain::CouponError, events::CouponEvent, CouponService};
use promo_platform::ports::Admission;

pub async fn admit(
    svc: &Arc<CouponService>,
    campaign: &str,
    user_id: &str,
) -> Result<String, CouponError> {
    let c = svc.campaign(campaign).await?;
    let now = Utc::now();
    c.check_active(now)?;
    let pool = CouponService::pool(campaign);
    let request_id = uuid::Uuid::now_v7().to_string();
    let admission = svc
        .counters
        .admit(
            &pool,
            user_id,
            1,
            c.spec.per_user_limit,
            Some((&request_id, svc.settings.ticket_ttl)),
        )
        .await?;
    match admission {
        Admission::Admitted { remaining } => {
            svc.metrics
                .remaining
                .with_label_values(&[crate::SERVICE, campaign])
                .set(remaining);
        }
        Admission::LimitReached => return Err(CouponError::AlreadyIssued(c.spec.per_user_limit)),
        Admission::SoldOut => return Err(CouponError::SoldOut),
        Admission::Missing => {
            svc.trigger_rebuild(campaign);
            return Err(CouponError::CountersRebuilding);
        }
    }
    let event = CouponEvent::Issue {
        request_id: request_id.clone(),
        campaign: campaign.to_string(),
        user_id: user_id.to_string(),
        admitted_at: now.timestamp_millis(),
    };
    if let Err(e) = svc.producer.send(campaign, event.encode()).await {
        // Not acknowledged to the client, so give the unit back.
        if let Err(re) = svc.counters.release(&pool, user_id, 1).await {
            tracing::error!(error = %re, campaign, "could not give back an unsent admission");
        }
        return Err(e.into());
    }
    Ok(request_id)
}
