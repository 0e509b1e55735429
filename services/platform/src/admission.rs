//! The counters logic the coupon and time-sale services share: keeping a
//! pool in step with its campaign or sale, the V3 admission step, the fenced
//! rebuild of a lost pool, and the fenced audit that gives back admissions
//! whose event was never sent.

use std::{
    collections::HashSet,
    sync::{Arc, Mutex},
    time::Duration,
};

use async_trait::async_trait;

use crate::ports::{counters::CountersError, Admission, Counters, Producer, QueueError};

pub use promo_contracts::pool_name;

/// The fences table, per dialect (`migrations/shared/*/counter_fences.sql`):
/// every queued service lists it among its migrations.
pub const FENCES_MYSQL: &str = include_str!("../../../migrations/shared/mysql/counter_fences.sql");
pub const FENCES_SQLITE: &str =
    include_str!("../../../migrations/shared/sqlite/counter_fences.sql");

/// The ids among `ids` that `table.column` already holds (a consumer's
/// "already decided" check on a redelivered batch).
pub async fn existing_ids(
    tx: &mut sqlx::AnyConnection,
    table: &str,
    column: &str,
    ids: &[&str],
) -> Result<std::collections::HashSet<String>, sqlx::Error> {
    let mut found = std::collections::HashSet::new();
    for chunk in crate::ports::sql::lookup_chunks(ids, 512) {
        let marks = vec!["?"; chunk.len()].join(", ");
        let sql = format!("SELECT {column} FROM {table} WHERE {column} IN ({marks})");
        let mut q = sqlx::query_scalar::<_, String>(&sql);
        for id in chunk {
            q = q.bind(id);
        }
        found.extend(q.fetch_all(&mut *tx).await?);
    }
    Ok(found)
}

/// Records that the consumer passed a counter-rebuild fence. Every queued
/// service's schema has `counter_fences (fence_id, campaign_id, seen_at)`;
/// `campaign_id` holds the campaign or sale the fence was sent for.
pub async fn record_fence(
    tx: &mut sqlx::AnyConnection,
    dialect: crate::ports::Dialect,
    fence_id: &str,
    key: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(&format!(
        "{} INTO counter_fences (fence_id, campaign_id, seen_at) VALUES (?, ?, ?)",
        dialect.insert_ignore()
    ))
    .bind(fence_id)
    .bind(key)
    .bind(crate::time::now_ms())
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// Whether the consumer has passed the fence.
pub async fn fence_seen(pool: &sqlx::AnyPool, fence_id: &str) -> Result<bool, sqlx::Error> {
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM counter_fences WHERE fence_id = ?")
        .bind(fence_id)
        .fetch_one(pool)
        .await?;
    Ok(n > 0)
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
/// (marking `ticket` pending and in flight), then publish `event` keyed by
/// `key`. When the event cannot be sent the request is not acknowledged and
/// the units go back — at once when the queue says the event was surely not
/// stored; when it may have been (a delivery timeout), the ticket stays in
/// flight and the audit ([`audit`]) decides after a fence: given back only
/// if no event ever arrived. Any answer but `Admitted` published nothing.
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
            if e.maybe_delivered() {
                tracing::warn!(error = %e, pool, "event may or may not be queued; the audit decides");
            } else if let Err(re) = counters.release_ticket(pool, ticket.0).await {
                tracing::error!(error = %re, pool, "could not give back an unsent admission; the audit will");
            }
            return Err(e.into());
        }
    }
    Ok(admission)
}

/// Opens a queued service's topic at start: creates it when missing, marks
/// the requests still queued from before a restart pending
/// ([`mark_replayed_pending`]) and returns its producer.
pub async fn open_topic<E: crate::consumer::Event>(
    backends: &crate::config::Backends,
    topic: &str,
    partitions: i32,
    group: &str,
    ticket_ttl: Duration,
) -> Result<std::sync::Arc<dyn crate::ports::Producer>, crate::config::BackendError> {
    backends.queue.ensure_topic(topic, partitions).await?;
    let producer = backends.queue.producer(topic)?;
    mark_replayed_pending::<E>(
        &*backends.queue,
        &*backends.counters,
        topic,
        group,
        ticket_ttl,
    )
    .await?;
    Ok(producer)
}

/// At start, with a queue that outlived the process (the local queue's
/// durable log): marks the requests of its undelivered events pending again,
/// so that their status reads PENDING — not unknown — until the consumer
/// decides them. Returns how many it marked.
pub async fn mark_replayed_pending<E: crate::consumer::Event>(
    queue: &dyn crate::ports::Queue,
    counters: &dyn Counters,
    topic: &str,
    group: &str,
    ticket_ttl: Duration,
) -> Result<usize, crate::config::BackendError> {
    let messages = queue.undelivered(topic, group).await?;
    let ids: Vec<String> = messages
        .iter()
        .filter_map(|m| E::decode(&m.payload).ok())
        .filter_map(E::request_id)
        .collect();
    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    counters.mark_pending(&refs, ticket_ttl).await?;
    if !ids.is_empty() {
        tracing::info!(
            topic,
            requests = ids.len(),
            "replayed requests marked pending"
        );
    }
    Ok(ids.len())
}

/// After a consumer's commit: unmarks the tickets of the requests it decided
/// (their status is in the database now, not in flight). Best effort: a
/// ticket left behind lives out its TTL (a status read that misses both
/// looks again), and the audit clears it from the in-flight set.
pub async fn clear_decided(counters: &dyn Counters, pool: &str, tickets: &[&str]) {
    if tickets.is_empty() {
        return;
    }
    if let Err(e) = counters.clear_tickets(pool, tickets).await {
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
    /// How long an admission stays in flight before [`audit`] looks at it
    /// ([`AUDIT_AGE`] in production).
    fn audit_age(&self) -> Duration;
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
    /// Which of `tickets` (request or order ids) the database has decided.
    async fn decided(&self, tickets: &[String]) -> Result<HashSet<String>, Self::Error>;
    /// Called when the audit gave back `count` admissions of `key` (metrics).
    fn returned(&self, key: &str, count: u64);
    /// The error for a fence the consumer did not reach in time.
    fn fence_timed_out(&self) -> Self::Error;
    /// Called once per pool this process re-created (metrics).
    fn rebuilt(&self, key: &str);
}

/// Rebuilds `key`'s pool now, unless it exists or another replica is at it
/// (a counters lock); returns whether this call created it.
pub async fn rebuild<R: Rebuild + ?Sized>(r: &R, key: &str) -> Result<bool, R::Error> {
    let pool = r.pool(key);
    let created = with_pool_lock(r, "rebuild", &pool, rebuild_locked(r, key, &pool)).await?;
    Ok(created.unwrap_or(false))
}

/// Runs `work` holding the counters lock `<what>:<pool>` (one replica at a
/// time, for as long as a fence may take); `None` when another holds it.
async fn with_pool_lock<R: Rebuild + ?Sized, T>(
    r: &R,
    what: &str,
    pool: &str,
    work: impl std::future::Future<Output = Result<T, R::Error>>,
) -> Result<Option<T>, R::Error> {
    let lock_ttl = r.fence_timeout() + Duration::from_secs(5);
    let Some(lock) = r
        .counters()
        .try_lock(&format!("{what}:{pool}"), lock_ttl)
        .await?
    else {
        return Ok(None);
    };
    let result = work.await;
    if let Err(e) = r.counters().unlock(&lock).await {
        tracing::warn!(error = %e, what, "lock release failed; it expires on its own");
    }
    result.map(Some)
}

async fn rebuild_locked<R: Rebuild + ?Sized>(
    r: &R,
    key: &str,
    pool: &str,
) -> Result<bool, R::Error> {
    if r.counters().remaining(pool).await?.is_some() {
        return Ok(false);
    }
    pass_fence(r, key, "rebuild").await?;
    let (remaining, holders) = r.baseline(key).await?;
    let created = r.counters().seed(pool, remaining, &holders).await?;
    if created {
        r.rebuilt(key);
    }
    Ok(created)
}

/// Sends a fence on `key` and waits until the consumer has persisted it:
/// then every event sent on `key` before the fence is in the database.
async fn pass_fence<R: Rebuild + ?Sized>(r: &R, key: &str, why: &str) -> Result<(), R::Error> {
    let fence_id = uuid::Uuid::now_v7().to_string();
    r.send_fence(key, &fence_id).await?;
    let deadline = tokio::time::Instant::now() + r.fence_timeout();
    while !r.fence_seen(&fence_id).await? {
        if tokio::time::Instant::now() >= deadline {
            tracing::warn!(
                key,
                why,
                "the consumer did not reach the fence in time; is it running?"
            );
            return Err(r.fence_timed_out());
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    Ok(())
}

/// How long an admission stays in flight before the audit looks at it. It
/// is longer than the Kafka producer's delivery timeout
/// ([`crate::ports::queue::DELIVERY_TIMEOUT`]): an event that will ever be
/// stored by the broker is stored by then, so a fence sent afterwards on
/// the same key lands behind it.
pub const AUDIT_AGE: Duration = Duration::from_secs(15);

/// Most tickets one audit round looks at per pool.
const AUDIT_BATCH: usize = 1000;

/// The fenced audit of `key`'s pool: gives back the admissions whose event
/// was never sent (the serving process died between the counters step and
/// the send, or a send failed): their units return to the pool and their
/// holder's count drops, so nothing stays taken for nobody.
///
/// Why it cannot give back a unit whose event is on its way: it looks only
/// at tickets in flight for [`Rebuild::audit_age`] (at least [`AUDIT_AGE`]
/// outside tests), whose events — if ever sent —
/// are in the queue already; it then sends a fence on the same key (same
/// partition, so behind them) and waits until the consumer has persisted
/// the fence. A ticket the database has still not decided was never
/// queued. Giving back is one atomic step that also forgets the ticket, so
/// the consumer's clearing, a failed send's release and other replicas'
/// audits cannot give it back twice. Returns how many it gave back.
pub async fn audit<R: Rebuild + ?Sized>(r: &R, key: &str) -> Result<u64, R::Error> {
    let pool = r.pool(key);
    let stale = r
        .counters()
        .in_flight_older_than(&pool, r.audit_age(), AUDIT_BATCH)
        .await?;
    if stale.is_empty() {
        return Ok(0);
    }
    let returned = with_pool_lock(r, "audit", &pool, audit_locked(r, key, &pool, &stale)).await?;
    Ok(returned.unwrap_or(0))
}

async fn audit_locked<R: Rebuild + ?Sized>(
    r: &R,
    key: &str,
    pool: &str,
    stale: &[String],
) -> Result<u64, R::Error> {
    pass_fence(r, key, "audit").await?;
    let decided = r.decided(stale).await?;
    let done: Vec<&str> = stale
        .iter()
        .filter(|t| decided.contains(*t))
        .map(String::as_str)
        .collect();
    clear_decided(r.counters(), pool, &done).await;
    let mut returned = 0;
    for t in stale.iter().filter(|t| !decided.contains(*t)) {
        if r.counters().release_ticket(pool, t).await? {
            returned += 1;
        }
    }
    if returned > 0 {
        tracing::warn!(
            key,
            returned,
            "gave back admissions whose event was never queued"
        );
        r.returned(key, returned);
    }
    Ok(returned)
}

/// Counters drift of a counted pool: `remaining + in flight − (limit −
/// persisted)`, in units. Zero when every unit taken is either persisted or
/// in flight; negative when units are taken for nothing the audit can see;
/// `None` when the pool is missing. A consumer commit between the two reads
/// shows as a passing difference, hence alerts wait minutes.
pub async fn drift(
    counters: &dyn Counters,
    pool: &str,
    persisted_left: i64,
) -> Result<Option<i64>, CountersError> {
    let Some(remaining) = counters.remaining(pool).await? else {
        return Ok(None);
    };
    let in_flight = counters.in_flight(pool).await?;
    Ok(Some(remaining + in_flight - persisted_left))
}

/// How long an admission that found its pool missing waits for the rebuild
/// it started before answering 503: with a consumer that keeps up, a
/// rebuild takes milliseconds, and the request then goes through.
pub const REBUILD_WAIT: Duration = Duration::from_secs(1);

/// Waits up to `within` for `pool` to exist again; returns whether it does.
pub async fn wait_for_pool(counters: &dyn Counters, pool: &str, within: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if matches!(counters.remaining(pool).await, Ok(Some(_))) {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Runs `attempt`; when it fails because `pool` is missing (`missing`
/// says so — the attempt has started a rebuild), waits up to
/// [`REBUILD_WAIT`] for the pool and runs it once more.
pub async fn once_more_after_rebuild<T, E, Fut>(
    counters: &dyn Counters,
    pool: &str,
    missing: impl Fn(&E) -> bool,
    attempt: impl Fn() -> Fut,
) -> Result<T, E>
where
    Fut: std::future::Future<Output = Result<T, E>>,
{
    match attempt().await {
        Err(e) if missing(&e) && wait_for_pool(counters, pool, REBUILD_WAIT).await => {
            attempt().await
        }
        answer => answer,
    }
}

/// Gives back `key`'s admissions whose event was never queued ([`audit`];
/// a failure is logged and retried next round) and sets its
/// `promo_counter_drift` ([`drift`]); for a service's periodic tick.
pub async fn audit_and_measure_drift<R: Rebuild + ?Sized>(
    r: &R,
    key: &str,
    persisted_left: i64,
    drift_gauge: &prometheus::IntGaugeVec,
    service: &str,
) {
    if let Err(e) = audit(r, key).await {
        tracing::warn!(key, error = %e, "admission audit failed; retried next round");
    }
    match drift(r.counters(), &r.pool(key), persisted_left).await {
        Ok(Some(d)) => drift_gauge.with_label_values(&[service, key]).set(d),
        Ok(None) => {}
        Err(e) => tracing::debug!(error = %e, "drift unavailable"),
    }
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
