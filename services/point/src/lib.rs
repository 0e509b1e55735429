//! The point service: an append-only ledger that is the truth (EARN, USE,
//! REFUND, EXPIRE entries with balanceAfter), accounts with optimistic
//! locking, expiry oldest-first, idempotent mutations, and balance reads
//! through a cache-aside Redis entry.
//!
//! Follow a request: `http/` → `domain/ledger.rs` (mutations) or
//! `domain/view.rs` (balance reads) → `store/` (SQL).

pub mod config;
pub mod domain;
pub mod http;
pub mod store;

use std::{sync::Arc, time::Duration};

use async_trait::async_trait;
use chrono::Utc;
use promo_platform::{
    config::{BackendError, Backends},
    http::auth::AdminToken,
    metrics::Metrics,
    outbox::Outbox,
    ports::{sql::Migrations, Counters, Database, Queue, VersionedCache},
    service::Service,
    time::to_ms,
};

use domain::{ledger, PointError};

/// The `service` metric label and the log target.
pub const SERVICE: &str = promo_contracts::point::SERVICE;
/// The service's own database (on the shared MySQL server, or `promo_point.db`).
pub const DATABASE: &str = "promo_point";

/// Tunables. `attempts`, `cache_ttl` and `expiring_soon` have a flag in
/// [`config`]; the others keep these defaults in production.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Tries of a mutation that lost its optimistic version check.
    pub attempts: u32,
    /// Longest life of a cached balance.
    pub cache_ttl: Duration,
    /// How far ahead `expiringSoon` looks.
    pub expiring_soon: Duration,
    /// Users expired per sweep tick.
    pub sweep_batch: i64,
    /// Longest wait for the cache: past it, a read goes to the database and
    /// an invalidation is given up (the cache is an optimisation).
    pub cache_timeout: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            attempts: 10,
            cache_ttl: Duration::from_secs(60),
            expiring_soon: Duration::from_secs(30 * 24 * 3600),
            sweep_batch: 500,
            cache_timeout: Duration::from_millis(200),
        }
    }
}

pub struct PointService {
    pub db: Database,
    pub counters: Arc<dyn Counters>,
    pub cache: Arc<dyn VersionedCache>,
    pub metrics: Arc<Metrics>,
    pub settings: Settings,
    /// Every ledger entry's event (`dev.promo.points.*`), and the queue its
    /// relay publishes them to.
    pub outbox: Arc<Outbox>,
    pub queue: Arc<dyn Queue>,
}

impl PointService {
    pub async fn start(
        backends: &Backends,
        metrics: Arc<Metrics>,
        settings: Settings,
    ) -> Result<Arc<Self>, BackendError> {
        let db = backends.database(DATABASE).await?;
        db.migrate(&store::MIGRATIONS).await?;
        Ok(Self::with_database(db, backends, metrics, settings))
    }

    /// With a database already opened and migrated.
    pub fn with_database(
        db: Database,
        backends: &Backends,
        metrics: Arc<Metrics>,
        settings: Settings,
    ) -> Arc<Self> {
        Arc::new(Self {
            outbox: Outbox::from_args(db.clone(), SERVICE, &backends.args, metrics.clone()),
            queue: backends.queue.clone(),
            db,
            counters: backends.counters.clone(),
            cache: backends.cache.clone(),
            metrics,
            settings,
        })
    }

    /// The periodic expiry sweep: every user with due points gets the same
    /// expiry a read or a mutation would have run. Returns how many users.
    pub async fn sweep(&self) -> Result<usize, PointError> {
        let now = to_ms(Utc::now());
        let users =
            store::users_with_due_lots(self.db.pool(), now, self.settings.sweep_batch).await?;
        for user in &users {
            ledger::expire_now(self, user).await?;
        }
        Ok(users.len())
    }
}

#[async_trait]
impl Service for PointService {
    type Settings = Settings;
    const NAME: &'static str = SERVICE;
    const DATABASE: &'static str = DATABASE;

    fn migrations() -> &'static Migrations {
        &store::MIGRATIONS
    }

    async fn start(
        backends: &Backends,
        metrics: Arc<Metrics>,
        settings: Settings,
    ) -> Result<Arc<Self>, BackendError> {
        PointService::start(backends, metrics, settings).await
    }

    fn database(&self) -> &Database {
        &self.db
    }

    fn counters(&self) -> Arc<dyn Counters> {
        self.counters.clone()
    }

    fn metrics(&self) -> Arc<Metrics> {
        self.metrics.clone()
    }

    fn router(self: &Arc<Self>, token: AdminToken) -> axum::Router {
        http::router(self.clone(), token)
    }

    fn openapi() -> utoipa::openapi::OpenApi {
        http::openapi()
    }

    async fn tick(&self) -> Result<(), String> {
        self.sweep().await.map(|_| ()).map_err(|e| e.to_string())
    }

    fn outbox(&self) -> Option<Arc<Outbox>> {
        Some(self.outbox.clone())
    }

    /// The outbox relay.
    fn background(self: &Arc<Self>, shutdown: tokio_util::sync::CancellationToken) {
        self.outbox.spawn(self.queue.clone(), shutdown);
    }
}
