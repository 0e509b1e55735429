//! `spawn_app`: the coupon service on a random port with fresh backends.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use coupon_service::{run, CouponService, Settings};
use promo_platform::{
    config::{BackendArgs, Backends},
    http::{auth::AdminToken, server},
    metrics::Metrics,
    ports::{Counters, Database, MemoryCounters, MemoryQueue, Queue, RedisCounters},
    testing::{self, TempDir},
};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// SQLite, in-process counters and queue.
    Embedded,
    /// MariaDB, Redis, Kafka (tansu).
    Real,
}

/// Runs `$scenario(Backend)` as two tests: `embedded` and `real`.
#[macro_export]
macro_rules! on_both_backends {
    ($($scenario:ident),* $(,)?) => {$(
        mod $scenario {
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn embedded() {
                super::$scenario($crate::helpers::Backend::Embedded).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn real() {
                super::$scenario($crate::helpers::Backend::Real).await
            }
        }
    )*};
}

pub enum CountersHandle {
    Memory(MemoryCounters),
    Redis(RedisCounters),
}

pub struct TestApp {
    pub base: String,
    pub client: reqwest::Client,
    pub svc: Arc<CouponService>,
    pub counters: CountersHandle,
    pub queue: Arc<dyn Queue>,
    pub admin_token: Option<String>,
    pub shutdown: CancellationToken,
    _dir: Option<TempDir>,
}

pub struct Options {
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

pub async fn spawn_app(backend: Backend) -> TestApp {
    spawn_app_with(backend, Options::default()).await
}

pub async fn spawn_app_with(backend: Backend, opts: Options) -> TestApp {
    promo_platform::telemetry::init(false);
    let settings = Settings {
        topic: testing::unique("coupon_issue"),
        topic_partitions: 2,
        group: testing::unique("coupon_consumer"),
        consumer_max_wait: Duration::from_millis(10),
        rebuild_timeout: Duration::from_secs(20),
        ..Settings::default()
    };
    let (db, dir, counters, handle, queue): (Database, _, Arc<dyn Counters>, _, Arc<dyn Queue>) =
        match backend {
            Backend::Embedded => {
                let (db, dir) = testing::fresh_sqlite("coupon").await;
                let c = MemoryCounters::new();
                (
                    db,
                    Some(dir),
                    Arc::new(c.clone()),
                    CountersHandle::Memory(c),
                    Arc::new(MemoryQueue::new(1_000_000)),
                )
            }
            Backend::Real => {
                let db = testing::fresh_mysql("coupon").await;
                let c = testing::fresh_redis("coupon").await;
                (
                    db,
                    None,
                    Arc::new(c.clone()),
                    CountersHandle::Redis(c),
                    Arc::new(testing::kafka()),
                )
            }
        };
    db.migrate(&coupon_service::store::MIGRATIONS)
        .await
        .expect("migrate");
    let backends = Backends {
        args: BackendArgs::embedded("./data"),
        counters,
        queue: queue.clone(),
    };
    let metrics = Metrics::new();
    let svc = CouponService::with_database(db, &backends, metrics.clone(), settings)
        .await
        .expect("service starts");
    let shutdown = CancellationToken::new();
    if opts.consumer {
        run::spawn_consumer(&svc, shutdown.clone());
    }
    let token = AdminToken(opts.admin_token.clone().map(Into::into));
    let app = server::assemble(vec![run::parts(&svc, token)], metrics);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    tokio::spawn(server::serve(listener, app, shutdown.clone()));
    TestApp {
        base: format!("http://{addr}"),
        client: reqwest::Client::builder()
            .pool_max_idle_per_host(256)
            .timeout(Duration::from_secs(60))
            .build()
            .unwrap(),
        svc,
        counters: handle,
        queue,
        admin_token: opts.admin_token,
        shutdown,
        _dir: dir,
    }
}

/// A response's status and JSON body (problem+json bodies included).
pub struct Answer {
    pub status: u16,
    pub body: Value,
    pub content_type: String,
    pub retry_after: Option<String>,
}

impl TestApp {
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
        let text = res.text().await.unwrap_or_default();
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Answer {
            status,
            body,
            content_type,
            retry_after,
        }
    }

    pub async fn post(&self, path: &str, body: Value) -> Answer {
        self.send(self.client.post(self.url(path)).json(&body))
            .await
    }

    pub async fn get(&self, path: &str) -> Answer {
        self.send(self.client.get(self.url(path))).await
    }

    fn admin(&self, req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.admin_token {
            Some(t) => req.bearer_auth(t),
            None => req,
        }
    }

    pub async fn put_campaign(&self, id: &str, spec: Value) -> Answer {
        self.send(
            self.admin(self.client.put(self.url(&format!("/admin/campaigns/{id}"))))
                .json(&spec),
        )
        .await
    }

    pub async fn get_campaign(&self, id: &str) -> Answer {
        self.send(self.admin(self.client.get(self.url(&format!("/admin/campaigns/{id}")))))
            .await
    }

    /// Creates a campaign open now; panics unless created.
    pub async fn campaign(&self, id: &str, quota: i64, per_user: i64, strategy: &str) {
        let a = self
            .put_campaign(id, open_campaign(quota, per_user, strategy))
            .await;
        assert_eq!(a.status, 201, "{}", a.body);
    }

    pub async fn issue(&self, version: &str, campaign: &str, user: &str) -> Answer {
        let path = match version {
            "" => format!("/campaigns/{campaign}/issue"),
            v => format!("/{v}/campaigns/{campaign}/issue"),
        };
        self.post(&path, json!({ "userId": user })).await
    }

    /// Simulates Redis losing everything this app keeps there.
    pub async fn flush_counters(&self) {
        match &self.counters {
            CountersHandle::Memory(c) => c.clear(),
            CountersHandle::Redis(c) => testing::flush_redis_prefix(c).await,
        }
    }

    /// Waits until every request id has left PENDING; returns their final answers.
    pub async fn wait_decided(&self, request_ids: &[String]) -> Vec<Value> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        let mut out = Vec::with_capacity(request_ids.len());
        for id in request_ids {
            loop {
                let a = self.get(&format!("/issue-requests/{id}")).await;
                // 404 only while a flushed ticket's event is still in the queue.
                if a.status == 200 && a.body["status"] != "PENDING" {
                    out.push(a.body);
                    break;
                }
                assert!(
                    a.status == 200 || a.status == 404,
                    "status lookup: {} {}",
                    a.status,
                    a.body
                );
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "request {id} still undecided"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        out
    }

    /// Coupons stored for a campaign: (couponId, userId).
    pub async fn stored_coupons(&self, campaign: &str) -> Vec<(String, String)> {
        sqlx::query_as::<_, (String, String)>(
            "SELECT coupon_id, user_id FROM coupons WHERE campaign_id = ?",
        )
        .bind(campaign)
        .fetch_all(self.svc.db.pool())
        .await
        .unwrap()
    }

    pub async fn issued_column(&self, campaign: &str) -> i64 {
        sqlx::query_scalar("SELECT issued FROM campaigns WHERE id = ?")
            .bind(campaign)
            .fetch_one(self.svc.db.pool())
            .await
            .unwrap()
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// A campaign spec whose window is open now.
pub fn open_campaign(quota: i64, per_user: i64, strategy: &str) -> Value {
    let now = chrono::Utc::now();
    json!({
        "quota": quota,
        "perUserLimit": per_user,
        "startsAt": (now - chrono::Duration::hours(1)).to_rfc3339(),
        "endsAt": (now + chrono::Duration::days(1)).to_rfc3339(),
        "strategy": strategy,
        "discount": {"kind": "FIXED", "value": 1000},
    })
}
