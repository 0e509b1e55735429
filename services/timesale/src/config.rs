//! The time-sale service's configuration: every flag also reads an
//! environment variable; defaults suit a local run. Flags carry a
//! `timesale-` prefix so `promo standalone` can take them beside the other
//! services'.

use std::net::SocketAddr;

use clap::{Args, Parser, Subcommand};
use promo_platform::config::BackendArgs;

use crate::Settings;

#[derive(Parser, Debug)]
#[command(
    name = "timesale-service",
    version,
    about = "Time-sale (flash sale) ordering service"
)]
pub struct Cli {
    /// Log as JSON lines.
    #[arg(long, env = "PROMO_LOG_JSON", global = true)]
    pub log_json: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Serve the HTTP API (and, with the in-process queue, its consumer).
    Serve(ServeArgs),
    /// Run the V3 consumer: persist queued orders into the database.
    Consume(ConsumeArgs),
    /// Create and migrate the database, then exit.
    Migrate(MigrateArgs),
}

#[derive(Args, Debug, Clone)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "PROMO_LISTEN", default_value = "0.0.0.0:8080")]
    pub listen: SocketAddr,
    /// Bearer token required on /admin routes (unset: admin routes are open).
    #[arg(long, env = "PROMO_ADMIN_TOKEN")]
    pub admin_token: Option<String>,
    #[command(flatten)]
    pub backends: BackendArgs,
    #[command(flatten)]
    pub timesale: TimesaleArgs,
}

#[derive(Args, Debug, Clone)]
pub struct ConsumeArgs {
    /// Address of the consumer's /healthz, /readyz and /metrics.
    #[arg(long, env = "PROMO_LISTEN", default_value = "0.0.0.0:9100")]
    pub listen: SocketAddr,
    #[command(flatten)]
    pub backends: BackendArgs,
    #[command(flatten)]
    pub timesale: TimesaleArgs,
}

#[derive(Args, Debug, Clone)]
pub struct MigrateArgs {
    #[command(flatten)]
    pub backends: BackendArgs,
}

#[derive(Args, Debug, Clone)]
pub struct TimesaleArgs {
    /// Kafka topic of V3 order events.
    #[arg(long, env = "PROMO_TIMESALE_TOPIC", default_value = crate::DEFAULT_TOPIC)]
    pub timesale_topic: String,
    /// Partitions of the topic when this service creates it.
    #[arg(long, env = "PROMO_TIMESALE_TOPIC_PARTITIONS", default_value_t = crate::DEFAULT_PARTITIONS)]
    pub timesale_topic_partitions: i32,
    /// Consumer group of the V3 consumer.
    #[arg(long, env = "PROMO_TIMESALE_CONSUMER_GROUP", default_value = crate::DEFAULT_GROUP)]
    pub timesale_consumer_group: String,
    /// Most events persisted in one database transaction.
    #[arg(long, env = "PROMO_TIMESALE_CONSUMER_BATCH", default_value_t = crate::DEFAULT_CONSUMER_BATCH)]
    pub timesale_consumer_batch: usize,
    /// Attempts of an ordering transaction that lost a lock conflict.
    #[arg(long, env = "PROMO_TIMESALE_TX_ATTEMPTS", default_value_t = crate::DEFAULT_TX_ATTEMPTS)]
    pub timesale_tx_attempts: u32,
}

impl TimesaleArgs {
    pub fn settings(&self) -> Settings {
        Settings {
            topic: self.timesale_topic.clone(),
            topic_partitions: self.timesale_topic_partitions,
            group: self.timesale_consumer_group.clone(),
            consumer_max_batch: self.timesale_consumer_batch.max(1),
            tx_attempts: self.timesale_tx_attempts.max(1),
            ..Settings::default()
        }
    }
}
