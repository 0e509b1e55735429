//! The counters logic the coupon and time-sale services share: keeping a
//! promotion's pools (one per bucket, [`crate::buckets`]) in step with its
//! campaign or sale, the V3 admission step, the fenced rebuild of lost
//! pools, and the fenced audit that gives back admissions whose event was
//! never sent and settles interrupted transfers between buckets.

use std::{
    collections::HashSet,
    sync::{Arc, Mutex},
    time::Duration,
};

use async_trait::async_trait;

use crate::{
    buckets::{self, Layout},
    ports::{counters::CountersError, Counters, Producer, QueueError},
};

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

/// What a promotion's pools are sized from: the quota or stock, whether the
/// strategy admits through the counters at all, and over how many buckets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolSpec {
    pub limit: i64,
    pub counted: bool,
    pub buckets: u32,
}

/// Keeps a promotion's pools in step with its upserted campaign or sale: a
/// new counted one has each bucket seeded with its share of what is left
/// (`limit − persisted`); a limit change on a running one adds each
/// bucket's share of the difference (never resets, so admissions in flight
/// stay counted); leaving a counted strategy or changing the bucket count
/// drops the pools, so the next admission rebuilds them from the database
/// behind fences ([`rebuild`]).
pub async fn sync_pool(
    counters: &dyn Counters,
    service: &str,
    id: &str,
    previous: Option<PoolSpec>,
    next: PoolSpec,
    persisted: i64,
) -> Result<(), CountersError> {
    let layout = Layout::new(service, id, next.buckets);
    match previous {
        None if next.counted => {
            let shares = promo_contracts::split(next.limit - persisted, layout.buckets);
            for (pool, share) in layout.pools().iter().zip(shares) {
                counters.seed(pool, share, &[], "").await?;
            }
        }
        None => {}
        Some(prev) if prev.counted && (!next.counted || prev.buckets != next.buckets) => {
            for pool in Layout::new(service, id, prev.buckets).pools() {
                counters.remove(&pool).await?;
            }
        }
        Some(prev) if next.limit != prev.limit => {
            let shares = promo_contracts::split(next.limit - prev.limit, layout.buckets);
            for (pool, share) in layout.pools().iter().zip(shares) {
                counters.adjust(pool, share).await?;
            }
        }
        Some(_) => {}
    }
    Ok(())
}

/// Remaining and pending units of a campaign or sale, over all its
/// buckets. With counters, remaining is what they will still admit and —
/// for a queued strategy — pending is what they admitted that is not
/// persisted yet (`limit − persisted − remaining`). A missing pool shows
/// the database's view.
pub async fn figures(
    counters: &dyn Counters,
    layout: &Layout<'_>,
    persisted_left: i64,
    counted: bool,
    queued: bool,
) -> Result<(i64, i64), CountersError> {
    if !counted {
        return Ok((persisted_left, 0));
    }
    let Some(left) = bucket_remainings(counters, layout).await? else {
        return Ok((persisted_left, 0));
    };
    let left: i64 = left.iter().sum();
    Ok(if queued {
        (left.max(0), (persisted_left - left).max(0))
    } else {
        (left.max(0), 0)
    })
}

/// Every bucket's remaining units, or `None` when a pool is missing.
pub async fn bucket_remainings(
    counters: &dyn Counters,
    layout: &Layout<'_>,
) -> Result<Option<Vec<i64>>, CountersError> {
    let mut all = Vec::with_capacity(layout.buckets as usize);
    for pool in layout.pools() {
        match counters.remaining(&pool).await? {
            Some(left) => all.push(left),
            None => return Ok(None),
        }
    }
    Ok(Some(all))
}

/// The V3 step after the counters admitted `ticket` in `pool`
/// ([`buckets::take`]): publish `event` keyed by `key` to `partition`. When the event
/// cannot be sent the request is not acknowledged and the units go back —
/// at once when the queue says the event was surely not stored; when it may
/// have been (a delivery timeout), the ticket stays in flight and the audit
/// ([`audit`]) decides after a fence: given back only if no event ever
/// arrived.
pub async fn publish<E: From<QueueError>>(
    counters: &dyn Counters,
    producer: &dyn Producer,
    pool: &str,
    (key, partition): (&str, i32),
    ticket: &str,
    event: Vec<u8>,
) -> Result<(), E> {
    if let Err(e) = producer.send_to(partition, key, event).await {
        unsent(counters, pool, ticket, &e).await;
        return Err(e.into());
    }
    Ok(())
}

/// After the event of `ticket`'s admission in `pool` failed to send with
/// `e`: gives the units back at once when the queue says the event surely
/// was not stored; leaves the ticket in flight for the audit when it may
/// have been.
pub async fn unsent(counters: &dyn Counters, pool: &str, ticket: &str, e: &QueueError) {
    if e.maybe_delivered() {
        tracing::warn!(error = %e, pool, "event may or may not be queued; the audit decides");
    } else if let Err(re) = counters.release_ticket(pool, ticket).await {
        tracing::error!(error = %re, pool, "could not give back an unsent admission; the audit will");
    }
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
/// sends a *fence* event on each bucket's key (same partition, so behind
/// every event admitted in that bucket) and waits until the consumer has
/// persisted every fence. Nothing new is admitted meanwhile — the rebuild
/// drops every bucket's pool first and admission answers 503 on a missing
/// one — so after the fences every admitted request is in the database and
/// [`Rebuild::baseline`] is exact.
#[async_trait]
pub trait Rebuild: Send + Sync + 'static {
    type Error: From<CountersError> + std::fmt::Display + Send;
    fn counters(&self) -> &dyn Counters;
    /// The `service` of its pools' names.
    fn service(&self) -> &'static str;
    /// How many buckets promotion `key` has now.
    async fn buckets(&self, key: &str) -> Result<u32, Self::Error>;
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
    /// Sends fence `fence_id` for bucket `bucket` of `layout` to the
    /// bucket's partition (so it lands behind that bucket's events).
    async fn send_fence(
        &self,
        layout: &Layout<'_>,
        bucket: u32,
        fence_id: &str,
    ) -> Result<(), Self::Error>;
    async fn fence_seen(&self, fence_id: &str) -> Result<bool, Self::Error>;
    /// Remaining units and per-holder units, from the database.
    async fn baseline(&self, key: &str) -> Result<(i64, Vec<(String, i64)>), Self::Error>;
    /// Which of `tickets` (request or order ids) the database has decided.
    async fn decided(&self, tickets: &[String]) -> Result<HashSet<String>, Self::Error>;
    /// Called when the audit gave back `count` admissions of `key` (metrics).
    fn returned(&self, key: &str, count: u64);
    /// The error for a fence the consumer did not reach in time.
    fn fence_timed_out(&self) -> Self::Error;
    /// Called once per promotion this process re-created the pools of (metrics).
    fn rebuilt(&self, key: &str);
}

/// Rebuilds `key`'s pools now, unless they all exist or another replica is
/// at it (a counters lock); returns whether this call created them.
pub async fn rebuild<R: Rebuild + ?Sized>(r: &R, key: &str) -> Result<bool, R::Error> {
    let buckets = r.buckets(key).await?;
    let layout = Layout::new(r.service(), key, buckets);
    let lock = layout.lock_name("rebuild");
    let created = with_pool_lock(r, &lock, rebuild_locked(r, &layout)).await?;
    Ok(created.unwrap_or(false))
}

/// Runs `work` holding the counters lock `name` (one replica at a time,
/// for as long as a fence may take); `None` when another holds it.
async fn with_pool_lock<R: Rebuild + ?Sized, T>(
    r: &R,
    name: &str,
    work: impl std::future::Future<Output = Result<T, R::Error>>,
) -> Result<Option<T>, R::Error> {
    let lock_ttl = r.fence_timeout() + Duration::from_secs(5);
    let Some(lock) = r.counters().try_lock(name, lock_ttl).await? else {
        return Ok(None);
    };
    let result = work.await;
    if let Err(e) = r.counters().unlock(&lock).await {
        tracing::warn!(error = %e, name, "lock release failed; it expires on its own");
    }
    result.map(Some)
}

async fn rebuild_locked<R: Rebuild + ?Sized>(r: &R, layout: &Layout<'_>) -> Result<bool, R::Error> {
    let pools = layout.pools();
    if bucket_remainings(r.counters(), layout).await?.is_some() {
        return Ok(false);
    }
    // Every bucket goes, so that none admits while the others are derived.
    for pool in &pools {
        r.counters().remove(pool).await?;
    }
    let all: Vec<u32> = (0..layout.buckets).collect();
    pass_fences(r, layout, &all, "rebuild").await?;
    let (remaining, holders) = r.baseline(layout.id).await?;
    let mut by_bucket = vec![Vec::new(); pools.len()];
    for (holder, units) in holders {
        by_bucket[layout.home(&holder) as usize].push((holder, units));
    }
    let shares = promo_contracts::split(remaining, layout.buckets);
    let generation = uuid::Uuid::new_v4().simple().to_string();
    let mut created = false;
    for ((pool, share), holders) in pools.iter().zip(shares).zip(by_bucket) {
        created |= r
            .counters()
            .seed(pool, share, &holders, &generation)
            .await?;
    }
    if created {
        r.rebuilt(layout.id);
    }
    Ok(created)
}

/// Sends a fence on each of `buckets` of `layout` and waits until the
/// consumer has persisted them all: then every event sent for those
/// buckets before the fences is in the database.
async fn pass_fences<R: Rebuild + ?Sized>(
    r: &R,
    layout: &Layout<'_>,
    buckets: &[u32],
    why: &str,
) -> Result<(), R::Error> {
    let key = layout.id;
    if !r.needs_fence(key).await? {
        return Ok(());
    }
    let mut fences = Vec::with_capacity(buckets.len());
    for &bucket in buckets {
        let fence_id = uuid::Uuid::now_v7().to_string();
        r.send_fence(layout, bucket, &fence_id).await?;
        fences.push(fence_id);
    }
    let deadline = tokio::time::Instant::now() + r.fence_timeout();
    for fence_id in &fences {
        while !r.fence_seen(fence_id).await? {
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

/// The fenced audit of a promotion's pools (`layout`): gives back the admissions
/// whose event was never sent (the serving process died between the
/// counters step and the send, or a send failed): their units return to
/// their bucket and their holder's count drops, so nothing stays taken for
/// nobody; and settles the transfers between buckets whose mover died
/// midway ([`buckets::settle`]).
///
/// Why it cannot give back a unit whose event is on its way: it looks only
/// at tickets in flight for [`Rebuild::audit_age`] (at least [`AUDIT_AGE`]
/// outside tests), whose events — if ever sent — are in the queue already;
/// it then sends a fence on the bucket's key (same partition, so behind
/// them) and waits until the consumer has persisted the fence. A ticket the
/// database has still not decided was never queued. Giving back is one
/// atomic step that also forgets the ticket, so the consumer's clearing, a
/// failed send's release and other replicas' audits cannot give it back
/// twice. Returns how many admissions it gave back.
pub async fn audit<R: Rebuild + ?Sized>(r: &R, layout: &Layout<'_>) -> Result<u64, R::Error> {
    let (key, layout) = (layout.id, *layout);
    let mut returned = 0;
    for bucket in 0..layout.buckets {
        let pool = layout.pool(bucket);
        let stale = r
            .counters()
            .in_flight_older_than(&pool, r.audit_age(), AUDIT_BATCH)
            .await?;
        let (transfers, requests): (Vec<String>, Vec<String>) = stale
            .into_iter()
            .partition(|t| t.starts_with(buckets::TRANSFER));
        for t in &transfers {
            if buckets::settle(r.counters(), &layout, &pool, t).await? {
                tracing::warn!(
                    key,
                    pool,
                    "gave back the units of a transfer that never arrived"
                );
            }
        }
        if requests.is_empty() {
            continue;
        }
        let lock = format!("audit:{pool}");
        let work = audit_locked(r, &layout, bucket, &pool, &requests);
        returned += with_pool_lock(r, &lock, work).await?.unwrap_or(0);
    }
    Ok(returned)
}

async fn audit_locked<R: Rebuild + ?Sized>(
    r: &R,
    layout: &Layout<'_>,
    bucket: u32,
    pool: &str,
    stale: &[String],
) -> Result<u64, R::Error> {
    let key = layout.id;
    pass_fences(r, layout, &[bucket], "audit").await?;
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

/// Counters drift of a counted promotion: `remaining + in flight − (limit −
/// persisted)` over all its buckets, in units. Zero when every unit taken
/// is either persisted or in flight (a transfer's units count once while
/// they travel); negative when units are taken for nothing the audit can
/// see; `None` when a pool is missing. A consumer commit between the reads
/// shows as a passing difference, hence alerts wait minutes.
pub async fn drift(
    counters: &dyn Counters,
    layout: &Layout<'_>,
    persisted_left: i64,
) -> Result<Option<i64>, CountersError> {
    let mut total = 0;
    for pool in layout.pools() {
        let Some(remaining) = counters.remaining(&pool).await? else {
            return Ok(None);
        };
        total += remaining + counters.in_flight(&pool).await?;
    }
    Ok(Some(total - persisted_left))
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
    layout: &Layout<'_>,
    persisted_left: i64,
    drift_gauge: &prometheus::IntGaugeVec,
) {
    let key = layout.id;
    if let Err(e) = audit(r, layout).await {
        tracing::warn!(key, error = %e, "admission audit failed; retried next round");
    }
    match drift(r.counters(), layout, persisted_left).await {
        Ok(Some(d)) => drift_gauge.with_label_values(&[layout.service, key]).set(d),
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
