//! Backend selection shared by every binary. Each field is a flag and an
//! environment variable; leaving a production URL out selects the embedded
//! implementation of that port.

use std::{path::PathBuf, sync::Arc};

use crate::ports::{
    counters::CountersError,
    sql::{self, SqlError},
    Counters, Database, KafkaQueue, LocalQueue, MemoryCache, MemoryCounters, Queue, QueueError,
    RedisCache, RedisCounters, VersionedCache,
};

#[derive(clap::Args, Debug, Clone)]
pub struct BackendArgs {
    /// MySQL/MariaDB server URL (mysql://user:pass@host:3306). Each service
    /// uses its own database on it, created at start. Default: SQLite files
    /// under --data-dir.
    #[arg(long, env = "PROMO_MYSQL_URL")]
    pub mysql_url: Option<String>,

    /// Redis URL (redis://host:6379/0). Default: in-process counters and locks.
    #[arg(long, env = "PROMO_REDIS_URL", conflicts_with = "redis_cluster_nodes")]
    pub redis_url: Option<String>,

    /// Masters of a Redis Cluster (host:port,host:port,…; any of them will
    /// do, the rest are discovered), instead of one Redis server.
    #[arg(long, env = "PROMO_REDIS_CLUSTER_NODES", value_delimiter = ',')]
    pub redis_cluster_nodes: Vec<String>,

    /// Kafka bootstrap servers (host:9092,host2:9092). Default: an
    /// in-process queue kept durable under --data-dir/queue, consumed inside
    /// the serving process.
    #[arg(long, env = "PROMO_KAFKA_BROKERS")]
    pub kafka_brokers: Option<String>,

    /// Milliseconds the Kafka producer waits for more messages before it
    /// sends a produce request (librdkafka's linger.ms). Each V3 answer
    /// waits for its event's acknowledgement, so this adds to its latency.
    #[arg(long, env = "PROMO_KAFKA_LINGER_MS", default_value_t = crate::ports::queue::LINGER_MS)]
    pub kafka_linger_ms: u64,

    /// Topic the services publish their state changes to, as CloudEvents.
    #[arg(long, env = "PROMO_EVENTS_TOPIC", default_value = crate::outbox::TOPIC)]
    pub events_topic: String,
    /// Hours a published event stays in the outbox (and `/admin/events`).
    #[arg(long, env = "PROMO_EVENTS_RETENTION_HOURS", default_value_t = crate::outbox::RETENTION_HOURS,
        value_parser = clap::value_parser!(u64).range(1..=24 * 365))]
    pub events_retention_hours: u64,
    /// Whether state changes are written to the outbox at all (`off`: no
    /// events are published; `just bench-outbox` measures the difference).
    #[arg(long, env = "PROMO_EVENTS", default_value_t = true, action = clap::ArgAction::Set,
        value_parser = clap::builder::BoolishValueParser::new(), value_name = "on|off")]
    pub events: bool,

    /// Folder for the embedded SQLite databases.
    #[arg(long, env = "PROMO_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,

    /// Milliseconds one Redis command may take (reconnecting included)
    /// before the request answers 503 counters_unavailable.
    #[arg(long, env = "PROMO_REDIS_TIMEOUT_MS", default_value_t = 500)]
    pub redis_timeout_ms: u64,

    /// Prefix of the service databases' names on the MySQL server
    /// (`<prefix>promo_coupon`, …), so that several deployments — a
    /// benchmark beside `just run-real` — can share one server.
    #[arg(long, env = "PROMO_DATABASE_PREFIX", default_value = "")]
    pub database_prefix: String,

    /// Prefix of every Redis key this deployment owns.
    #[arg(long, env = "PROMO_REDIS_PREFIX", default_value = "promo:")]
    pub redis_prefix: String,

    /// Connections per service database pool (MySQL; SQLite always uses one).
    #[arg(long, env = "PROMO_DB_MAX_CONNECTIONS", default_value_t = 32)]
    pub db_max_connections: u32,

    /// Uncommitted messages the in-process queue holds before refusing more.
    #[arg(
        long,
        env = "PROMO_EMBEDDED_QUEUE_CAPACITY",
        default_value_t = 1_000_000
    )]
    pub embedded_queue_capacity: usize,

    /// What an answer of the embedded backends survives. `process`: the
    /// process being killed (kill -9, a crash) — the embedded queue's record
    /// and SQLite's commit have reached the operating system before the
    /// answer. `power`: the machine losing power too — the queue waits for an
    /// fdatasync of every group of records and SQLite commits with
    /// synchronous=FULL; slower (bench/bounds.md). MySQL and Kafka keep
    /// their own settings.
    #[arg(long, env = "PROMO_EMBEDDED_DURABILITY", value_enum, default_value_t = Durability::Process)]
    pub embedded_durability: Durability,
}

/// See [`BackendArgs::embedded_durability`].
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Durability {
    #[default]
    Process,
    Power,
}

impl BackendArgs {
    /// Every port embedded, SQLite files under `data_dir` (tests, tools).
    pub fn embedded(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            mysql_url: None,
            redis_url: None,
            redis_cluster_nodes: Vec::new(),
            kafka_brokers: None,
            kafka_linger_ms: crate::ports::queue::LINGER_MS,
            events_topic: crate::outbox::TOPIC.into(),
            events_retention_hours: crate::outbox::RETENTION_HOURS,
            events: true,
            data_dir: data_dir.into(),
            redis_prefix: "promo:".into(),
            database_prefix: String::new(),
            redis_timeout_ms: 500,
            db_max_connections: 16,
            embedded_queue_capacity: 1_000_000,
            embedded_durability: Durability::Process,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("database: {0}")]
    Sql(#[from] SqlError),
    #[error("counters: {0}")]
    Counters(#[from] CountersError),
    #[error("queue: {0}")]
    Queue(#[from] QueueError),
}

/// The connected counters and queue, plus what is needed to open each
/// service's database.
#[derive(Clone)]
pub struct Backends {
    pub args: BackendArgs,
    pub counters: Arc<dyn Counters>,
    /// Cache-aside reads, on the same Redis as the counters (or in process).
    pub cache: Arc<dyn VersionedCache>,
    pub queue: Arc<dyn Queue>,
}

impl Backends {
    pub async fn connect(args: &BackendArgs) -> Result<Self, BackendError> {
        crate::outbox::set_recording(args.events);
        let timeout = std::time::Duration::from_millis(args.redis_timeout_ms.max(1));
        let redis = match (&args.redis_url, args.redis_cluster_nodes.as_slice()) {
            (Some(url), _) => {
                Some(RedisCounters::connect_with_timeout(url, &args.redis_prefix, timeout).await?)
            }
            (None, []) => None,
            (None, nodes) => {
                Some(RedisCounters::connect_cluster(nodes, &args.redis_prefix, timeout).await?)
            }
        };
        let (counters, cache): (Arc<dyn Counters>, Arc<dyn VersionedCache>) = match redis {
            Some(redis) => (Arc::new(redis.clone()), Arc::new(RedisCache::new(&redis))),
            None => (
                Arc::new(MemoryCounters::new()),
                Arc::new(MemoryCache::new()),
            ),
        };
        let queue: Arc<dyn Queue> = match &args.kafka_brokers {
            Some(brokers) => Arc::new(KafkaQueue::with_linger(brokers, args.kafka_linger_ms)?),
            None => Arc::new(
                LocalQueue::durable(args.data_dir.join("queue"), args.embedded_queue_capacity)
                    .with_fdatasync(args.embedded_durability == Durability::Power),
            ),
        };
        Ok(Self {
            args: args.clone(),
            counters,
            cache,
            queue,
        })
    }

    /// True when the queue lives in this process, so its consumer must too.
    pub fn queue_is_embedded(&self) -> bool {
        self.args.kafka_brokers.is_none()
    }

    /// The URL of database `name` (`promo_coupon`, …) on the configured backend.
    pub fn database_url(&self, name: &str) -> Result<String, SqlError> {
        match &self.args.mysql_url {
            Some(server) => {
                sql::mysql_database_url(server, &format!("{}{name}", self.args.database_prefix))
            }
            None => Ok(sql::sqlite_file_url(&self.args.data_dir, name)),
        }
    }

    /// Connects to (creating if needed) database `name`.
    pub async fn database(&self, name: &str) -> Result<Database, SqlError> {
        Database::connect_with_sync(
            &self.database_url(name)?,
            self.args.db_max_connections,
            self.args.embedded_durability == Durability::Power,
        )
        .await
    }

    /// One line per backend, for start-up logs.
    pub fn describe(&self) -> String {
        format!(
            "sql={} counters={} queue={}",
            self.args
                .mysql_url
                .as_deref()
                .map(sql::redact)
                .unwrap_or_else(|| format!("sqlite:{}", self.args.data_dir.display())),
            match (
                &self.args.redis_url,
                self.args.redis_cluster_nodes.as_slice()
            ) {
                (Some(url), _) => url.clone(),
                (None, []) => "in-process".into(),
                (None, nodes) => format!("cluster:{}", nodes.join(",")),
            },
            self.args.kafka_brokers.as_deref().unwrap_or("in-process"),
        )
    }
}
