//! The coupon service: campaigns, first-come-first-served issuance in three
//! strategies (V1 database, V2 Redis lock, V3 queued), redemption.
//!
//! Follow a request: `http/` (route, extractors) → `domain/issue/<strategy>.rs`
//! (the rules) → `store/` (SQL). The V3 consumer is `consumer.rs`.

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

use domain::{issue::redis_lock, Campaign, CampaignSpec, Coupon, CouponError, Strategy};

/// The `service` metric label and the log target.
pub const SERVICE: &str = promo_contracts::coupon::SERVICE;
/// The service's own database (on the shared MySQL server, or `coupon.db`).
pub const DATABASE: &str = "promo_coupon";

/// Defaults shared by [`Settings::default`] and the flags in [`config`].
pub const DEFAULT_TOPIC: &str = promo_contracts::coupon::TOPIC;
pub const DEFAULT_GROUP: &str = promo_contracts::coupon::GROUP;
pub const DEFAULT_PARTITIONS: i32 = promo_contracts::coupon::PARTITIONS;
pub const DEFAULT_CONSUMER_BATCH: usize = 1000;
pub const DEFAULT_LOCK_WAIT_MS: u64 = 5000;

/// Tunables. Those an operator tunes have a flag in [`config`]; the others
/// keep these defaults in production (tests shorten them).
#[derive(Debug, Clone)]
pub struct Settings {
    /// Kafka topic of V3 issue events.
    pub topic: String,
    pub topic_partitions: i32,
    /// Consumer group of the persisting consumer.
    pub group: String,
    /// How long V2 waits for a user's lock before answering 503.
    pub lock_wait: Duration,
    /// Lock lifetime; correctness never depends on it (the database decides).
    pub lock_ttl: Duration,
    /// How long a campaign read stays cached on the V3 hot path.
    pub campaign_cache_ttl: Duration,
    /// How long a V3 request id answers PENDING before it must be decided.
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
    pub consumer_max_batch: usize,
    pub consumer_max_wait: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            topic: DEFAULT_TOPIC.into(),
            topic_partitions: DEFAULT_PARTITIONS,
            group: DEFAULT_GROUP.into(),
            lock_wait: Duration::from_millis(DEFAULT_LOCK_WAIT_MS),
            lock_ttl: Duration::from_secs(5),
            campaign_cache_ttl: Duration::from_millis(500),
            ticket_ttl: Duration::from_secs(24 * 3600),
            rebuild_timeout: Duration::from_secs(30),
            audit_age: admission::AUDIT_AGE,
            idempotency_lease: promo_platform::http::idempotency::LEASE,
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
pub struct CouponService {
    pub db: Database,
    pub counters: Arc<dyn Counters>,
    pub queue: Arc<dyn Queue>,
    pub producer: Arc<dyn Producer>,
    pub metrics: Arc<Metrics>,
    pub settings: Settings,
    cache: TtlCache<Campaign>,
    rebuilds: Arc<Rebuilds>,
    v2: OnceLock<V2GroupCommit>,
}

type V2GroupCommit = GroupCommit<redis_lock::Request, Result<Coupon, CouponError>>;

impl CouponService {
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

    pub async fn with_database(
        db: Database,
        backends: &Backends,
        metrics: Arc<Metrics>,
        settings: Settings,
    ) -> Result<Arc<Self>, BackendError> {
        let producer = admission::open_topic::<events::CouponEvent>(
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
            cache: TtlCache::new(settings.campaign_cache_ttl),
            settings,
            rebuilds: Arc::default(),
            v2: OnceLock::new(),
        }))
    }

    /// V2's group commit, started on first use. Its task holds the service
    /// weakly, so dropping the service ends it.
    pub fn v2_group_commit(self: &Arc<Self>) -> &V2GroupCommit {
        self.v2.get_or_init(|| {
            GroupCommit::start_for(
                self,
                group_commit::MAX_BATCH,
                group_commit::QUEUE,
                |svc, batch| async move { redis_lock::issue_batch(&svc, batch).await },
                || Err(CouponError::Stopped("the service stopped".into())),
            )
        })
    }

    /// The counters pool of a campaign.
    pub fn pool(campaign: &str) -> String {
        admission::pool_name(SERVICE, campaign)
    }

    /// The campaign, from a short-lived cache (the V3 hot path reads it on
    /// every request). A pause or window change is seen within the TTL.
    pub async fn campaign(&self, id: &str) -> Result<Arc<Campaign>, CouponError> {
        let load = async {
            let c = store::get_campaign(self.db.pool(), id)
                .await?
                .ok_or_else(|| CouponError::UnknownCampaign(id.to_string()))?;
            self.metrics.know(SERVICE, id);
            Ok(c)
        };
        self.cache.get_or_load(id, load).await
    }

    /// Creates or updates a campaign and keeps its counters in step:
    /// a new queued campaign is seeded with its quota; a quota change on a
    /// running campaign adds the difference (never resets); leaving the
    /// queued strategy drops the counters so a return rebuilds them.
    /// Returns the campaign and whether it was created.
    pub async fn upsert_campaign(
        &self,
        id: &str,
        spec: &CampaignSpec,
    ) -> Result<(Campaign, bool), CouponError> {
        spec.validate()?;
        let (stored, previous) =
            store::upsert_campaign(self.db.pool(), self.db.dialect(), id, spec).await?;
        self.cache.remove(id);
        self.metrics.know(SERVICE, id);
        let pool_spec = |s: &CampaignSpec| PoolSpec {
            limit: s.quota,
            counted: s.strategy == Strategy::Queued,
        };
        admission::sync_pool(
            &*self.counters,
            &Self::pool(id),
            previous.as_ref().map(|p| pool_spec(&p.spec)),
            pool_spec(&stored.spec),
            stored.issued,
        )
        .await?;
        Ok((stored, previous.is_none()))
    }

    /// Remaining and pending of a campaign (see [`admission::figures`]).
    pub async fn figures(&self, c: &Campaign) -> Result<(i64, i64), CouponError> {
        let queued = c.spec.strategy == Strategy::Queued;
        let left = c.spec.quota - c.issued;
        Ok(admission::figures(&*self.counters, &Self::pool(&c.id), left, queued, queued).await?)
    }

    /// Refreshes the remaining/pending gauges of every campaign; for queued
    /// ones also audits the admissions in flight and measures the drift.
    pub async fn refresh_gauges(&self) -> Result<(), CouponError> {
        let campaigns = store::list_campaigns(self.db.pool()).await?;
        self.metrics
            .know_only(SERVICE, campaigns.iter().map(|c| c.id.as_str()));
        for c in campaigns {
            let (remaining, pending) = self.figures(&c).await?;
            self.metrics.set_figures(SERVICE, &c.id, remaining, pending);
            if c.spec.strategy == Strategy::Queued {
                admission::audit_and_measure_drift(
                    self,
                    &c.id,
                    c.spec.quota - c.issued,
                    &self.metrics.counter_drift,
                    SERVICE,
                )
                .await;
            }
        }
        Ok(())
    }

    /// Counts one issuance attempt in `promo_admissions_total`.
    pub(crate) fn count<T>(&self, strategy: Strategy, campaign: &str, r: &Result<T, CouponError>) {
        let outcome = match r {
            Ok(_) => "issued",
            Err(e) => e.outcome(),
        };
        self.metrics
            .count_admission(SERVICE, strategy.label(), campaign, outcome);
    }
}
