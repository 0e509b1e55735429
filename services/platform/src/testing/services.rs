//! The test harness of a whole service: fresh databases, backends and
//! a served app (needs the `service` feature).

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::{
    fresh_redis, kafka, mysql_url, serve, unique, Backend, CountersHandle, HttpClient, TempDir,
    HINT,
};
use crate::{
    config::{BackendArgs, Backends},
    ports::{
        Counters, Database, LocalQueue, MemoryCache, MemoryCounters, Queue, RedisCache,
        VersionedCache,
    },
};

/// A queued service's core settings for tests: a topic and group of its
/// own, two partitions, short waits and Idempotency-Key lease `lease`.
pub fn queued_settings<D: crate::queued::Domain>(
    lease: std::time::Duration,
) -> crate::queued::Settings {
    use std::time::Duration;
    crate::queued::Settings {
        topic: unique(&format!("{}_events", D::SERVICE)),
        topic_partitions: 2,
        group: unique(&format!("{}_consumer", D::SERVICE)),
        consumer_max_wait: Duration::from_millis(10),
        rebuild_timeout: Duration::from_secs(20),
        audit_age: Duration::from_millis(300),
        idempotency_lease: lease,
        // Coalesced on every backend (in production the in-process
        // counters do without); `Coalescing::Off` in the tests of the other path.
        coalesce: crate::queued::Coalescing::On,
        ..crate::queued::Settings::of::<D>()
    }
}

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
            Backend::Real | Backend::Cluster => {
                let c = if backend == Backend::Cluster {
                    super::fresh_redis_cluster(label).await
                } else {
                    fresh_redis(label).await
                };
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

/// How a service app is served in a test.
pub struct Options {
    /// Run the V3 consumer in the test process.
    pub consumer: bool,
    /// How many members of the consumer group run (when `consumer`).
    pub consumers: usize,
    pub admin_token: Option<String>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            consumer: true,
            consumers: 1,
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
    svc.background(shutdown.clone());
    if opts.consumer {
        for _ in 0..opts.consumers.max(1) {
            crate::service::spawn_consumer(&svc, shutdown.clone());
        }
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
