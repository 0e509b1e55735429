//! The coupon service: campaigns, first-come-first-served issuance in three
//! strategies (V1 database, V2 Redis lock, V3 queued), redemption.
//!
//! Follow a request: `http/` (route, extractors) → `domain/issue/<strategy>.rs`
//! (the rules) → `store/` (SQL). The V3 consumer is `consumer.rs`.

pub mod campaigns;
pub mod config;
pub mod domain;
pub mod events;
pub mod http;
pub mod store;

use std::{
    sync::{Arc, OnceLock},
    time::Duration,
};

use axum::Router;
use promo_platform::{
    group_commit::{self, GroupCommit},
    http::auth::AdminToken,
    ports::sql::Migrations,
    queued::{self, Core, Queued},
};

use domain::{issue::redis_lock, Coupon, CouponError};

pub use campaigns::Campaigns;

/// The `service` metric label and the log target.
pub const SERVICE: &str = promo_contracts::coupon::SERVICE;
/// The service's own database (on the shared MySQL server, or `promo_coupon.db`).
pub const DATABASE: &str = "promo_coupon";

/// Default of `--coupon-lock-wait-ms`.
pub const DEFAULT_LOCK_WAIT_MS: u64 = 5000;

/// Tunables: the queued core's ([`queued::Settings`]) and V2's lock.
/// `lock_wait` has a flag in [`config`]; `lock_ttl` keeps its default in
/// production (tests shorten it).
#[derive(Debug, Clone)]
pub struct Settings {
    pub queued: queued::Settings,
    /// How long V2 waits for a user's lock before answering 503.
    pub lock_wait: Duration,
    /// Lock lifetime; correctness never depends on it (the database decides).
    pub lock_ttl: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            queued: queued::Settings::of::<Campaigns>(),
            lock_wait: Duration::from_millis(DEFAULT_LOCK_WAIT_MS),
            lock_ttl: Duration::from_secs(5),
        }
    }
}

/// The coupon service: the queued core over campaigns, V2's group commit
/// and its lock settings.
pub struct CouponService {
    pub core: Arc<Core<Campaigns>>,
    pub settings: Settings,
    v2: OnceLock<V2GroupCommit>,
}

type V2GroupCommit = GroupCommit<redis_lock::Request, Result<Coupon, CouponError>>;

impl Queued for CouponService {
    type Domain = Campaigns;
    type Settings = Settings;
    const DATABASE: &'static str = DATABASE;

    fn migrations() -> &'static Migrations {
        &store::MIGRATIONS
    }

    fn core_settings(settings: &Settings) -> queued::Settings {
        settings.queued.clone()
    }

    fn with_core(core: Arc<Core<Campaigns>>, settings: Settings) -> Arc<Self> {
        Arc::new(Self {
            core,
            settings,
            v2: OnceLock::new(),
        })
    }

    fn core(&self) -> &Arc<Core<Campaigns>> {
        &self.core
    }

    fn routes(self: &Arc<Self>, token: AdminToken) -> Router {
        http::router(self.clone(), token)
    }

    fn api_doc() -> utoipa::openapi::OpenApi {
        http::openapi()
    }
}

impl CouponService {
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
}
