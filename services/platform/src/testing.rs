//! Test support for suites that run against the real backends. The URLs
//! default to what `scripts/infra.sh up` (`just infra-up`) starts; override
//! with PROMO_TEST_MYSQL_URL, PROMO_TEST_REDIS_URL, PROMO_TEST_KAFKA_BROKERS.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::{
    config::{BackendArgs, Backends},
    ports::{
        Counters, Database, KafkaQueue, LocalQueue, MemoryCache, MemoryCounters, Queue, RedisCache,
        RedisCounters, VersionedCache,
    },
};

pub fn mysql_url() -> String {
    std::env::var("PROMO_TEST_MYSQL_URL")
        .unwrap_or_else(|_| "mysql://promo:promo@127.0.0.1:3306".into())
}

pub fn redis_url() -> String {
    std::env::var("PROMO_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
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

const HINT: &str = "start the real backends with `just infra-up` (scripts/infra.sh up)";

/// A fresh MariaDB database (dropped when the test process ends is not
/// guaranteed; names are unique so leftovers never collide).
pub async fn fresh_mysql(label: &str) -> Database {
    let url = crate::ports::sql::mysql_database_url(&mysql_url(), &unique(label))
        .expect("valid PROMO_TEST_MYSQL_URL");
    Database::connect(&url, 16)
        .await
        .unwrap_or_else(|e| panic!("MariaDB at {}: {e}; {HINT}", mysql_url()))
}

/// A fresh SQLite database in a temporary folder that lives as long as the
/// returned guard.
pub async fn fresh_sqlite(label: &str) -> (Database, TempDir) {
    let dir = TempDir::new();
    let url = crate::ports::sql::sqlite_file_url(&dir.0, label);
    let db = Database::connect(&url, 1).await.expect("sqlite opens");
    (db, dir)
}

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

pub fn kafka() -> KafkaQueue {
    KafkaQueue::new(&kafka_brokers()).expect("kafka client config")
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
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The two sets of backends every service scenario runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// SQLite, in-process counters and queue.
    Embedded,
    /// MariaDB, Redis, Kafka (tansu).
    Real,
}

/// Runs each `async fn scenario(Backend)` as two tests, `embedded` and `real`.
#[macro_export]
macro_rules! on_both_backends {
    ($($scenario:ident),* $(,)?) => {$(
        mod $scenario {
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn embedded() {
                super::$scenario($crate::testing::Backend::Embedded).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn real() {
                super::$scenario($crate::testing::Backend::Real).await
            }
        }
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

/// Fresh backends for one test: a new database, counters under a new
/// prefix, and the queue.
pub struct TestBackends {
    pub db: Database,
    pub counters: Arc<dyn Counters>,
    pub cache: Arc<dyn VersionedCache>,
    pub handle: CountersHandle,
    pub queue: Arc<dyn Queue>,
    pub dir: Option<TempDir>,
}

impl TestBackends {
    pub async fn new(backend: Backend, label: &str) -> Self {
        crate::telemetry::init(false);
        match backend {
            Backend::Embedded => {
                let (db, dir) = fresh_sqlite(label).await;
                let c = MemoryCounters::new();
                let queue = LocalQueue::durable(dir.0.join("queue"), 1_000_000);
                TestBackends {
                    db,
                    counters: Arc::new(c.clone()),
                    cache: Arc::new(MemoryCache::new()),
                    handle: CountersHandle::Memory(c),
                    queue: Arc::new(queue),
                    dir: Some(dir),
                }
            }
            Backend::Real => {
                let c = fresh_redis(label).await;
                TestBackends {
                    db: fresh_mysql(label).await,
                    counters: Arc::new(c.clone()),
                    cache: Arc::new(RedisCache::new(&c)),
                    handle: CountersHandle::Redis(c),
                    queue: Arc::new(kafka()),
                    dir: None,
                }
            }
        }
    }

    /// The counters and queue as a service takes them.
    pub fn backends(&self) -> Backends {
        Backends {
            args: BackendArgs::embedded("./data"),
            counters: self.counters.clone(),
            cache: self.cache.clone(),
            queue: self.queue.clone(),
        }
    }
}

/// Turns the recorded answer of Idempotency-Key `key` back into a claim
/// without one, dated `claimed_at` (ms): what a process leaves that died
/// after the request's effect and before recording its answer.
pub async fn forget_idempotent_answer(db: &Database, key: &str, claimed_at: i64) {
    let forgotten = sqlx::query(
        "UPDATE idempotency_keys SET status = NULL, body = NULL, created_at = ? WHERE idem_key = ?",
    )
    .bind(claimed_at)
    .bind(key)
    .execute(db.pool())
    .await
    .expect("answer forgotten");
    assert_eq!(forgotten.rows_affected(), 1, "key {key} was claimed");
}

/// Claims Idempotency-Key `key` for the same request as `like` (whose claim
/// exists), without an answer and dated `claimed_at` (ms): what a process
/// leaves that died after claiming and before any effect.
pub async fn claim_like(db: &Database, like: &str, key: &str, claimed_at: i64) {
    sqlx::query(
        "INSERT INTO idempotency_keys (scope, idem_key, request_hash, status, body, created_at) \
         SELECT scope, ?, request_hash, NULL, NULL, ? FROM idempotency_keys WHERE idem_key = ?",
    )
    .bind(key)
    .bind(claimed_at)
    .bind(like)
    .execute(db.pool())
    .await
    .expect("claimed");
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
        let replayed = header(reqwest::header::HeaderName::from_static(
            crate::http::idempotency::REPLAYED,
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
}

/// How a service app is served in a test.
pub struct Options {
    /// Run the V3 consumer in the test process.
    pub consumer: bool,
    pub admin_token: Option<String>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            consumer: true,
            admin_token: None,
        }
    }
}

impl Options {
    /// The app without its V3 consumer: a test drives `persist_batch` itself.
    pub fn without_consumer() -> Self {
        Self {
            consumer: false,
            ..Self::default()
        }
    }
}

impl TestBackends {
    /// Fresh backends with `S`'s database migrated.
    pub async fn migrated<S: crate::service::Service>(backend: Backend, label: &str) -> Self {
        let b = Self::new(backend, label).await;
        b.db.migrate(S::migrations()).await.expect("migrate");
        b
    }
}

/// A service on a random port with fresh backends, its consumer in process
/// when asked; stopped when dropped.
pub struct ServiceApp<S> {
    pub http: HttpClient,
    pub svc: Arc<S>,
    pub backends: TestBackends,
    pub queue: Arc<dyn Queue>,
    pub shutdown: CancellationToken,
}

impl<S> std::ops::Deref for ServiceApp<S> {
    type Target = HttpClient;
    fn deref(&self) -> &HttpClient {
        &self.http
    }
}

impl<S> Drop for ServiceApp<S> {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Serves `svc` (built on `backends`, reporting to `metrics`).
pub async fn serve_service<S: crate::service::Service>(
    backends: TestBackends,
    svc: Arc<S>,
    metrics: Arc<crate::metrics::Metrics>,
    opts: Options,
) -> ServiceApp<S> {
    let shutdown = CancellationToken::new();
    if opts.consumer {
        crate::service::spawn_consumer(&svc, shutdown.clone());
    }
    let token = crate::http::auth::AdminToken(opts.admin_token.clone().map(Into::into));
    let app = crate::http::server::assemble(
        vec![crate::service::parts(&svc, token, opts.consumer)],
        metrics,
    );
    let base = serve(app, shutdown.clone()).await;
    ServiceApp {
        http: HttpClient::new(base, opts.admin_token),
        svc,
        queue: backends.queue.clone(),
        backends,
        shutdown,
    }
}
