//! The one core of the queued services (coupon, time sale).
//!
//! Both admit through counters (V2/V3), publish V3 events to a topic,
//! persist them with a batch consumer, rebuild lost counters behind a
//! fence and audit admissions in flight. What differs — the promotion
//! (campaign or sale), its SQL, the event, the rules that decide a batch —
//! a service supplies as a [`Domain`]; everything else lives here once:
//!
//! - [`Settings`] and [`Flags`] (`settings.rs`): the tunables and the
//!   `--<service>-…` flags every queued service has;
//! - [`Core`]: its backends, the promotion cache, counters kept in step with
//!   upserts, gauges, the fenced rebuild and audit ([`Rebuild`]) and the
//!   consumer's batch ([`BatchHandler`]: decode, drop duplicates, skip what
//!   is decided, decide the rest per promotion in id order, record fences,
//!   commit, clear tickets, count);
//! - [`Queued`] (`service.rs`): what a service struct adds (routes,
//!   tunables); every `Queued` is a [`crate::service::Service`].

mod service;
mod settings;

use std::{
    collections::{BTreeMap, HashSet},
    sync::Arc,
    time::Duration,
};

use async_trait::async_trait;
use sqlx::{AnyConnection, AnyPool};

use promo_contracts::{event_bucket_key, pool_name};

use crate::{
    admission::{self, PoolSpec, Rebuild, Rebuilds},
    buckets::{self, Layout},
    cache::TtlCache,
    coalesce::{Admit, CoalesceError, Coalescer},
    config::{BackendError, Backends},
    consumer::{decode_batch, BatchHandler, Event, PersistError},
    metrics::Metrics,
    outbox::Outbox,
    ports::{
        counters::CountersError, sql::Migrations, Admission, Counters, Database, Dialect, Message,
        Producer, Queue, QueueError,
    },
};

pub use service::{with_database, Queued};
pub use settings::{Coalescing, Flags, Settings, CONSUMER_BATCH};

/// How a promotion stands in the database: what the counters are seeded
/// from and the gauges show.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Standing {
    /// Quota or stock.
    pub limit: i64,
    /// Units persisted (issued, sold).
    pub persisted: i64,
    /// Whether admissions go through the counters (V2 sales, V3).
    pub counted: bool,
    /// Whether admissions go through the queue (V3).
    pub queued: bool,
    /// Buckets its counters are split over ([`crate::buckets`]).
    pub buckets: u32,
}

impl Standing {
    /// Units the database still has.
    pub fn left(&self) -> i64 {
        self.limit - self.persisted
    }

    fn pool_spec(&self) -> PoolSpec {
        PoolSpec {
            limit: self.limit,
            counted: self.counted,
            buckets: self.buckets,
        }
    }
}

/// What one V3 admission takes: `units` for the holder, who may hold at
/// most `limit`, and the event that carries the request to the consumer.
pub struct Claim<E> {
    pub units: i64,
    pub limit: i64,
    pub event: E,
}

/// The counters' answer to a V3 admission ([`Core::admit`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Taken {
    /// Counted and queued: the request is PENDING until the consumer decides.
    Admitted,
    /// The holder would pass the per-user `limit`.
    LimitReached { limit: i64 },
    /// Not enough units left.
    SoldOut,
}

/// A V3 event, as the consumer reads it.
pub enum Admitted<R> {
    /// An admitted request of promotion `key` with id `id`, admitted in
    /// bucket `bucket` (`None`: the promotion has one bucket).
    Request {
        key: String,
        bucket: Option<u32>,
        id: String,
        body: R,
    },
    /// A rebuild's fence on `key`'s stream.
    Fence { key: String, fence_id: String },
}

/// One decoded, not yet decided request of a batch.
pub struct Fresh<R> {
    pub id: String,
    /// Its bucket (`None`: the promotion has one).
    pub bucket: Option<u32>,
    pub body: R,
}

/// The V3 event of a queued service.
pub trait QueuedEvent: Event + Send + Sync {
    /// What the consumer needs of an admitted request beyond its id.
    type Body: Send + Sync;
    /// The fence event a rebuild of `key` sends.
    fn fence(key: &str, fence_id: &str) -> Self;
    fn admitted(self) -> Admitted<Self::Body>;
}

/// The errors of a queued service's domain.
pub trait QueuedError:
    From<sqlx::Error>
    + From<CountersError>
    + From<QueueError>
    + std::error::Error
    + Send
    + Sync
    + 'static
{
    /// The promotion does not exist.
    fn unknown(id: &str) -> Self;
    /// Admission is closed while the counters are rebuilt.
    fn rebuilding() -> Self;
    /// An earlier run of the same request is still in flight.
    fn unsettled() -> Self;
    /// A task the service needs is gone (it is stopping).
    fn stopped(why: &str) -> Self;
    /// The `reason` label of a batch the consumer failed to persist.
    fn persist_reason(&self) -> &'static str;
    /// The `outcome` label of `promo_admissions_total` for this refusal.
    fn outcome(&self) -> &'static str;
}

/// What a queued service is made of beyond the shared core: its promotion,
/// event and error types and their SQL.
#[async_trait]
pub trait Domain: Send + Sync + 'static {
    /// The `service` metric label, the pool prefix and the flag prefix.
    const SERVICE: &'static str;
    const TOPIC: &'static str;
    const GROUP: &'static str;
    const PARTITIONS: i32;
    /// The `outcome` label of an accepted request in
    /// `promo_consumer_messages_total` ("issued", "confirmed").
    const ACCEPTED: &'static str;
    /// A campaign or sale.
    type Promotion: Send + Sync + 'static;
    /// What an admin PUT of a promotion carries.
    type Spec: Send + Sync;
    type Event: QueuedEvent;
    type Error: QueuedError;

    fn id(p: &Self::Promotion) -> &str;
    /// Validates `spec` and stores it as promotion `id`; returns what is
    /// stored and what it replaced.
    async fn upsert(
        db: &Database,
        id: &str,
        spec: &Self::Spec,
    ) -> Result<(Self::Promotion, Option<Self::Promotion>), Self::Error>;
    fn standing(p: &Self::Promotion) -> Standing;
    /// Sets the domain's own gauges of `p` (the periodic refresh, beside
    /// remaining and pending).
    fn measure(p: &Self::Promotion, metrics: &Metrics) {
        let _ = (p, metrics);
    }
    async fn get(pool: &AnyPool, id: &str) -> Result<Option<Self::Promotion>, sqlx::Error>;
    async fn list(pool: &AnyPool) -> Result<Vec<Self::Promotion>, sqlx::Error>;
    /// Units per holder (user) of a promotion, from the database.
    async fn holders(pool: &AnyPool, id: &str) -> Result<Vec<(String, i64)>, sqlx::Error>;
    /// Which of `ids` the database has decided (stored or refused).
    async fn decided(
        conn: &mut AnyConnection,
        ids: &[&str],
    ) -> Result<HashSet<String>, sqlx::Error>;
    /// Decides and stores the fresh requests of promotion `key` inside the
    /// consumer's transaction — the promotion's row locked, every request
    /// re-checked against the database; an unknown promotion refuses them
    /// all as `unknown_*`. Returns (accepted, refused).
    async fn persist(
        tx: &mut AnyConnection,
        dialect: Dialect,
        key: &str,
        fresh: &[&Fresh<<Self::Event as QueuedEvent>::Body>],
    ) -> Result<(u64, u64), Self::Error>;
}

/// The backends, settings and shared state of a queued service.
pub struct Core<D: Domain> {
    pub db: Database,
    pub counters: Arc<dyn Counters>,
    pub queue: Arc<dyn Queue>,
    pub producer: Arc<dyn Producer>,
    pub metrics: Arc<Metrics>,
    pub settings: Settings,
    rebuilds: Arc<Rebuilds>,
    cache: TtlCache<D::Promotion>,
    dry: buckets::Refills,
    /// V3 admissions' lanes, when coalescing is on.
    coalescer: Option<Coalescer>,
    /// The service's state changes on their way to the events topic.
    pub outbox: Arc<Outbox>,
}

impl<D: Domain> Core<D> {
    /// Opens (creating and migrating) database `database` and the topic.
    pub async fn open(
        backends: &Backends,
        database: &str,
        migrations: &Migrations,
        metrics: Arc<Metrics>,
        settings: Settings,
    ) -> Result<Arc<Self>, BackendError> {
        let db = backends.database(database).await?;
        db.migrate(migrations).await?;
        Self::with_database(db, backends, metrics, settings).await
    }

    /// With a database already opened and migrated: opens the topic.
    pub async fn with_database(
        db: Database,
        backends: &Backends,
        metrics: Arc<Metrics>,
        settings: Settings,
    ) -> Result<Arc<Self>, BackendError> {
        let producer = admission::open_topic::<D::Event>(
            backends,
            &settings.topic,
            settings.topic_partitions,
            &settings.group,
            settings.ticket_ttl,
        )
        .await?;
        let coalescer = settings.coalesce.over(&*backends.counters).then(|| {
            Coalescer::start(
                backends.counters.clone(),
                producer.clone(),
                settings.ticket_ttl,
                metrics
                    .admission_batch_size
                    .with_label_values(&[D::SERVICE]),
            )
        });
        let outbox = Outbox::from_args(db.clone(), D::SERVICE, &backends.args, metrics.clone());
        Ok(Arc::new(Self {
            outbox,
            db,
            coalescer,
            counters: backends.counters.clone(),
            queue: backends.queue.clone(),
            producer,
            metrics,
            cache: TtlCache::new(settings.cache_ttl),
            settings,
            rebuilds: Arc::default(),
            dry: buckets::Refills::default(),
        }))
    }

    /// The promotion, from a short-lived cache (the hot paths read it on
    /// every request). A pause or window change is seen within the TTL.
    pub async fn promotion(&self, id: &str) -> Result<Arc<D::Promotion>, D::Error> {
        let load = async {
            let p = D::get(self.db.pool(), id)
                .await?
                .ok_or_else(|| D::Error::unknown(id))?;
            self.metrics.know(D::SERVICE, id);
            Ok::<_, D::Error>(p)
        };
        self.cache.get_or_load(id, load).await
    }

    /// Creates or updates promotion `id` and keeps its counters in step
    /// ([`admission::sync_pool`]): a new counted one is seeded with what is
    /// left; a limit change on a running one adds the difference (never
    /// resets); leaving a counted strategy drops the counters so a return
    /// rebuilds them. Returns the promotion and whether it was created.
    pub async fn upsert(&self, id: &str, spec: &D::Spec) -> Result<(D::Promotion, bool), D::Error> {
        let (stored, previous) = D::upsert(&self.db, id, spec).await?;
        self.cache.remove(id);
        self.metrics.know(D::SERVICE, id);
        let now = D::standing(&stored);
        admission::sync_pool(
            &*self.counters,
            D::SERVICE,
            id,
            previous.as_ref().map(|p| D::standing(p).pool_spec()),
            now.pool_spec(),
            now.persisted,
        )
        .await?;
        Ok((stored, previous.is_none()))
    }

    /// Where promotion `p`'s counters live (its buckets' pools).
    pub fn layout(p: &D::Promotion) -> Layout<'_> {
        Layout::new(D::SERVICE, D::id(p), D::standing(p).buckets)
    }

    /// Remaining and pending units (see [`admission::figures`]).
    pub async fn figures(&self, p: &D::Promotion) -> Result<(i64, i64), D::Error> {
        let s = D::standing(p);
        let layout = Self::layout(p);
        Ok(admission::figures(&*self.counters, &layout, s.left(), s.counted, s.queued).await?)
    }

    /// Refreshes the remaining/pending gauges of every promotion; for
    /// queued ones also audits the admissions in flight and measures the drift.
    pub async fn refresh_gauges(&self) -> Result<(), D::Error> {
        let all = D::list(self.db.pool()).await?;
        self.metrics.know_only(D::SERVICE, all.iter().map(D::id));
        for p in &all {
            let (remaining, pending) = self.figures(p).await?;
            self.metrics
                .set_figures(D::SERVICE, D::id(p), remaining, pending);
            D::measure(p, &self.metrics);
            let s = D::standing(p);
            if s.queued {
                admission::audit_and_measure_drift(
                    self,
                    &Self::layout(p),
                    s.left(),
                    &self.metrics.counter_drift,
                )
                .await;
            }
        }
        Ok(())
    }

    /// Starts a rebuild of `id`'s counters in the background unless one runs.
    pub fn trigger_rebuild(self: &Arc<Self>, id: &str) {
        self.rebuilds.trigger(self.clone(), id);
    }

    /// Rebuilds now; returns whether this call created the pool.
    pub async fn rebuild(&self, id: &str) -> Result<bool, D::Error> {
        admission::rebuild(self, id).await
    }

    /// Audits now (see [`admission::audit`]); returns how many admissions it gave back.
    pub async fn audit(&self, id: &str) -> Result<u64, D::Error> {
        let p = D::get(self.db.pool(), id)
            .await?
            .ok_or_else(|| D::Error::unknown(id))?;
        admission::audit(self, &Self::layout(&p)).await
    }

    /// The V3 step for promotion `id`: `claim` looks at the promotion (from
    /// the cache) and says what to take — or refuses; it is told the
    /// holder's bucket (`None` with one bucket), which its event carries.
    /// The counters take `units` in the holder's bucket for `holder` (at
    /// most `limit` in all) and mark `ticket` pending — taking units from
    /// other buckets first when the holder's has too few
    /// ([`buckets::take`]); then the event goes to the topic keyed by the
    /// bucket ([`admission::publish`]). With coalescing on, the step and
    /// the send go through the lanes ([`crate::coalesce`]) and only a bucket
    /// short of units takes the refilling path. A missing pool starts a rebuild;
    /// when it is back within [`admission::REBUILD_WAIT`] the step runs once
    /// more, else the answer is the domain's "rebuilding" (503).
    pub async fn admit<F>(
        self: &Arc<Self>,
        id: &str,
        holder: &str,
        ticket: &str,
        claim: F,
    ) -> Result<Taken, D::Error>
    where
        F: Fn(&D::Promotion, Option<u32>) -> Result<Claim<D::Event>, D::Error> + Send + Sync,
    {
        let attempt = || async {
            let p = self.promotion(id).await?;
            let layout = Self::layout(&p);
            let bucket = layout.home(holder);
            let c = claim(&p, (layout.buckets > 1).then_some(bucket))?;
            let (key, partition) = self.route(&layout, bucket);
            let ttl = self.settings.ticket_ttl;
            let pool = layout.pool(bucket);
            let first = match &self.coalescer {
                Some(lanes) => {
                    let answer = lanes
                        .admit(Admit {
                            pool: pool.clone(),
                            holder: holder.to_string(),
                            units: c.units,
                            limit: c.limit,
                            ticket: ticket.to_string(),
                            key: key.clone(),
                            partition,
                            event: c.event.encode(),
                        })
                        .await
                        .map_err(|e| match e {
                            CoalesceError::Counters(e) => D::Error::from(e),
                            CoalesceError::Queue(e) => D::Error::from(e),
                            CoalesceError::Stopped => {
                                D::Error::stopped("the admission lanes stopped")
                            }
                        })?;
                    // Done, unless the bucket is short of units: then it
                    // refills from the others below, not asked again.
                    if answer != Admission::SoldOut || layout.buckets == 1 {
                        return Ok::<_, D::Error>((answer, c.limit, pool, layout.buckets));
                    }
                    answer
                }
                None => {
                    (self.counters)
                        .admit(&pool, holder, c.units, c.limit, Some((ticket, ttl)))
                        .await?
                }
            };
            let (answer, pool) = buckets::take_after(
                &*self.counters,
                &layout,
                holder,
                c.units,
                c.limit,
                Some((ticket, ttl)),
                &self.dry,
                first,
            )
            .await?;
            if let Admission::Admitted { .. } = answer {
                admission::publish::<D::Error>(
                    &*self.counters,
                    &*self.producer,
                    &pool,
                    (&key, partition),
                    ticket,
                    c.event.encode(),
                )
                .await?;
            }
            Ok::<_, D::Error>((answer, c.limit, pool, layout.buckets))
        };
        let mut answer = attempt().await?;
        if matches!(answer.0, Admission::Missing) {
            self.trigger_rebuild(id);
            if admission::wait_for_pool(&*self.counters, &answer.2, admission::REBUILD_WAIT).await {
                answer = attempt().await?;
            }
        }
        match answer {
            (Admission::Admitted { remaining }, _, _, buckets) => {
                // With one bucket its remaining is the promotion's; with
                // several the gauge waits for the next tick's sum.
                if buckets == 1 {
                    self.metrics
                        .remaining
                        .with_label_values(&[D::SERVICE, id])
                        .set(remaining);
                }
                Ok(Taken::Admitted)
            }
            (Admission::LimitReached, limit, ..) => Ok(Taken::LimitReached { limit }),
            (Admission::SoldOut, ..) => Ok(Taken::SoldOut),
            (Admission::InFlight, ..) => Err(D::Error::unsettled()),
            (Admission::Missing, ..) => {
                self.trigger_rebuild(id);
                Err(D::Error::rebuilding())
            }
        }
    }

    /// Takes `units` for `holder` in their bucket of `p` — refilling it from
    /// the other buckets when short — without a ticket: V2's synchronous
    /// counters step. Returns the answer and the pool it took from.
    pub async fn take(
        &self,
        p: &D::Promotion,
        holder: &str,
        units: i64,
        limit: i64,
    ) -> Result<(Admission, String), CountersError> {
        buckets::take(
            &*self.counters,
            &Self::layout(p),
            holder,
            units,
            limit,
            None,
            &self.dry,
        )
        .await
    }

    /// The message key and topic partition of bucket `bucket`'s events and
    /// fences.
    fn route(&self, layout: &Layout<'_>, bucket: u32) -> (String, i32) {
        let partitions = self.settings.topic_partitions.max(1) as u32;
        (layout.key(bucket), layout.partition(bucket, partitions))
    }

    /// The pool `holder` counts in, of promotion `p`.
    pub fn holder_pool(p: &D::Promotion, holder: &str) -> String {
        let layout = Self::layout(p);
        layout.pool(layout.home(holder))
    }

    /// Counts one admission attempt in `promo_admissions_total`.
    pub fn count<T>(&self, strategy: &str, id: &str, r: &Result<T, D::Error>) {
        let outcome = match r {
            Ok(_) => "issued",
            Err(e) => e.outcome(),
        };
        self.metrics
            .count_admission(D::SERVICE, strategy, id, outcome);
    }

    /// Decides and stores one V3 batch; see the module documentation.
    pub async fn persist_batch(&self, batch: &[Message]) -> Result<(), D::Error> {
        let mut by_key: BTreeMap<String, Vec<Fresh<_>>> = BTreeMap::new();
        let mut fences = Vec::new();
        let mut seen = HashSet::new();
        for event in decode_batch::<D::Event>(batch, &self.metrics, D::SERVICE) {
            match event.admitted() {
                Admitted::Request {
                    key,
                    bucket,
                    id,
                    body,
                } => {
                    if seen.insert(id.clone()) {
                        by_key
                            .entry(key)
                            .or_default()
                            .push(Fresh { id, bucket, body });
                    }
                }
                Admitted::Fence { key, fence_id } => fences.push((fence_id, key)),
            }
        }

        let dialect = self.db.dialect();
        let mut tx = self.db.pool().begin().await?;
        let ids: Vec<&str> = seen.iter().map(String::as_str).collect();
        let decided = D::decided(&mut tx, &ids).await?;
        let (mut accepted, mut refused, mut redelivered) = (0u64, 0u64, 0u64);
        // Promotions in id order, so two consumers never deadlock.
        for (key, requests) in &by_key {
            let fresh: Vec<_> = requests
                .iter()
                .filter(|r| !decided.contains(&r.id))
                .collect();
            redelivered += (requests.len() - fresh.len()) as u64;
            if !fresh.is_empty() {
                let (a, r) = D::persist(&mut tx, dialect, key, &fresh).await?;
                accepted += a;
                refused += r;
            }
        }
        for (fence_id, key) in &fences {
            admission::record_fence(&mut tx, dialect, fence_id, key).await?;
        }
        tx.commit().await?;
        // Every request of the batch is decided now (refusals included):
        // their tickets go, from their buckets' pools.
        for (key, requests) in &by_key {
            let mut by_pool: BTreeMap<String, Vec<&str>> = BTreeMap::new();
            for r in requests {
                let pool = pool_name(D::SERVICE, &event_bucket_key(key, r.bucket));
                by_pool.entry(pool).or_default().push(&r.id);
            }
            for (pool, ids) in &by_pool {
                admission::clear_decided(&*self.counters, pool, ids).await;
            }
        }

        let m = &self.metrics.consumer_messages;
        m.with_label_values(&[D::SERVICE, D::ACCEPTED])
            .inc_by(accepted);
        m.with_label_values(&[D::SERVICE, "rejected"])
            .inc_by(refused);
        m.with_label_values(&[D::SERVICE, "redelivered"])
            .inc_by(redelivered);
        Ok(())
    }
}

#[async_trait]
impl<D: Domain> BatchHandler for Core<D> {
    async fn persist(&self, batch: &[Message]) -> Result<(), PersistError> {
        self.persist_batch(batch).await.map_err(|e| PersistError {
            reason: e.persist_reason(),
            message: e.to_string(),
        })
    }
}

/// The fenced rebuild and the audit of [`admission`], on the domain's SQL.
#[async_trait]
impl<D: Domain> Rebuild for Core<D> {
    type Error = D::Error;

    fn counters(&self) -> &dyn Counters {
        &*self.counters
    }

    fn service(&self) -> &'static str {
        D::SERVICE
    }

    async fn buckets(&self, key: &str) -> Result<u32, D::Error> {
        let p = D::get(self.db.pool(), key)
            .await?
            .ok_or_else(|| D::Error::unknown(key))?;
        Ok(D::standing(&p).buckets)
    }

    fn fence_timeout(&self) -> Duration {
        self.settings.rebuild_timeout
    }

    fn audit_age(&self) -> Duration {
        self.settings.audit_age
    }

    /// A V2 promotion needs no fence: its admissions are synchronous and
    /// the database re-checks each.
    async fn needs_fence(&self, key: &str) -> Result<bool, D::Error> {
        let p = D::get(self.db.pool(), key)
            .await?
            .ok_or_else(|| D::Error::unknown(key))?;
        Ok(D::standing(&p).queued)
    }

    async fn send_fence(
        &self,
        layout: &Layout<'_>,
        bucket: u32,
        fence_id: &str,
    ) -> Result<(), D::Error> {
        let fence = D::Event::fence(layout.id, fence_id);
        let (key, partition) = self.route(layout, bucket);
        Ok(self
            .producer
            .send_to(partition, &key, fence.encode())
            .await?)
    }

    async fn fence_seen(&self, fence_id: &str) -> Result<bool, D::Error> {
        Ok(admission::fence_seen(self.db.pool(), fence_id).await?)
    }

    async fn baseline(&self, key: &str) -> Result<(i64, Vec<(String, i64)>), D::Error> {
        let p = D::get(self.db.pool(), key)
            .await?
            .ok_or_else(|| D::Error::unknown(key))?;
        let holders = D::holders(self.db.pool(), key).await?;
        Ok((D::standing(&p).left(), holders))
    }

    async fn decided(&self, tickets: &[String]) -> Result<HashSet<String>, D::Error> {
        let ids: Vec<&str> = tickets.iter().map(String::as_str).collect();
        let mut conn = self.db.pool().acquire().await?;
        Ok(D::decided(&mut conn, &ids).await?)
    }

    fn returned(&self, key: &str, count: u64) {
        self.metrics
            .admissions_returned
            .with_label_values(&[D::SERVICE, key])
            .inc_by(count);
    }

    fn fence_timed_out(&self) -> D::Error {
        D::Error::rebuilding()
    }

    fn rebuilt(&self, key: &str) {
        self.metrics
            .counter_rebuilds
            .with_label_values(&[D::SERVICE, key])
            .inc();
    }
}
