//! `spawn_app`: the point service on a random port with fresh backends
//! (the shared harness of `promo_platform::testing`).

use std::{ops::Deref, sync::Arc};

use point_service::{PointService, Settings};
pub use promo_platform::testing::{Answer, Backend};
use promo_platform::{
    metrics::Metrics,
    testing::{self, Options, ServiceApp, TestBackends},
};
use serde_json::{json, Value};

pub struct TestApp(ServiceApp<PointService>);

impl Deref for TestApp {
    type Target = ServiceApp<PointService>;
    fn deref(&self) -> &ServiceApp<PointService> {
        &self.0
    }
}

pub async fn spawn_app(backend: Backend) -> TestApp {
    spawn_app_with(backend, Settings::default(), None).await
}

/// With `cache` replacing the backends' cache (a Redis that can be stopped).
pub async fn spawn_app_with(
    backend: Backend,
    settings: Settings,
    cache: Option<Arc<dyn promo_platform::ports::VersionedCache>>,
) -> TestApp {
    let mut backends = TestBackends::migrated::<PointService>(backend, "point").await;
    if let Some(c) = cache {
        backends.cache = c;
    }
    let metrics = Metrics::new();
    let svc = PointService::with_database(
        backends.db.clone(),
        &backends.backends(),
        metrics.clone(),
        settings,
    );
    TestApp(testing::serve_service(backends, svc, metrics, Options::default()).await)
}

impl TestApp {
    /// POSTs a mutation with an Idempotency-Key.
    pub async fn mutate(&self, user: &str, op: &str, key: &str, body: Value) -> Answer {
        self.send(
            self.client
                .post(self.url(&format!("/users/{user}/points/{op}")))
                .header("Idempotency-Key", key)
                .json(&body),
        )
        .await
    }

    pub async fn earn(&self, user: &str, amount: i64) -> Answer {
        let key = uuid::Uuid::new_v4().to_string();
        self.mutate(
            user,
            "earn",
            &key,
            json!({"amount": amount, "reason": "test"}),
        )
        .await
    }

    pub async fn balance(&self, user: &str) -> i64 {
        let a = self.get(&format!("/users/{user}/points")).await;
        assert_eq!(a.status, 200, "{}", a.body);
        a.body["balance"].as_i64().unwrap()
    }

    /// The database's own figures: (balance column, Σ ledger amounts, entries).
    pub async fn books(&self, user: &str) -> (i64, i64, i64) {
        let pool = self.svc.db.pool();
        let balance: i64 = sqlx::query_scalar("SELECT balance FROM accounts WHERE user_id = ?")
            .bind(user)
            .fetch_optional(pool)
            .await
            .unwrap()
            .unwrap_or(0);
        // Summed here: MySQL's SUM is a DECIMAL the Any driver cannot read.
        let amounts: Vec<i64> = sqlx::query_scalar("SELECT amount FROM ledger WHERE user_id = ?")
            .bind(user)
            .fetch_all(pool)
            .await
            .unwrap();
        let lots: Vec<i64> = sqlx::query_scalar("SELECT remaining FROM lots WHERE user_id = ?")
            .bind(user)
            .fetch_all(pool)
            .await
            .unwrap();
        assert_eq!(
            lots.iter().sum::<i64>(),
            balance,
            "lots hold exactly the balance"
        );
        (balance, amounts.iter().sum(), amounts.len() as i64)
    }
}
