//! Command line and environment of `promotion-operator` — the whole
//! configuration in one place. In the chart, the backend variables come
//! from the same Secret the services read.

use std::{net::SocketAddr, path::PathBuf};

use clap::{Args, Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "promotion-operator",
    version,
    about = "Makes Promotion resources real"
)]
pub struct Cli {
    /// Log JSON lines instead of text.
    #[arg(long, env = "PROMO_LOG_JSON", global = true)]
    pub log_json: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Watch Promotions and reconcile them.
    Run(Box<RunArgs>),
    /// Print the Promotion CRD YAML (what crds/promotion.yaml holds).
    Crd,
    /// Print the workloads the operator would apply in a namespace.
    Render(RenderArgs),
}

#[derive(Args, Debug, Clone)]
pub struct RenderArgs {
    /// Platform configuration (images, replicas, backends Secret) as YAML.
    #[arg(
        long,
        env = "PROMO_PLATFORM_CONFIG",
        default_value = "/etc/promo/platform.yaml"
    )]
    pub platform_config: PathBuf,
    #[arg(long, default_value = "default")]
    pub namespace: String,
    /// Replicas of the coupon consumer Deployment.
    #[arg(long, default_value_t = 1)]
    pub coupon_consumers: i32,
    /// Replicas of the timesale consumer Deployment.
    #[arg(long, default_value_t = 1)]
    pub timesale_consumers: i32,
}

#[derive(Args, Debug, Clone)]
pub struct RunArgs {
    /// Platform configuration (images, replicas, backends Secret) as YAML.
    #[arg(
        long,
        env = "PROMO_PLATFORM_CONFIG",
        default_value = "/etc/promo/platform.yaml"
    )]
    pub platform_config: PathBuf,
    /// Address of /healthz and /metrics.
    #[arg(long, env = "PROMO_LISTEN", default_value = "0.0.0.0:8080")]
    pub listen: SocketAddr,
    /// Redis the services keep their counters in (pre-warming, cleanup).
    #[arg(
        long,
        env = "PROMO_REDIS_URL",
        required_unless_present = "redis_cluster_nodes"
    )]
    pub redis_url: Option<String>,
    /// Or the masters of the Redis Cluster they keep them in (host:port,…).
    #[arg(
        long,
        env = "PROMO_REDIS_CLUSTER_NODES",
        value_delimiter = ',',
        conflicts_with = "redis_url"
    )]
    pub redis_cluster_nodes: Vec<String>,
    /// Key prefix the services use in Redis.
    #[arg(long, env = "PROMO_REDIS_PREFIX", default_value = "promo:")]
    pub redis_prefix: String,
    /// Kafka bootstrap servers, for consumer lag (unset: scale on pending only).
    #[arg(long, env = "PROMO_KAFKA_BROKERS")]
    pub kafka_brokers: Option<String>,
    /// Bearer token of the services' admin APIs.
    #[arg(long, env = "PROMO_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// Run only while holding a Lease (set when more than one replica runs).
    #[arg(long, env = "PROMO_LEADER_ELECTION")]
    pub leader_election: bool,
    /// Name of the leader Lease.
    #[arg(long, env = "PROMO_LEASE_NAME", default_value = "promotion-operator")]
    pub lease_name: String,
    /// Namespace of the leader Lease (the operator's own).
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    pub lease_namespace: String,
    /// This replica's identity in the Lease.
    #[arg(long, env = "POD_NAME", default_value = "promotion-operator")]
    pub identity: String,
}
