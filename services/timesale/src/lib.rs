//! The time-sale service: products on sale with a stock and a per-user
//! limit, ordering in three strategies (V1 optimistic database, V2 Redis
//! stock, V3 queued), order status, cancel with restock.
//!
//! Follow a request: `http/` (route, extractors) → `domain/ordering/<strategy>.rs`
//! (the rules) → `store/` (SQL). The V3 consumer is `consumer.rs`. What it
//! shares with the coupon service (strategies, pools, the V3 admission
//! step, the fenced counter rebuild, the consumer loop) lives in
//! `promo_platform`.

pub mod config;
pub mod consumer;
pub mod domain;
pub mod events;
pub mod http;
pub mod run;
pub mod store;

use std::{
    sync::{Arc, OnceLock},
    time::Duration,
};

use promo_platform::{
    admission::{self, PoolSpec, Rebuilds},
    cache::TtlCache,
    config::{BackendError, Backends},
    consumer::ConsumerOptions,
    group_commit::{self, GroupCommit},
    metrics::Metrics,
    ports::{Counters, Database, Producer, Queue},
};

use domain::{ordering::redis_stock, Order, Sale, SaleSpec, Strategy, TimesaleError};

/// The `service` metric label and the log target.
pub const SERVICE: &str = promo_contracts::timesale::SERVICE;
/// The service's own database (on the shared MySQL server, or `promo_timesale.db`).
pub const DATABASE: &str = "promo_timesale";

/// Defaults shared by [`Settings::default`] and the flags in [`config`].
pub const DEFAULT_TOPIC: &str = promo_contracts::timesale::TOPIC;
pub const DEFAULT_GROUP: &str = promo_contracts::timesale::GROUP;
pub const DEFAULT_PARTITIONS: i32 = promo_contracts::timesale::PARTITIONS;
pub const DEFAULT_CONSUMER_BATCH: usize = 1000;
/// Attempts of a V1 transaction that lost a lock conflict.
pub const DEFAULT_TX_ATTEMPTS: u32 = 6;

/// Tunables. Those an operator tunes have a flag in [`config`]; the others
/// keep these defaults in production (tests shorten them).
#[derive(Debug, Clone)]
pub struct Settings {
    pub topic: String,
    pub topic_partitions: i32,
    pub group: String,
    /// How long a sale read stays cached on the V2/V3 hot path.
    pub sale_cache_ttl: Duration,
    /// How long a V3 order id answers PENDING before it must be decided.
    pub ticket_ttl: Duration,
    /// How long a counter rebuild waits for its fence to be persisted.
    pub rebuild_timeout: Duration,
    /// How long an admission stays in flight before the audit may give it
    /// back ([`admission::audit`]; never below [`admission::AUDIT_AGE`] from the flag).
    pub audit_age: Duration,
    /// How long an `Idempotency-Key` claim without an answer blocks retries
    /// before one may take it over
    /// (`promo_platform::http::idempotency::LEASE` by default).
    pub idempotency_lease: Duration,
    /// Attempts of an ordering transaction that lost a lock conflict.
    pub tx_attempts: u32,
    pub consumer_max_batch: usize,
    pub consumer_max_wait: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            topic: DEFAULT_TOPIC.into(),
            topic_partitions: DEFAULT_PARTITIONS,
            group: DEFAULT_GROUP.into(),
            sale_cache_ttl: Duration::from_millis(500),
            ticket_ttl: Duration::from_secs(24 * 3600),
            rebuild_timeout: Duration::from_secs(30),
            audit_age: admission::AUDIT_AGE,
            idempotency_lease: promo_platform::http::idempotency::LEASE,
            tx_attempts: DEFAULT_TX_ATTEMPTS,
            consumer_max_batch: DEFAULT_CONSUMER_BATCH,
            consumer_max_wait: Duration::from_millis(20),
        }
    }
}

impl Settings {
    pub fn consumer_options(&self) -> ConsumerOptions {
        ConsumerOptions {
            service: SERVICE,
            topic: self.topic.clone(),
            group: self.group.clone(),
            max_batch: self.consumer_max_batch,
            max_wait: self.consumer_max_wait,
        }
    }
}

/// Everything a request needs: backends, metrics, settings, caches.
pub struct TimesaleService {
    pub db: Database,
    pub counters: Arc<dyn Counters>,
    pub queue: Arc<dyn Queue>,
    pub producer: Arc<dyn Producer>,
    pub metrics: Arc<Metrics>,
    pub settings: Settings,
    cache: TtlCache<Sale>,
    rebuilds: Arc<Rebuilds>,
    v2: OnceLock<V2GroupCommit>,
}

type V2GroupCommit = GroupCommit<redis_stock::Request, Result<Order, TimesaleError>>;

impl TimesaleService {
    /// V2's group commit, started on first use.
    pub fn v2_group_commit(self: &Arc<Self>) -> &V2GroupCommit {
        self.v2.get_or_init(|| {
            GroupCommit::start_for(
                self,
                group_commit::MAX_BATCH,
                group_commit::QUEUE,
                |svc, batch| async move { redis_stock::order_batch(&svc, batch).await },
                || Err(TimesaleError::Stopped("the service stopped".into())),
            )
        })
    }

    /// Opens (creating and migrating) the database and the topic.
    pub async fn start(
        backends: &Backends,
        metrics: Arc<Metrics>,
        settings: Settings,
    ) -> Result<Arc<Self>, BackendError> {
        let db = backends.database(DATABASE).await?;
        db.migrate(&store::MIGRATIONS).await?;
        Self::with_database(db, backends, metrics, settings).await
    }

    /// With a database already opened and migrated.
    pub async fn with_database(
        db: Database,
        backends: &Backends,
        metrics: Arc<Metrics>,
        settings: Settings,
    ) -> Result<Arc<Self>, BackendError> {
        let producer = admission::open_topic::<events::OrderEvent>(
            backends,
            &settings.topic,
            settings.topic_partitions,
            &settings.group,
            settings.ticket_ttl,
        )
        .await?;
        Ok(Arc::new(Self {
            db,
            counters: backends.counters.clone(),
            queue: backends.queue.clone(),
            producer,
            metrics,
            cache: TtlCache::new(settings.sale_cache_ttl),
            settings,
            rebuilds: Arc::default(),
            v2: OnceLock::new(),
        }))
    }

    /// The counters pool of a sale (the operator uses the same name).
    pub fn pool(sale: &str) -> String {
        admission::pool_name(SERVICE, sale)
    }

    /// The sale, from a short-lived cache (V2/V3 read it on every request).
    pub async fn sale(&self, id: &str) -> Result<Arc<Sale>, TimesaleError> {
        let load = async {
            let s = store::get_sale(self.db.pool(), id)
                .await?
                .ok_or_else(|| TimesaleError::UnknownSale(id.to_string()))?;
            self.metrics.know(SERVICE, id);
            Ok(s)
        };
        self.cache.get_or_load(id, load).await
    }

    /// Creates or updates a sale and keeps its stock counters in step (see
    /// [`admission::sync_pool`]). Returns the sale and whether it was created.
    pub async fn upsert_sale(
        &self,
        id: &str,
        spec: &SaleSpec,
    ) -> Result<(Sale, bool), TimesaleError> {
        spec.validate()?;
        let (stored, previous) =
            store::upsert_sale(self.db.pool(), self.db.dialect(), id, spec).await?;
        self.cache.remove(id);
        self.metrics.know(SERVICE, id);
        let pool_spec = |s: &SaleSpec| PoolSpec {
            limit: s.stock,
            counted: s.counted(),
        };
        admission::sync_pool(
            &*self.counters,
            &Self::pool(id),
            previous.as_ref().map(|p| pool_spec(&p.spec)),
            pool_spec(&stored.spec),
            stored.sold,
        )
        .await?;
        Ok((stored, previous.is_none()))
    }

    /// Remaining and pending units (see [`admission::figures`]).
    pub async fn figures(&self, s: &Sale) -> Result<(i64, i64), TimesaleError> {
        let queued = s.spec.strategy == Strategy::Queued;
        let left = s.spec.stock - s.sold;
        let pool = Self::pool(&s.id);
        Ok(admission::figures(&*self.counters, &pool, left, s.spec.counted(), queued).await?)
    }

    /// Refreshes the remaining/pending gauges of every sale; for queued ones
    /// also audits the orders in flight and measures the drift.
    pub async fn refresh_gauges(&self) -> Result<(), TimesaleError> {
        let sales = store::list_sales(self.db.pool(), None).await?;
        self.metrics
            .know_only(SERVICE, sales.iter().map(|s| s.id.as_str()));
        for s in sales {
            let (remaining, pending) = self.figures(&s).await?;
            self.metrics.set_figures(SERVICE, &s.id, remaining, pending);
            if s.spec.strategy == Strategy::Queued {
                admission::audit_and_measure_drift(
                    self,
                    &s.id,
                    s.spec.stock - s.sold,
                    &self.metrics.counter_drift,
                    SERVICE,
                )
                .await;
            }
        }
        Ok(())
    }

    /// Counts one ordering attempt in `promo_admissions_total`.
    pub(crate) fn count<T>(&self, strategy: Strategy, sale: &str, r: &Result<T, TimesaleError>) {
        let outcome = match r {
            Ok(_) => "issued",
            Err(e) => e.outcome(),
        };
        self.metrics
            .count_admission(SERVICE, strategy.label(), sale, outcome);
    }
}
