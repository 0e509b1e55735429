//! `spawn_app`: the coupon service on a random port with fresh backends
//! (the shared harness of `promo_platform::testing`).

use std::{ops::Deref, time::Duration};

use coupon_service::{Campaigns, CouponService, Settings};
pub use promo_platform::testing::{Answer, Backend, Options};
use promo_platform::{
    metrics::Metrics,
    queued,
    testing::{self, ServiceApp, TestBackends},
};
use serde_json::{json, Value};

pub struct TestApp(ServiceApp<CouponService>);

impl Deref for TestApp {
    type Target = ServiceApp<CouponService>;
    fn deref(&self) -> &ServiceApp<CouponService> {
        &self.0
    }
}

/// The Idempotency-Key lease of test apps: short, so that tests can wait it out.
pub const LEASE: Duration = Duration::from_secs(1);

pub async fn spawn_app(backend: Backend) -> TestApp {
    spawn_app_with(backend, Options::default()).await
}

pub async fn spawn_app_with(backend: Backend, opts: Options) -> TestApp {
    spawn_app_on(backend, testing::queued_settings::<Campaigns>(LEASE), opts).await
}

/// The app with the V3 topic in `partitions` partitions and `consumers`
/// members of its consumer group.
pub async fn spawn_app_partitioned(backend: Backend, partitions: i32, consumers: usize) -> TestApp {
    let queued = promo_platform::queued::Settings {
        topic_partitions: partitions,
        ..testing::queued_settings::<Campaigns>(LEASE)
    };
    let opts = Options {
        consumers,
        ..Options::default()
    };
    spawn_app_on(backend, queued, opts).await
}

/// The app with admission coalescing off: each V3 admission its own
/// counters step and send.
pub async fn spawn_app_uncoalesced(backend: Backend) -> TestApp {
    let queued = promo_platform::queued::Settings {
        coalesce: promo_platform::queued::Coalescing::Off,
        ..testing::queued_settings::<Campaigns>(LEASE)
    };
    spawn_app_on(backend, queued, Options::default()).await
}

async fn spawn_app_on(
    backend: Backend,
    queued: promo_platform::queued::Settings,
    opts: Options,
) -> TestApp {
    let settings = Settings {
        queued,
        ..Settings::default()
    };
    let backends = TestBackends::migrated::<CouponService>(backend, "coupon").await;
    let metrics = Metrics::new();
    let svc = queued::with_database::<CouponService>(
        backends.db.clone(),
        &backends.backends(),
        metrics.clone(),
        settings,
    )
    .await
    .expect("service starts");
    TestApp(testing::serve_service(backends, svc, metrics, opts).await)
}

impl TestApp {
    pub async fn put_campaign(&self, id: &str, spec: Value) -> Answer {
        self.admin_put(&format!("/admin/campaigns/{id}"), spec)
            .await
    }

    pub async fn get_campaign(&self, id: &str) -> Answer {
        self.admin_get(&format!("/admin/campaigns/{id}")).await
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
        self.backends.handle.flush().await
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
        .fetch_all(self.svc.core.db.pool())
        .await
        .unwrap()
    }

    pub async fn issued_column(&self, campaign: &str) -> i64 {
        sqlx::query_scalar("SELECT issued FROM campaigns WHERE id = ?")
            .bind(campaign)
            .fetch_one(self.svc.core.db.pool())
            .await
            .unwrap()
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
