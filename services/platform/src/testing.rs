//! Test support for suites that run against the real backends. The URLs
//! default to what `scripts/infra.sh up` (`just infra-up`) starts; override
//! with PROMO_TEST_MYSQL_URL, PROMO_TEST_REDIS_URL, PROMO_TEST_KAFKA_BROKERS.

use std::{net::SocketAddr, time::Duration};

use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::ports::{KafkaQueue, MemoryCounters, RedisCounters};

#[cfg(feature = "service")]
mod services;
#[cfg(feature = "service")]
pub use services::*;

pub fn mysql_url() -> String {
    std::env::var("PROMO_TEST_MYSQL_URL")
        .unwrap_or_else(|_| "mysql://promo:promo@127.0.0.1:3306".into())
}

pub fn redis_url() -> String {
    std::env::var("PROMO_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// The test Redis Cluster's masters (`scripts/infra.sh` starts three).
pub fn redis_cluster_nodes() -> Vec<String> {
    std::env::var("PROMO_TEST_REDIS_CLUSTER_NODES")
        .unwrap_or_else(|_| "127.0.0.1:7001,127.0.0.1:7002,127.0.0.1:7003".into())
        .split(',')
        .map(str::to_string)
        .collect()
}

pub fn kafka_brokers() -> String {
    std::env::var("PROMO_TEST_KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".into())
}

/// A short unique suffix for database names, key prefixes and topics.
pub fn unique(label: &str) -> String {
    format!(
        "{label}_{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    )
}

pub(crate) const HINT: &str = "start the real backends with `just infra-up` (scripts/infra.sh up)";

/// Redis counters under a unique key prefix. Commands may take 5 s: the
/// whole suite shares two cores, so a 500 ms deadline would fail requests
/// that are only waiting for a CPU (the fault suite, run alone, keeps the
/// production deadline).
pub async fn fresh_redis(label: &str) -> RedisCounters {
    let prefix = format!("test:{}:", unique(label));
    RedisCounters::connect_with_timeout(&redis_url(), &prefix, Duration::from_secs(5))
        .await
        .unwrap_or_else(|e| panic!("Redis at {}: {e}; {HINT}", redis_url()))
}

/// [`fresh_redis`] on the test Redis Cluster.
pub async fn fresh_redis_cluster(label: &str) -> RedisCounters {
    let prefix = format!("test:{}:", unique(label));
    let nodes = redis_cluster_nodes();
    RedisCounters::connect_cluster(&nodes, &prefix, Duration::from_secs(5))
        .await
        .unwrap_or_else(|e| panic!("Redis Cluster at {}: {e}; {HINT}", nodes.join(",")))
}

/// Deletes every key under the counters' prefix: what a FLUSHALL does to
/// this test, without touching tests running beside it.
pub async fn flush_redis_prefix(counters: &RedisCounters) {
    let mut conn = counters.connection();
    let pattern = format!("{}*", counters.prefix());
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(&pattern)
        .query_async(&mut conn)
        .await
        .expect("KEYS");
    if !keys.is_empty() {
        redis::cmd("DEL")
            .arg(&keys)
            .exec_async(&mut conn)
            .await
            .expect("DEL");
    }
}

/// A client of the test broker; panics naming `just infra-up` when nothing
/// listens at its first address (a Kafka client would otherwise retry
/// quietly until some later timeout).
pub fn kafka() -> KafkaQueue {
    let brokers = kafka_brokers();
    let first = brokers.split(',').next().unwrap_or_default().to_string();
    let reachable = std::net::ToSocketAddrs::to_socket_addrs(first.as_str())
        .ok()
        .and_then(|mut a| a.next())
        .is_some_and(|a| std::net::TcpStream::connect_timeout(&a, Duration::from_secs(2)).is_ok());
    if !reachable {
        panic!("no Kafka broker at {first}; {HINT}");
    }
    KafkaQueue::new(&brokers).expect("kafka client config")
}

/// A temporary folder removed on drop.
pub struct TempDir(pub std::path::PathBuf);

impl TempDir {
    pub fn new() -> Self {
        let p = std::env::temp_dir().join(unique("promo-test"));
        std::fs::create_dir_all(&p).expect("temp dir");
        Self(p)
    }
}

impl Default for TempDir {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for TempDir {
    /// Removes the folder; when a test is failing it first prints the last
    /// lines of every `*.log` in it (the processes a test started), so a
    /// failure on a CI machine can be told apart from a flaw of a backend,
    /// and keeps the folder when `PROMO_TEST_KEEP_FAILED` is set.
    fn drop(&mut self) {
        if std::thread::panicking() {
            print_log_tails(&self.0, 60);
            if std::env::var_os("PROMO_TEST_KEEP_FAILED").is_some() {
                eprintln!("kept {} (PROMO_TEST_KEEP_FAILED)", self.0.display());
                return;
            }
        }
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn print_log_tails(dir: &std::path::Path, lines: usize) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut logs: Vec<_> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .collect();
    logs.sort();
    for log in logs {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        eprintln!("---- last {lines} lines of {} ----", log.display());
        for line in &all[all.len().saturating_sub(lines)..] {
            eprintln!("{line}");
        }
    }
}

/// The two sets of backends every service scenario runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// SQLite, in-process counters and queue.
    Embedded,
    /// MariaDB, Redis, Kafka (tansu).
    Real,
    /// MariaDB, the 3-master Redis Cluster, Kafka (tansu).
    Cluster,
}

/// One test per backend for `async fn scenario(Backend)`: `backend_tests!(
/// scenario: embedded => Embedded, real => Real)` makes `scenario::embedded`
/// and `scenario::real`.
#[macro_export]
macro_rules! backend_tests {
    ($scenario:ident: $($name:ident => $backend:ident),+) => {
        mod $scenario {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    super::$scenario($crate::testing::Backend::$backend).await
                }
            )+
        }
    };
}

/// Runs each `async fn scenario(Backend)` as two tests, `embedded` and `real`.
#[macro_export]
macro_rules! on_both_backends {
    ($($scenario:ident),* $(,)?) => {$(
        $crate::backend_tests!($scenario: embedded => Embedded, real => Real);
    )*};
}

/// Runs each `async fn scenario(Backend)` on the embedded backends, the
/// real ones and the real ones with a Redis Cluster (`embedded`, `real`,
/// `cluster`): for the scenarios whose counters steps differ on a cluster.
#[macro_export]
macro_rules! on_every_backend {
    ($($scenario:ident),* $(,)?) => {$(
        $crate::backend_tests!($scenario: embedded => Embedded, real => Real, cluster => Cluster);
    )*};
}

/// The counters a test holds on to, to simulate their loss.
pub enum CountersHandle {
    Memory(MemoryCounters),
    Redis(RedisCounters),
}

impl CountersHandle {
    /// What a Redis restart or FLUSHALL does to this test's counters.
    pub async fn flush(&self) {
        match self {
            CountersHandle::Memory(c) => c.clear(),
            CountersHandle::Redis(c) => flush_redis_prefix(c).await,
        }
    }
}

/// Serves `app` on a random loopback port until `shutdown`; returns its base URL.
pub async fn serve(app: axum::Router, shutdown: CancellationToken) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    tokio::spawn(crate::http::server::serve(listener, app, shutdown));
    format!("http://{addr}")
}

/// A response's status and JSON body (problem+json bodies included).
pub struct Answer {
    pub status: u16,
    pub body: Value,
    pub content_type: String,
    pub retry_after: Option<String>,
    /// Whether it was a stored first answer to an Idempotency-Key.
    pub replayed: bool,
}

/// An HTTP client for one served app.
pub struct HttpClient {
    pub base: String,
    pub client: reqwest::Client,
    pub admin_token: Option<String>,
}

impl HttpClient {
    pub fn new(base: String, admin_token: Option<String>) -> Self {
        HttpClient {
            base,
            client: reqwest::Client::builder()
                .pool_max_idle_per_host(256)
                .timeout(Duration::from_secs(60))
                .build()
                .unwrap(),
            admin_token,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn send(&self, req: reqwest::RequestBuilder) -> Answer {
        let res = req.send().await.expect("request sent");
        let status = res.status().as_u16();
        let header = |n| {
            res.headers()
                .get(n)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let content_type = header(reqwest::header::CONTENT_TYPE).unwrap_or_default();
        let retry_after = header(reqwest::header::RETRY_AFTER);
        // The header an Idempotency-Key replay carries
        // (`crate::http::idempotency::REPLAYED`).
        let replayed = header(reqwest::header::HeaderName::from_static(
            "idempotency-replayed",
        ))
        .as_deref()
            == Some("true");
        let text = res.text().await.unwrap_or_default();
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Answer {
            status,
            body,
            content_type,
            retry_after,
            replayed,
        }
    }

    pub async fn post(&self, path: &str, body: Value) -> Answer {
        self.send(self.client.post(self.url(path)).json(&body))
            .await
    }

    /// POST with an `Idempotency-Key`.
    pub async fn post_with_key(&self, path: &str, body: Value, key: &str) -> Answer {
        let req = self.client.post(self.url(path)).json(&body);
        self.send(req.header("Idempotency-Key", key)).await
    }

    /// How many series of metric family `name` `/metrics` shows.
    pub async fn series(&self, name: &str) -> usize {
        let text = self
            .client
            .get(self.url("/metrics"))
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("metrics text");
        let prefix = format!("{name}{{");
        text.lines().filter(|l| l.starts_with(&prefix)).count()
    }

    pub async fn get(&self, path: &str) -> Answer {
        self.send(self.client.get(self.url(path))).await
    }

    /// `req` with the admin bearer token, when the app has one.
    pub fn admin(&self, req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.admin_token {
            Some(t) => req.bearer_auth(t),
            None => req,
        }
    }

    pub async fn admin_put(&self, path: &str, body: Value) -> Answer {
        self.send(self.admin(self.client.put(self.url(path))).json(&body))
            .await
    }

    pub async fn admin_get(&self, path: &str) -> Answer {
        self.send(self.admin(self.client.get(self.url(path)))).await
    }

    /// Pages through `GET /admin/events` (3 a page) until at least `want`
    /// published events about `subject` are there (20 s at most); returns
    /// them in feed order.
    pub async fn events_about(&self, subject: &str, want: usize) -> Vec<Value> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let mut cursor: Option<String> = None;
            let mut mine = Vec::new();
            loop {
                let path = match &cursor {
                    Some(c) => format!("/admin/events?limit=3&after={c}"),
                    None => "/admin/events?limit=3".to_string(),
                };
                let page = self.admin_get(&path).await;
                assert_eq!(page.status, 200, "{}", page.body);
                let items = page.body["items"].as_array().unwrap().clone();
                cursor = Some(page.body["nextCursor"].as_str().unwrap().to_string());
                if items.is_empty() {
                    break;
                }
                mine.extend(items.into_iter().filter(|e| e["subject"] == subject));
            }
            if mine.len() >= want {
                return mine;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{} of {want} events: {mine:?}",
                mine.len()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}
