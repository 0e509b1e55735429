//! The `serve`, `consume` and `migrate` entry points, and the pieces
//! `promo standalone` reuses to host this service in its own process.

use std::{sync::Arc, time::Duration};

use promo_platform::{
    config::Backends,
    consumer,
    http::{
        auth::AdminToken,
        health::Readiness,
        server::{self, ServiceParts},
    },
    metrics::Metrics,
};
use tokio_util::sync::CancellationToken;

use crate::{
    config::{ConsumeArgs, MigrateArgs, ServeArgs},
    consumer::OrderConsumer,
    http, store, TimesaleService, SERVICE,
};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The service's routes, docs and readiness checks, for a process to host.
pub fn parts(svc: &Arc<TimesaleService>, admin_token: AdminToken) -> ServiceParts {
    ServiceParts {
        name: SERVICE,
        router: http::router(svc.clone(), admin_token),
        openapi: http::openapi(),
        readiness: Readiness::default()
            .database("timesale_database", svc.db.clone())
            .counters(svc.counters.clone()),
    }
}

/// Background work of a serving process: the gauge refresher and, when the
/// queue lives in this process, the V3 consumer.
pub fn spawn_background(
    svc: &Arc<TimesaleService>,
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
pub fn spawn_consumer(
    svc: &Arc<TimesaleService>,
    shutdown: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    let handler = Arc::new(OrderConsumer { svc: svc.clone() });
    tokio::spawn(consumer::run(
        svc.queue.clone(),
        handler,
        svc.settings.consumer_options(),
        svc.metrics.clone(),
        shutdown,
    ))
}

pub async fn serve(args: ServeArgs) -> Result<(), BoxError> {
    let backends = Backends::connect(&args.backends).await?;
    tracing::info!(backends = %backends.describe(), "timesale-service starting");
    let metrics = Metrics::new();
    let svc = TimesaleService::start(&backends, metrics.clone(), args.timesale.settings()).await?;
    let shutdown = CancellationToken::new();
    server::cancel_on_signal(shutdown.clone());
    spawn_background(&svc, backends.queue_is_embedded(), shutdown.clone());
    let token = AdminToken(args.admin_token.map(Into::into));
    let app = server::assemble(vec![parts(&svc, token)], metrics);
    let listener = server::bind(args.listen).await?;
    tracing::info!(address = %args.listen, "serving; API docs at /api/docs");
    server::serve(listener, app, shutdown).await?;
    Ok(())
}

pub async fn consume(args: ConsumeArgs) -> Result<(), BoxError> {
    if args.backends.kafka_brokers.is_none() {
        return Err(
            "consume needs a Kafka broker: set --kafka-brokers / PROMO_KAFKA_BROKERS \
                    (with the in-process queue, `serve` runs the consumer itself)"
                .into(),
        );
    }
    let backends = Backends::connect(&args.backends).await?;
    let metrics = Metrics::new();
    let svc = TimesaleService::start(&backends, metrics.clone(), args.timesale.settings()).await?;
    let shutdown = CancellationToken::new();
    server::cancel_on_signal(shutdown.clone());
    let consumer = spawn_consumer(&svc, shutdown.clone());
    let readiness = Readiness::default().database("timesale_database", svc.db.clone());
    let app = server::finish(readiness.router(), metrics);
    let listener = server::bind(args.listen).await?;
    tracing::info!(topic = %svc.settings.topic, group = %svc.settings.group, "consuming");
    server::serve(listener, app, shutdown).await?;
    consumer.await?;
    Ok(())
}

pub async fn migrate(args: MigrateArgs) -> Result<(), BoxError> {
    let backends = Backends::connect(&args.backends).await?;
    let db = backends.database(crate::DATABASE).await?;
    let applied = db.migrate(&store::MIGRATIONS).await?;
    println!("timesale database migrated ({applied} migration(s) applied)");
    Ok(())
}
