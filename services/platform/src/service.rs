//! The processes every queued service runs as: `serve` (the HTTP API, plus
//! its consumer when the queue lives in the process), `consume` (the V3
//! consumer Deployment) and `migrate`; and the pieces `promo standalone`
//! and the tests reuse to host a service in their own process.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use async_trait::async_trait;
use axum::Router;
use tokio_util::sync::CancellationToken;

use crate::{
    config::{BackendArgs, BackendError, Backends},
    consumer::{self, BatchHandler, ConsumerOptions},
    http::{
        auth::AdminToken,
        health::Readiness,
        server::{self, ServiceParts},
    },
    metrics::Metrics,
    ports::{sql::Migrations, Counters, Database, Queue},
};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A service with a database, counters and a V3 queue.
#[async_trait]
pub trait QueuedService: Send + Sync + Sized + 'static {
    /// Tunables, from the service's flags.
    type Settings: Send;
    /// The `service` metric label and log name ("coupon").
    const NAME: &'static str;
    /// Its own database on the shared server (or its SQLite file).
    const DATABASE: &'static str;
    fn migrations() -> &'static Migrations;
    async fn start(
        backends: &Backends,
        metrics: Arc<Metrics>,
        settings: Self::Settings,
    ) -> Result<Arc<Self>, BackendError>;
    fn database(&self) -> &Database;
    fn counters(&self) -> Arc<dyn Counters>;
    fn queue(&self) -> Arc<dyn Queue>;
    fn metrics(&self) -> Arc<Metrics>;
    fn consumer_options(&self) -> ConsumerOptions;
    /// What persists a batch of V3 events.
    fn batch_handler(self: &Arc<Self>) -> Arc<dyn BatchHandler>;
    /// Every route of the service (admin routes behind `token`).
    fn router(self: &Arc<Self>, token: AdminToken) -> Router;
    fn openapi() -> utoipa::openapi::OpenApi;
    /// Refreshes the remaining/pending gauges.
    async fn refresh_gauges(&self) -> Result<(), String>;
}

fn readiness<S: QueuedService>(svc: &S) -> Readiness {
    Readiness::default().database(&format!("{}_database", S::NAME), svc.database().clone())
}

/// The service's routes, docs and readiness checks, for a process to host.
pub fn parts<S: QueuedService>(svc: &Arc<S>, admin_token: AdminToken) -> ServiceParts {
    ServiceParts {
        name: S::NAME,
        router: svc.router(admin_token),
        openapi: S::openapi(),
        readiness: readiness(&**svc).counters(svc.counters()),
    }
}

/// Background work of a serving process: the gauge refresher and, when the
/// queue lives in this process, the V3 consumer.
pub fn spawn_background<S: QueuedService>(
    svc: &Arc<S>,
    embedded_consumer: bool,
    shutdown: CancellationToken,
) {
    let s = svc.clone();
    let stop = shutdown.clone();
    tokio::spawn(async move {
        while !stop.is_cancelled() {
            if let Err(e) = s.refresh_gauges().await {
                tracing::debug!(error = %e, "gauge refresh failed");
            }
            tokio::select! {
                _ = stop.cancelled() => {},
                _ = tokio::time::sleep(Duration::from_secs(5)) => {},
            }
        }
    });
    if embedded_consumer {
        spawn_consumer(svc, shutdown);
    }
}

/// Runs the V3 consumer as a task of this process.
pub fn spawn_consumer<S: QueuedService>(
    svc: &Arc<S>,
    shutdown: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(consumer::run(
        svc.queue(),
        svc.batch_handler(),
        svc.consumer_options(),
        svc.metrics(),
        shutdown,
    ))
}

/// `<service> serve`.
pub async fn serve<S: QueuedService>(
    listen: SocketAddr,
    admin_token: Option<String>,
    backend_args: &BackendArgs,
    settings: S::Settings,
) -> Result<(), BoxError> {
    let backends = Backends::connect(backend_args).await?;
    tracing::info!(backends = %backends.describe(), "{}-service starting", S::NAME);
    let metrics = Metrics::new();
    let svc = S::start(&backends, metrics.clone(), settings).await?;
    let shutdown = CancellationToken::new();
    server::cancel_on_signal(shutdown.clone());
    spawn_background(&svc, backends.queue_is_embedded(), shutdown.clone());
    let token = AdminToken(admin_token.map(Into::into));
    let app = server::assemble(vec![parts(&svc, token)], metrics);
    let listener = server::bind(listen).await?;
    tracing::info!(address = %listen, "serving; API docs at /api/docs");
    server::serve(listener, app, shutdown).await?;
    Ok(())
}

/// `<service> consume`: the consumer, with /healthz, /readyz and /metrics.
pub async fn consume<S: QueuedService>(
    listen: SocketAddr,
    backend_args: &BackendArgs,
    settings: S::Settings,
) -> Result<(), BoxError> {
    if backend_args.kafka_brokers.is_none() {
        return Err(
            "consume needs a Kafka broker: set --kafka-brokers / PROMO_KAFKA_BROKERS \
             (with the in-process queue, `serve` runs the consumer itself)"
                .into(),
        );
    }
    let backends = Backends::connect(backend_args).await?;
    let metrics = Metrics::new();
    let svc = S::start(&backends, metrics.clone(), settings).await?;
    let shutdown = CancellationToken::new();
    server::cancel_on_signal(shutdown.clone());
    let consumer = spawn_consumer(&svc, shutdown.clone());
    let app = server::finish(readiness(&*svc).router(), metrics);
    let listener = server::bind(listen).await?;
    let options = svc.consumer_options();
    tracing::info!(topic = %options.topic, group = %options.group, "consuming");
    server::serve(listener, app, shutdown).await?;
    consumer.await?;
    Ok(())
}

/// `<service> migrate`.
pub async fn migrate<S: QueuedService>(backend_args: &BackendArgs) -> Result<(), BoxError> {
    let backends = Backends::connect(backend_args).await?;
    let db = backends.database(S::DATABASE).await?;
    let applied = db.migrate(S::migrations()).await?;
    println!(
        "{} database migrated ({applied} migration(s) applied)",
        S::NAME
    );
    Ok(())
}

/// A binary's exit: success, or the error on stderr and status 1.
pub fn exit(name: &str, result: Result<(), BoxError>) -> std::process::ExitCode {
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{name}: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// The command line every queued service binary shares; `A` holds the
/// service's own flags (prefixed with its name, so `promo standalone` can
/// take several services' flags side by side).
#[derive(clap::Parser, Debug)]
pub struct Cli<A: clap::Args> {
    /// Log as JSON lines.
    #[arg(long, env = "PROMO_LOG_JSON", global = true)]
    pub log_json: bool,
    #[command(subcommand)]
    pub command: Command<A>,
}

#[derive(clap::Subcommand, Debug)]
pub enum Command<A: clap::Args> {
    /// Serve the HTTP API (and, with the in-process queue, its consumer).
    Serve(ServeArgs<A>),
    /// Run the V3 consumer: persist queued events into the database.
    Consume(ConsumeArgs<A>),
    /// Create and migrate the database, then exit.
    Migrate(MigrateArgs),
}

#[derive(clap::Args, Debug, Clone)]
pub struct ServeArgs<A: clap::Args> {
    /// Address to listen on.
    #[arg(long, env = "PROMO_LISTEN", default_value = "0.0.0.0:8080")]
    pub listen: SocketAddr,
    /// Bearer token required on /admin routes (unset: admin routes are open).
    #[arg(long, env = "PROMO_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    #[command(flatten)]
    pub backends: BackendArgs,
    #[command(flatten)]
    pub service: A,
}

#[derive(clap::Args, Debug, Clone)]
pub struct ConsumeArgs<A: clap::Args> {
    /// Address of the consumer's /healthz, /readyz and /metrics.
    #[arg(long, env = "PROMO_LISTEN", default_value = "0.0.0.0:9100")]
    pub listen: SocketAddr,
    #[command(flatten)]
    pub backends: BackendArgs,
    #[command(flatten)]
    pub service: A,
}

#[derive(clap::Args, Debug, Clone)]
pub struct MigrateArgs {
    #[command(flatten)]
    pub backends: BackendArgs,
}

/// A service's own flags, and the settings they make.
pub trait ServiceArgs: clap::Args + Send {
    type Service: QueuedService;
    fn settings(&self) -> <Self::Service as QueuedService>::Settings;
}

/// The whole `main` of a service binary named `name`.
pub async fn main<A: ServiceArgs>(
    name: &'static str,
    about: &'static str,
) -> std::process::ExitCode {
    use clap::{CommandFactory, FromArgMatches};
    let matches = Cli::<A>::command()
        .name(name)
        .bin_name(name)
        .about(about)
        .version(env!("CARGO_PKG_VERSION"))
        .get_matches();
    let cli = match Cli::<A>::from_arg_matches(&matches) {
        Ok(c) => c,
        Err(e) => e.exit(),
    };
    crate::telemetry::init(cli.log_json);
    let result = match cli.command {
        Command::Serve(a) => {
            serve::<A::Service>(a.listen, a.admin_token, &a.backends, a.service.settings()).await
        }
        Command::Consume(a) => {
            consume::<A::Service>(a.listen, &a.backends, a.service.settings()).await
        }
        Command::Migrate(a) => migrate::<A::Service>(&a.backends).await,
    };
    exit(name, result)
}

/// Implements [`QueuedService`] for a service struct with the usual fields
/// (`db`, `counters`, `queue`, `metrics`, `settings` with
/// `consumer_options()`), an `async fn start(backends, metrics, settings)`,
/// an `async fn refresh_gauges()`, a batch handler built as
/// `$handler { svc }`, and an `http` module with `router` and `openapi`.
#[macro_export]
macro_rules! queued_service {
    ($svc:ty, settings: $settings:ty, handler: $handler:path, http: $http:path,
     migrations: $migrations:expr, name: $name:expr, database: $database:expr $(,)?) => {
        #[async_trait::async_trait]
        impl $crate::service::QueuedService for $svc {
            type Settings = $settings;
            const NAME: &'static str = $name;
            const DATABASE: &'static str = $database;

            fn migrations() -> &'static $crate::ports::sql::Migrations {
                &$migrations
            }

            async fn start(
                backends: &$crate::config::Backends,
                metrics: std::sync::Arc<$crate::metrics::Metrics>,
                settings: $settings,
            ) -> Result<std::sync::Arc<Self>, $crate::config::BackendError> {
                <$svc>::start(backends, metrics, settings).await
            }

            fn database(&self) -> &$crate::ports::Database {
                &self.db
            }

            fn counters(&self) -> std::sync::Arc<dyn $crate::ports::Counters> {
                self.counters.clone()
            }

            fn queue(&self) -> std::sync::Arc<dyn $crate::ports::Queue> {
                self.queue.clone()
            }

            fn metrics(&self) -> std::sync::Arc<$crate::metrics::Metrics> {
                self.metrics.clone()
            }

            fn consumer_options(&self) -> $crate::consumer::ConsumerOptions {
                self.settings.consumer_options()
            }

            fn batch_handler(
                self: &std::sync::Arc<Self>,
            ) -> std::sync::Arc<dyn $crate::consumer::BatchHandler> {
                use $handler as Handler;
                std::sync::Arc::new(Handler { svc: self.clone() })
            }

            fn router(
                self: &std::sync::Arc<Self>,
                token: $crate::http::auth::AdminToken,
            ) -> axum::Router {
                use $http as http;
                http::router(self.clone(), token)
            }

            fn openapi() -> utoipa::openapi::OpenApi {
                use $http as http;
                http::openapi()
            }

            async fn refresh_gauges(&self) -> Result<(), String> {
                <$svc>::refresh_gauges(self)
                    .await
                    .map_err(|e| e.to_string())
            }
        }
    };
}
