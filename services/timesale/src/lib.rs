//! The time-sale service: products on sale with a stock and a per-user
//! limit, ordering in three strategies (V1 optimistic database, V2 Redis
//! stock, V3 queued), order status, holds that are confirmed by payment or
//! expire, cancel with restock.
//!
//! Follow a request: `http/` (route, extractors) → `domain/ordering/<strategy>.rs`
//! (the rules) → `store.rs` (SQL). What the queued core needs of sales
//! (their SQL, how a batch of orders is decided) is `consumer.rs`; the core
//! itself — shared with the coupon service — is `promo_platform::queued`.

pub mod config;
pub mod domain;
pub mod events;
pub mod http;
pub mod sales;
pub mod store;

use std::sync::{Arc, OnceLock};

use axum::Router;
use promo_platform::{
    group_commit::{self, GroupCommit},
    http::auth::AdminToken,
    ports::sql::Migrations,
    queued::{self, Core, Queued},
};

use domain::{ordering::redis_stock, Order, TimesaleError};

pub use sales::Sales;

/// The `service` metric label and the log target.
pub const SERVICE: &str = promo_contracts::timesale::SERVICE;
/// The service's own database (on the shared MySQL server, or `promo_timesale.db`).
pub const DATABASE: &str = "promo_timesale";

/// Default of `--timesale-tx-attempts`.
pub const DEFAULT_TX_ATTEMPTS: u32 = 6;
/// Default of `--timesale-hold-sweep-ms`: due holds end within about this
/// long of their expiry.
pub const DEFAULT_HOLD_SWEEP_MS: u64 = 1000;

/// Tunables: the queued core's ([`queued::Settings`]) and the attempts of
/// a conflicting transaction; both have flags in [`config`].
#[derive(Debug, Clone)]
pub struct Settings {
    pub queued: queued::Settings,
    /// Attempts of an ordering transaction that lost a lock conflict.
    pub tx_attempts: u32,
    /// How often the hold sweep runs ([`domain::holds`]).
    pub hold_sweep: std::time::Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            queued: queued::Settings::of::<Sales>(),
            tx_attempts: DEFAULT_TX_ATTEMPTS,
            hold_sweep: std::time::Duration::from_millis(DEFAULT_HOLD_SWEEP_MS),
        }
    }
}

/// The time-sale service: the queued core over sales, V2's group commit
/// and the transaction retry setting.
pub struct TimesaleService {
    pub core: Arc<Core<Sales>>,
    pub settings: Settings,
    v2: OnceLock<V2GroupCommit>,
}

type V2GroupCommit = GroupCommit<redis_stock::Request, Result<Order, TimesaleError>>;

impl Queued for TimesaleService {
    type Domain = Sales;
    type Settings = Settings;
    const DATABASE: &'static str = DATABASE;

    fn migrations() -> &'static Migrations {
        &store::MIGRATIONS
    }

    fn core_settings(settings: &Settings) -> queued::Settings {
        settings.queued.clone()
    }

    fn with_core(core: Arc<Core<Sales>>, settings: Settings) -> Arc<Self> {
        Arc::new(Self {
            core,
            settings,
            v2: OnceLock::new(),
        })
    }

    fn core(&self) -> &Arc<Core<Sales>> {
        &self.core
    }

    fn routes(self: &Arc<Self>, token: AdminToken) -> Router {
        http::router(self.clone(), token)
    }

    fn api_doc() -> utoipa::openapi::OpenApi {
        http::openapi()
    }

    /// The hold sweep ([`domain::holds`]).
    fn background(self: &Arc<Self>, shutdown: tokio_util::sync::CancellationToken) {
        domain::holds::spawn_sweeper(self, self.settings.hold_sweep, shutdown);
    }
}

impl TimesaleService {
    /// V2's group commit, started on first use. Its task holds the service
    /// weakly, so dropping the service ends it.
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
}
