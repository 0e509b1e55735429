//! V2 `RedisLock`: a Redis lock per (campaign, user) — SET NX PX with a
//! random token, released only by its owner through a Lua compare-and-delete
//! — around the same transaction as V1, minus the campaign row lock.
//!
//! The lock is per user rather than per campaign: a campaign-wide lock would
//! serialise every request through two Redis round trips plus a transaction,
//! slower than V1's row lock. Per user it keeps one user's concurrent
//! requests from racing each other, while the quota is decided by the
//! conditional update in the database. Losing the lock (expiry, Redis
//! restart) therefore cannot oversell or double-issue.

use std::time::Duration;

use rand::Rng;

use super::database::{issue_in_transaction, with_deadlock_retry};
use crate::{
    domain::{Coupon, CouponError},
    CouponService,
};

pub async fn issue(
    svc: &CouponService,
    campaign: &str,
    user_id: &str,
) -> Result<Coupon, CouponError> {
    let key = format!("coupon:{campaign}:{user_id}");
    let deadline = tokio::time::Instant::now() + svc.settings.lock_wait;
    let mut pause = Duration::from_millis(2);
    let token = loop {
        if let Some(t) = svc.counters.try_lock(&key, svc.settings.lock_ttl).await? {
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
    let result = with_deadlock_retry(|| issue_in_transaction(svc, campaign, user_id, false)).await;
    if let Err(e) = svc.counters.unlock(&token).await {
        // The lock expires on its own; the outcome is already decided.
        tracing::warn!(error = %e, key, "lock release failed");
    }
    result
}
