//! The counters logic the coupon and time-sale services share: keeping a
//! pool in step with its campaign or sale, the V3 admission step, and the
//! fenced rebuild of a lost pool.

use std::{
    collections::HashSet,
    sync::{Arc, Mutex},
    time::Duration,
};

use async_trait::async_trait;

use crate::ports::{counters::CountersError, Admission, Counters, Producer, QueueError};

/// The counters pool of a campaign or sale: `<service>:<id>`. The services
/// and the operator (pre-warm, cleanup) name pools through this alone.
pub fn pool_name(service: &str, id: &str) -> String {
    format!("{service}:{id}")
}

/// What a pool is sized from: the quota or stock, and whether the strategy
/// admits through the counters at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolSpec {
    pub limit: i64,
    pub counted: bool,
}

/// Keeps a pool in step with an upserted campaign or sale: a new counted
/// one is seeded with what is left (`limit − persisted`); a limit change on
/// a running one adds the difference (never resets, so admissions in flight
/// stay counted); leaving a counted strategy drops the pool, so a return
/// rebuilds it from the database.
pub async fn sync_pool(
    counters: &dyn Counters,
    pool: &str,
    previous: Option<PoolSpec>,
    next: PoolSpec,
    persisted: i64,
) -> Result<(), CountersError> {
    match previous {
        None if next.counted => {
            counters.seed(pool, next.limit - persisted, &[]).await?;
        }
        None => {}
        Some(prev) if prev.counted && !next.counted => counters.remove(pool).await?,
        Some(prev) if next.limit != prev.limit => {
            counters.adjust(pool, next.limit - prev.limit).await?;
        }
        Some(_) => {}
    }
    Ok(())
}

/// Remaining and pending units of a campaign or sale. With counters,
/// remaining is what they will still admit and — for a queued strategy —
/// pending is what they admitted that is not persisted yet
/// (`limit − persisted − remaining`). A missing pool shows the database's view.
pub async fn figures(
    counters: &dyn Counters,
    pool: &str,
    persisted_left: i64,
    counted: bool,
    queued: bool,
) -> Result<(i64, i64), CountersError> {
    if !counted {
        return Ok((persisted_left, 0));
    }
    Ok(match counters.remaining(pool).await? {
        Some(left) if queued => (left.max(0), (persisted_left - left).max(0)),
        Some(left) => (left.max(0), 0),
        None => (persisted_left, 0),
    })
}

/// The V3 step: take `units` for `holder` in one atomic counters step
/// (marking `ticket` pending), then publish `event` keyed by `key`. When the
/// event cannot be sent the request is not acknowledged, so the units go
/// back. Any answer but `Admitted` published nothing.
#[allow(clippy::too_many_arguments)]
pub async fn admit_and_publish<E: From<CountersError> + From<QueueError>>(
    counters: &dyn Counters,
    producer: &dyn Producer,
    pool: &str,
    key: &str,
    holder: &str,
    units: i64,
    limit: i64,
    ticket: (&str, Duration),
    event: Vec<u8>,
) -> Result<Admission, E> {
    let admission = counters
        .admit(pool, holder, units, limit, Some(ticket))
        .await?;
    if let Admission::Admitted { .. } = admission {
        if let Err(e) = producer.send(key, event).await {
            if let Err(re) = counters.release(pool, holder, units).await {
                tracing::error!(error = %re, pool, "could not give back an unsent admission");
            }
            return Err(e.into());
        }
    }
    Ok(admission)
}

/// After a consumer's commit: unmarks the tickets of the requests it decided
/// (their status is in the database now). Best effort: a ticket left behind
/// lives out its TTL, and a status read that misses both looks again.
pub async fn clear_decided(counters: &dyn Counters, tickets: &[&str]) {
    if let Err(e) = counters.clear_tickets(tickets).await {
        tracing::warn!(error = %e, count = tickets.len(), "decided requests' tickets not cleared; they expire with their TTL");
    }
}

/// A service whose pools can be rebuilt from its database.
///
/// remaining = limit − persisted − in flight. "In flight" is what the
/// counters admitted but the consumer has not persisted; it is unknowable
/// once the counters are gone, so the rebuild drives it to zero instead: it
/// sends a *fence* event on the key (same partition, so behind every
/// admitted event) and waits until the consumer has persisted the fence.
/// Nothing new is admitted meanwhile — admission finds the pool missing and
/// answers 503 — so after the fence every admitted request is in the
/// database and [`Rebuild::baseline`] is exact.
#[async_trait]
pub trait Rebuild: Send + Sync + 'static {
    type Error: From<CountersError> + std::fmt::Display + Send;
    fn counters(&self) -> &dyn Counters;
    /// The pool of a campaign or sale.
    fn pool(&self, key: &str) -> String;
    /// How long to wait for the consumer to reach the fence.
    fn fence_timeout(&self) -> Duration;
    /// Whether admissions of `key` go through the queue, so that a fence is
    /// needed; without one (a synchronous strategy) nothing is in flight
    /// beyond a transaction, and the database re-checks every one of those.
    async fn needs_fence(&self, _key: &str) -> Result<bool, Self::Error> {
        Ok(true)
    }
    async fn send_fence(&self, key: &str, fence_id: &str) -> Result<(), Self::Error>;
    async fn fence_seen(&self, fence_id: &str) -> Result<bool, Self::Error>;
    /// Remaining units and per-holder units, from the database.
    async fn baseline(&self, key: &str) -> Result<(i64, Vec<(String, i64)>), Self::Error>;
    /// The error for a fence the consumer did not reach in time.
    fn fence_timed_out(&self) -> Self::Error;
    /// Called once per pool this process re-created (metrics).
    fn rebuilt(&self, key: &str);
}

/// Rebuilds `key`'s pool now, unless it exists or another replica is at it
/// (a counters lock); returns whether this call created it.
pub async fn rebuild<R: Rebuild + ?Sized>(r: &R, key: &str) -> Result<bool, R::Error> {
    let pool = r.pool(key);
    let lock_ttl = r.fence_timeout() + Duration::from_secs(5);
    let Some(lock) = r
        .counters()
        .try_lock(&format!("rebuild:{pool}"), lock_ttl)
        .await?
    else {
        return Ok(false);
    };
    let result = rebuild_locked(r, key, &pool).await;
    if let Err(e) = r.counters().unlock(&lock).await {
        tracing::warn!(error = %e, "rebuild lock release failed; it expires on its own");
    }
    result
}

async fn rebuild_locked<R: Rebuild + ?Sized>(
    r: &R,
    key: &str,
    pool: &str,
) -> Result<bool, R::Error> {
    if r.counters().remaining(pool).await?.is_some() {
        return Ok(false);
    }
    let fence_id = uuid::Uuid::now_v7().to_string();
    r.send_fence(key, &fence_id).await?;
    let deadline = tokio::time::Instant::now() + r.fence_timeout();
    while !r.fence_seen(&fence_id).await? {
        if tokio::time::Instant::now() >= deadline {
            tracing::warn!(
                key,
                "the consumer did not reach the rebuild fence in time; is it running?"
            );
            return Err(r.fence_timed_out());
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let (remaining, holders) = r.baseline(key).await?;
    let created = r.counters().seed(pool, remaining, &holders).await?;
    if created {
        r.rebuilt(key);
    }
    Ok(created)
}

/// At most one background rebuild per key in this process.
#[derive(Default)]
pub struct Rebuilds {
    running: Mutex<HashSet<String>>,
}

impl Rebuilds {
    /// Starts a rebuild of `key` in the background unless one runs.
    pub fn trigger<R: Rebuild>(self: &Arc<Self>, source: Arc<R>, key: &str) {
        {
            let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
            if !running.insert(key.to_string()) {
                return;
            }
        }
        let this = self.clone();
        let key = key.to_string();
        tokio::spawn(async move {
            match rebuild(&*source, &key).await {
                Ok(true) => tracing::info!(key, "counters rebuilt from the database"),
                Ok(false) => tracing::debug!(key, "counters rebuilt elsewhere"),
                Err(e) => {
                    tracing::warn!(key, error = %e, "counter rebuild failed; the next request retries")
                }
            }
            this.running
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&key);
        });
    }
}
