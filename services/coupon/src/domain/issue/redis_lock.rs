//! V2 `RedisLock`: a Redis lock per (campaign, user) — SET NX PX with a
//! random token, released only by its owner through a Lua compare-and-delete
//! — around the database step, which decides.
//!
//! The lock is per user rather than per campaign: a campaign-wide lock would
//! serialise every request through two Redis round trips plus a transaction,
//! slower than V1's row lock. Per user it keeps one user's concurrent
//! requests from racing each other, so the database step only has to decide
//! between different users — which is what lets it decide many at once.
//! While the lock is held the request joins the service's group commit
//! (`promo_platform::group_commit`): one transaction takes the campaign's
//! row lock once, decides every queued request in order (`batch::decide`)
//! and commits; each caller is answered after that commit. Losing the lock
//! (expiry, Redis restart) therefore cannot oversell or double-issue: the
//! per-user count and the quota are checked under the row lock.

use std::{sync::Arc, time::Duration};

use chrono::Utc;
use promo_platform::group_commit::{by_key, whole_or_one_by_one, Answers};
use rand::Rng;

use super::{
    batch::{decide, Wanted},
    database::{issue_in_transaction, with_deadlock_retry},
};
use crate::{
    domain::{Coupon, CouponError},
    store, CouponService,
};

/// One V2 request waiting for its batch.
pub struct Request {
    pub campaign: String,
    pub user_id: String,
    /// An idempotency key's effect id, stored with the coupon.
    pub request_id: Option<String>,
}

pub async fn issue(
    svc: &Arc<CouponService>,
    campaign: &str,
    user_id: &str,
    request_id: Option<&str>,
) -> Result<Coupon, CouponError> {
    let key = format!("coupon:{campaign}:{user_id}");
    let deadline = tokio::time::Instant::now() + svc.settings.lock_wait;
    let mut pause = Duration::from_millis(2);
    let token = loop {
        if let Some(t) = svc
            .core
            .counters
            .try_lock(&key, svc.settings.lock_ttl)
            .await?
        {
            break t;
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(CouponError::LockTimeout);
        }
        // Jittered backoff so waiters do not retry in lockstep.
        let jitter = rand::rng().random_range(0..=pause.as_millis() as u64);
        tokio::time::sleep(pause + Duration::from_millis(jitter)).await;
        pause = (pause * 2).min(Duration::from_millis(50));
    };
    let request = Request {
        campaign: campaign.to_string(),
        user_id: user_id.to_string(),
        request_id: request_id.map(str::to_string),
    };
    let result = match svc.v2_group_commit().submit(request).await {
        Ok(answer) => answer,
        Err(stopped) => Err(CouponError::Stopped(stopped.to_string())),
    };
    if let Err(e) = svc.core.counters.unlock(&token).await {
        // The lock expires on its own; the outcome is already decided.
        tracing::warn!(error = %e, key, "lock release failed");
    }
    result
}

/// Decides a batch of V2 requests in one transaction. If that transaction
/// fails for good, each request gets its own, so one bad request cannot
/// fail the others.
pub async fn issue_batch(
    svc: &CouponService,
    batch: Vec<Request>,
) -> Vec<Result<Coupon, CouponError>> {
    whole_or_one_by_one(
        &batch,
        with_deadlock_retry(|| batch_transaction(svc, &batch)),
        |r| {
            with_deadlock_retry(|| {
                issue_in_transaction(svc, &r.campaign, &r.user_id, r.request_id.as_deref())
            })
        },
    )
    .await
}

async fn batch_transaction(
    svc: &CouponService,
    batch: &[Request],
) -> Result<Vec<Result<Coupon, CouponError>>, CouponError> {
    let mut answers = Answers::new(batch.len());
    let now = Utc::now();
    let mut tx = svc.core.db.pool().begin().await?;
    for (campaign, indices) in by_key(batch, |r| &r.campaign) {
        let Some(c) = store::lock_campaign(&mut tx, svc.core.db.dialect(), campaign).await? else {
            answers.fill(&indices, || {
                Err(CouponError::UnknownCampaign(campaign.to_string()))
            });
            continue;
        };
        if let Err(CouponError::NotActive(reason)) = c.check_active(now) {
            answers.fill(&indices, || Err(CouponError::NotActive(reason.clone())));
            continue;
        }
        let wanted: Vec<Wanted> = indices
            .iter()
            .map(|&i| Wanted {
                user_id: &batch[i].user_id,
                request_id: batch[i].request_id.as_deref(),
                at: now,
            })
            .collect();
        for (&i, answer) in indices
            .iter()
            .zip(decide(&mut tx, svc.core.db.dialect(), &c, &wanted).await?)
        {
            answers.set(i, answer.map_err(CouponError::from));
        }
    }
    tx.commit().await?;
    Ok(answers.into_vec())
}
