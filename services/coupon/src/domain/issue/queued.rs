//! V3 `Queued`: one atomic counters step admits (per-user check + quota
//! decrement + pending ticket), the event goes to Kafka, and the answer is
//! 202 with a request id. The consumer (`crate::consumer`) persists in
//! batches and decides the final status; `GET /issue-requests/{id}` reads it.
//!
//! The counters only admit; the database still decides. When the counters
//! are missing (Redis restarted, flushed), admission fails closed with 503
//! until the queued core has rebuilt them from the database
//! ([`promo_platform::queued::Core::admit`]).

use std::sync::Arc;

use chrono::Utc;
use promo_platform::queued::{Claim, Taken};

use crate::{domain::CouponError, events::CouponEvent, CouponService};

/// Admits one request for `user_id`; its id is `request_id` (an
/// idempotency key's effect id) or a new one, and it is the answer.
pub async fn admit(
    svc: &Arc<CouponService>,
    campaign: &str,
    user_id: &str,
    request_id: Option<&str>,
) -> Result<String, CouponError> {
    let request_id = request_id.map_or_else(|| uuid::Uuid::now_v7().to_string(), str::to_string);
    let claim = |c: &crate::domain::Campaign, bucket| {
        let now = Utc::now();
        c.check_active(now)?;
        Ok(Claim {
            units: 1,
            limit: c.spec.per_user_limit,
            event: CouponEvent::Issue {
                request_id: request_id.clone(),
                campaign: campaign.to_string(),
                user_id: user_id.to_string(),
                admitted_at: now.timestamp_millis(),
                bucket,
            },
        })
    };
    match svc
        .core
        .admit(campaign, user_id, &request_id, claim)
        .await?
    {
        Taken::Admitted => Ok(request_id),
        Taken::LimitReached { limit } => Err(CouponError::AlreadyIssued(limit)),
        Taken::SoldOut => Err(CouponError::SoldOut),
    }
}
