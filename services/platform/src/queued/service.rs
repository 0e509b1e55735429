//! Every [`Queued`] service is a [`Service`] with a V3 consumer.

use std::sync::Arc;

use async_trait::async_trait;
use axum::Router;
use tokio_util::sync::CancellationToken;

use super::{Core, Domain, Settings};
use crate::{
    config::{BackendError, Backends},
    http::auth::AdminToken,
    metrics::Metrics,
    ports::{sql::Migrations, Counters, Database},
    service::{ConsumerParts, Service},
};

/// A queued service: a [`Core`] plus its own routes and tunables. Every
/// `Queued` is a [`Service`] with a V3 consumer (the core's batch).
pub trait Queued: Send + Sync + Sized + 'static {
    type Domain: Domain;
    /// The core's [`Settings`] and the service's own tunables.
    type Settings: Send;
    /// Its own database on the shared server (or its SQLite file).
    const DATABASE: &'static str;
    fn migrations() -> &'static Migrations;
    /// The core's part of the service's settings.
    fn core_settings(settings: &Self::Settings) -> Settings;
    /// The service on its opened core.
    fn with_core(core: Arc<Core<Self::Domain>>, settings: Self::Settings) -> Arc<Self>;
    fn core(&self) -> &Arc<Core<Self::Domain>>;
    /// Every route of the service (admin routes behind `token`).
    fn routes(self: &Arc<Self>, token: AdminToken) -> Router;
    fn api_doc() -> utoipa::openapi::OpenApi;
    /// The service's own background tasks ([`Service::background`]).
    fn background(self: &Arc<Self>, shutdown: CancellationToken) {
        let _ = shutdown;
    }
}

/// A queued service on a database already opened and migrated (tests).
pub async fn with_database<Q: Queued>(
    db: Database,
    backends: &Backends,
    metrics: Arc<Metrics>,
    settings: Q::Settings,
) -> Result<Arc<Q>, BackendError> {
    let core = Core::with_database(db, backends, metrics, Q::core_settings(&settings)).await?;
    Ok(Q::with_core(core, settings))
}

#[async_trait]
impl<Q: Queued> Service for Q {
    type Settings = <Q as Queued>::Settings;
    const NAME: &'static str = <Q::Domain as Domain>::SERVICE;
    const DATABASE: &'static str = Q::DATABASE;
    const QUEUED: bool = true;

    fn migrations() -> &'static Migrations {
        <Q as Queued>::migrations()
    }

    /// Opens (creating and migrating) the service's database and its topic.
    async fn start(
        backends: &Backends,
        metrics: Arc<Metrics>,
        settings: <Q as Queued>::Settings,
    ) -> Result<Arc<Self>, BackendError> {
        let core = Core::open(
            backends,
            <Q as Queued>::DATABASE,
            <Q as Queued>::migrations(),
            metrics,
            Q::core_settings(&settings),
        )
        .await?;
        Ok(Q::with_core(core, settings))
    }

    fn database(&self) -> &Database {
        &self.core().db
    }

    fn counters(&self) -> Arc<dyn Counters> {
        self.core().counters.clone()
    }

    fn metrics(&self) -> Arc<Metrics> {
        self.core().metrics.clone()
    }

    fn router(self: &Arc<Self>, token: AdminToken) -> Router {
        self.routes(token)
    }

    fn openapi() -> utoipa::openapi::OpenApi {
        Q::api_doc()
    }

    async fn tick(&self) -> Result<(), String> {
        self.core()
            .refresh_gauges()
            .await
            .map_err(|e| e.to_string())
    }

    fn outbox(&self) -> Option<Arc<crate::outbox::Outbox>> {
        Some(self.core().outbox.clone())
    }

    /// The outbox relay, and the service's own tasks.
    fn background(self: &Arc<Self>, shutdown: CancellationToken) {
        let core = self.core();
        core.outbox.spawn(core.queue.clone(), shutdown.clone());
        Queued::background(self, shutdown)
    }

    fn consumer(self: &Arc<Self>) -> Option<ConsumerParts> {
        let core = self.core();
        Some(ConsumerParts {
            queue: core.queue.clone(),
            handler: core.clone(),
            options: core
                .settings
                .consumer_options(<Q::Domain as Domain>::SERVICE),
        })
    }
}
