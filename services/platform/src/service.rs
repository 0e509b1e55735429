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

/// A service with a database and counters; with a V3 queue when
/// [`Service::consumer`] says so.
#[async_trait]
pub trait Service: Send + Sync + Sized + 'static {
    /// Tunables, from the service's flags.
    type Settings: Send;
    /// The `service` metric label and log name ("coupon").
    const NAME: &'static str;
    /// Its own database on the shared server (or its SQLite file).
    const DATABASE: &'static str;
    /// Whether it has a V3 consumer (and so a `consume` subcommand).
    const QUEUED: bool = false;
    fn migrations() -> &'static Migrations;
    async fn start(
        backends: &Backends,
        metrics: Arc<Metrics>,
        settings: Self::Settings,
    ) -> Result<Arc<Self>, BackendError>;
    fn database(&self) -> &Database;
    fn counters(&self) -> Arc<dyn Counters>;
    fn metrics(&self) -> Arc<Metrics>;
    /// Every route of the service (admin routes behind `token`).
    fn router(self: &Arc<Self>, token: AdminToken) -> Router;
    fn openapi() -> utoipa::openapi::OpenApi;
    /// Background work every few seconds (gauges, sweeps).
    async fn tick(&self) -> Result<(), String>;
    /// Background tasks of the service's own, on their own schedule (the
    /// time sale's hold expiry), ended by `shutdown`.
    fn background(self: &Arc<Self>, shutdown: CancellationToken) {
        let _ = shutdown;
    }
    /// Its outbox of state changes, when it publishes them.
    fn outbox(&self) -> Option<Arc<crate::outbox::Outbox>> {
        None
    }
    /// The V3 consumer: its queue, what persists a batch, and its options.
    fn consumer(self: &Arc<Self>) -> Option<ConsumerParts> {
        None
    }
}

/// What runs a service's V3 consumer.
pub struct ConsumerParts {
    pub queue: Arc<dyn Queue>,
    pub handler: Arc<dyn BatchHandler>,
    pub options: ConsumerOptions,
}

/// The database, and for a queued service its topic.
fn readiness<S: Service>(svc: &Arc<S>) -> Readiness {
    let r = Readiness::default().database(&format!("{}_database", S::NAME), svc.database().clone());
    match svc.consumer() {
        Some(c) => r.queue(c.queue, c.options.topic),
        None => r,
    }
}

/// The service's routes, docs and readiness checks, for a process to host.
/// `hosts_consumer`: its V3 consumer runs in this process, so readiness
/// also reports whether it goes round its loop.
pub fn parts<S: Service>(
    svc: &Arc<S>,
    admin_token: AdminToken,
    hosts_consumer: bool,
) -> ServiceParts {
    let mut readiness = readiness(svc).counters(svc.counters());
    if hosts_consumer && S::QUEUED {
        readiness = readiness.consumer(svc.metrics(), S::NAME);
    }
    ServiceParts {
        name: S::NAME,
        events: svc.outbox().map(|o| (o, admin_token.clone())),
        router: svc.router(admin_token),
        openapi: S::openapi(),
        readiness,
    }
}

/// Background work of a serving process: [`Service::tick`],
/// [`Service::background`] and, when the queue lives in this process, the
/// V3 consumer.
pub fn spawn_background<S: Service>(
    svc: &Arc<S>,
    embedded_consumer: bool,
    shutdown: CancellationToken,
) {
    svc.background(shutdown.clone());
    let s = svc.clone();
    let stop = shutdown.clone();
    tokio::spawn(async move {
        while !stop.is_cancelled() {
            if let Err(e) = s.tick().await {
                tracing::debug!(error = %e, "background tick failed");
            }
            tokio::select! {
                _ = stop.cancelled() => {},
                _ = tokio::time::sleep(Duration::from_secs(5)) => {},
            }
        }
    });
    if embedded_consumer && S::QUEUED {
        spawn_consumer(svc, shutdown);
    }
}

/// Runs the V3 consumer as a task of this process (nothing for a service
/// without one).
pub fn spawn_consumer<S: Service>(
    svc: &Arc<S>,
    shutdown: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    match svc.consumer() {
        Some(c) => tokio::spawn(consumer::run(
            c.queue,
            c.handler,
            c.options,
            svc.metrics(),
            shutdown,
        )),
        None => tokio::spawn(async {}),
    }
}

/// `<service> serve`.
pub async fn serve<S: Service>(
    listen: SocketAddr,
    admin_token: Option<String>,
    backend_args: &BackendArgs,
    limits: server::Limits,
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
    let app = server::assemble(
        vec![parts(&svc, token, backends.queue_is_embedded())],
        metrics,
    );
    let listener = server::bind(listen).await?;
    tracing::info!(address = %listen, "serving; API docs at /api/docs");
    server::serve_with(listener, app, shutdown, limits).await?;
    Ok(())
}

/// `<service> consume`: the consumer, with /healthz, /readyz and /metrics.
pub async fn consume<S: Service>(
    listen: SocketAddr,
    backend_args: &BackendArgs,
    settings: S::Settings,
) -> Result<(), BoxError> {
    if !S::QUEUED {
        return Err(format!("the {} service has no queue to consume", S::NAME).into());
    }
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
    let readiness = readiness(&svc).consumer(svc.metrics(), S::NAME);
    let app = server::finish(readiness.router(), metrics);
    let listener = server::bind(listen).await?;
    tracing::info!("consuming");
    server::serve(listener, app, shutdown).await?;
    consumer.await?;
    Ok(())
}

/// `<service> migrate`.
pub async fn migrate<S: Service>(backend_args: &BackendArgs) -> Result<(), BoxError> {
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
    pub http: server::HttpArgs,
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
    type Service: Service;
    fn settings(&self) -> <Self::Service as Service>::Settings;
}

/// The whole `main` of a service binary named `name`.
pub async fn main<A: ServiceArgs>(
    name: &'static str,
    about: &'static str,
) -> std::process::ExitCode {
    use clap::{CommandFactory, FromArgMatches};
    let mut command = Cli::<A>::command();
    if !A::Service::QUEUED {
        command = command.mut_subcommand("consume", |c| c.hide(true));
    }
    let matches = command
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
            serve::<A::Service>(
                a.listen,
                a.admin_token,
                &a.backends,
                a.http.limits(),
                a.service.settings(),
            )
            .await
        }
        Command::Consume(a) => {
            consume::<A::Service>(a.listen, &a.backends, a.service.settings()).await
        }
        Command::Migrate(a) => migrate::<A::Service>(&a.backends).await,
    };
    exit(name, result)
}
