//! `promotion-operator run | crd | render`.

use std::{fs, path::Path, sync::Arc};

use anyhow::Context as _;
use axum::{routing::get, Router};
use clap::Parser;
use kube::Client;
use kube_lease_manager::LeaseManagerBuilder;
use promo_platform::{
    http::{health::Readiness, server},
    ports::{
        counters::{RedisCounters, COMMAND_TIMEOUT},
        queue::KafkaQueue,
    },
    telemetry,
};
use promotion_operator::{
    admin::HttpAdmin,
    config::{Cli, Command, RunArgs},
    controller::{self, RunParts},
    desired::{self, ConsumerReplicas, Desired},
    metrics::Metrics,
    platform::PlatformConfig,
};
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Crd => {
            print!("{}", promotion_crd::crd_yaml());
            Ok(())
        }
        Command::Render(args) => {
            let platform = read_platform(&args.platform_config)?;
            let replicas = ConsumerReplicas {
                coupon: args.coupon_consumers,
                timesale: args.timesale_consumers,
            };
            for obj in desired::desired(&platform, &args.namespace, &[], replicas) {
                let yaml = match obj {
                    Desired::Deployment(d) => serde_yaml::to_string(&d)?,
                    Desired::Service(s) => serde_yaml::to_string(&s)?,
                };
                print!("---\n{yaml}");
            }
            Ok(())
        }
        Command::Run(args) => {
            telemetry::init(cli.log_json);
            run(*args).await
        }
    }
}

fn read_platform(path: &Path) -> anyhow::Result<PlatformConfig> {
    let text = fs::read_to_string(path).with_context(|| {
        format!(
            "cannot read the platform configuration {} (set --platform-config / PROMO_PLATFORM_CONFIG)",
            path.display()
        )
    })?;
    PlatformConfig::from_yaml(&text)
        .with_context(|| format!("{} is not a valid platform configuration", path.display()))
}

async fn run(args: RunArgs) -> anyhow::Result<()> {
    let platform = read_platform(&args.platform_config)?;
    let client = Client::try_default()
        .await
        .context("no Kubernetes API reachable (in-cluster config or KUBECONFIG)")?;
    let counters = match &args.redis_url {
        Some(url) => RedisCounters::connect(url, &args.redis_prefix)
            .await
            .with_context(|| format!("cannot reach Redis at {url} (PROMO_REDIS_URL)"))?,
        None => {
            let nodes = &args.redis_cluster_nodes;
            RedisCounters::connect_cluster(nodes, &args.redis_prefix, COMMAND_TIMEOUT)
                .await
                .with_context(|| {
                    format!(
                        "cannot reach the Redis Cluster at {} (PROMO_REDIS_CLUSTER_NODES)",
                        nodes.join(",")
                    )
                })?
        }
    };
    let lag = match &args.kafka_brokers {
        Some(b) => Some(Arc::new(
            KafkaQueue::new(b)
                .with_context(|| format!("bad Kafka brokers {b} (PROMO_KAFKA_BROKERS)"))?,
        ) as _),
        None => None,
    };
    let metrics = Arc::new(Metrics::new());
    let shutdown = CancellationToken::new();
    server::cancel_on_signal(shutdown.clone());

    let m = metrics.clone();
    // Ready while Redis (pools are seeded and cleaned there) answers; the
    // Kubernetes API is the client's own affair (it retries).
    let readiness = Readiness::default().counters(Arc::new(counters.clone()));
    let app = Router::new()
        .route("/metrics", get(move || async move { m.render() }))
        .merge(readiness.router());
    let listener = server::bind(args.listen)
        .await
        .map_err(anyhow::Error::msg)?;
    tracing::info!(address = %args.listen, "health and metrics");
    tokio::spawn(server::serve(listener, app, shutdown.clone()));

    // Followers wait here; a leader that loses its Lease stops and exits, so
    // two replicas never reconcile at once.
    let leadership = if args.leader_election {
        let manager = LeaseManagerBuilder::new(client.clone(), &args.lease_name)
            .with_namespace(&args.lease_namespace)
            .with_identity(&args.identity)
            .build()
            .await
            .context("cannot set up the leader Lease")?;
        let (mut leader, task) = manager.watch().await;
        tracing::info!(lease = %args.lease_name, identity = %args.identity, "waiting for the leader Lease");
        while !*leader.borrow_and_update() {
            tokio::select! {
                changed = leader.changed() => changed.context("lease manager stopped")?,
                _ = shutdown.cancelled() => return Ok(()),
            }
        }
        metrics.leader.set(1);
        tracing::info!("leading");
        let lost = shutdown.clone();
        tokio::spawn(async move {
            while leader.changed().await.is_ok() {
                if !*leader.borrow() {
                    tracing::warn!("lost the leader Lease; stopping");
                    break;
                }
            }
            lost.cancel();
        });
        Some(task)
    } else {
        metrics.leader.set(1);
        None
    };

    let admin = Arc::new(HttpAdmin::new(platform.clone(), args.admin_token.clone()));
    let stop = shutdown.clone();
    controller::run(
        RunParts {
            client,
            platform,
            admin,
            counters: Arc::new(counters),
            lag,
            metrics: metrics.clone(),
        },
        async move { stop.cancelled().await },
    )
    .await;
    metrics.leader.set(0);
    if let Some(task) = leadership {
        task.abort();
    }
    tracing::info!("stopped");
    Ok(())
}
