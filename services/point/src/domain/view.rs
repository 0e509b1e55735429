//! Balance reads through a **cache-aside** Redis entry: read the cache; on
//! a miss read the database (after expiring what is due) in one snapshot and
//! fill the cache with the account version it read. Every write invalidates
//! the entry after its commit with the version it wrote, and the cache
//! refuses fills older than that (see `promo_platform::ports::cache`), so a
//! read that raced a write cannot put the old balance back. Writes never
//! decide from the cache. With Redis down, reads go to the database.

use std::time::Duration;

use chrono::{DateTime, Utc};
use promo_platform::{
    ports::cache::CacheError,
    time::{from_ms, to_ms},
};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{ledger, PointError};
use crate::{store, PointService, SERVICE};

/// Points that expire soon.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Expiring {
    pub amount: i64,
    pub expires_at: DateTime<Utc>,
}

/// `GET /users/{userId}/points`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Points {
    pub balance: i64,
    pub expiring_soon: Vec<Expiring>,
}

/// What the cache holds: the view and until when it is right (the next expiry).
#[derive(Debug, Serialize, Deserialize)]
struct Cached {
    points: Points,
    valid_until: i64,
}

fn cache_key(user: &str) -> String {
    format!("points:{user}")
}

pub async fn points(svc: &PointService, user: &str) -> Result<Points, PointError> {
    let key = cache_key(user);
    let now = to_ms(Utc::now());
    let result = match bounded(svc, svc.cache.get(&key)).await {
        Ok(Some(hit)) => match hit.value.as_deref().map(serde_json::from_str::<Cached>) {
            Some(Ok(c)) if c.valid_until > now => {
                count(svc, "hit");
                return Ok(c.points);
            }
            _ => "miss",
        },
        Ok(None) => "miss",
        Err(e) => {
            tracing::warn!(error = %e, "balance cache unavailable; reading the database");
            "error"
        }
    };
    count(svc, result);
    let (points, version, valid_until) = from_database(svc, user).await?;
    if result != "error" {
        let ttl = Duration::from_millis(u64::try_from(valid_until - now).unwrap_or(0))
            .min(svc.settings.cache_ttl);
        if !ttl.is_zero() {
            let value = serde_json::to_string(&Cached {
                points: points.clone(),
                valid_until,
            })
            .unwrap_or_default();
            if let Err(e) = bounded(svc, svc.cache.fill(&key, version, &value, ttl)).await {
                tracing::warn!(error = %e, "balance cache fill failed");
            }
        }
    }
    Ok(points)
}

/// A cache call that gives up after `settings.cache_timeout`.
async fn bounded<T>(
    svc: &PointService,
    call: impl std::future::Future<Output = Result<T, CacheError>>,
) -> Result<T, String> {
    match tokio::time::timeout(svc.settings.cache_timeout, call).await {
        Ok(r) => r.map_err(|e| e.to_string()),
        Err(_) => Err(format!("no answer within {:?}", svc.settings.cache_timeout)),
    }
}

fn count(svc: &PointService, result: &str) {
    svc.metrics
        .cache_reads
        .with_label_values(&[SERVICE, result])
        .inc();
}

/// The view from the database in one snapshot, with the account version it
/// was read at and until when it holds.
async fn from_database(svc: &PointService, user: &str) -> Result<(Points, i64, i64), PointError> {
    let now = Utc::now();
    let now_ms = to_ms(now);
    if store::has_due(svc.db.pool(), user, now_ms).await? {
        ledger::expire_now(svc, user).await?;
    }
    let mut tx = svc.db.pool().begin().await?;
    let account = store::read_account(&mut tx, user).await?;
    let soon = now_ms + svc.settings.expiring_soon.as_millis() as i64;
    let expiring = store::expiring(&mut tx, user, now_ms, soon).await?;
    let next = store::next_expiry(&mut tx, user, now_ms).await?;
    tx.commit().await?;
    let points = Points {
        balance: account.balance,
        expiring_soon: expiring
            .into_iter()
            .map(|(amount, at)| Expiring {
                amount,
                expires_at: from_ms(at),
            })
            .collect(),
    };
    Ok((points, account.version, next.unwrap_or(i64::MAX)))
}

impl PointService {
    /// After a commit that moved `user`'s account to `version`.
    pub(crate) async fn invalidate(&self, user: &str, version: i64) {
        let key = cache_key(user);
        let call = self
            .cache
            .invalidate(&key, version, self.settings.cache_ttl * 2);
        if let Err(e) = bounded(self, call).await {
            // The entry then lives at most its TTL, which never outlasts
            // `cache_ttl`; reads meanwhile may be that stale. Logged loudly.
            tracing::error!(error = %e, user, "balance cache invalidation failed");
        }
    }
}
