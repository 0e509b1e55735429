//! `spawn_app`: the time-sale service on a random port with fresh backends
//! (the shared harness of `promo_platform::testing`).

use std::{collections::HashMap, ops::Deref, time::Duration};

pub use promo_platform::testing::{Answer, Backend, Options};
use promo_platform::{
    metrics::Metrics,
    queued,
    testing::{self, ServiceApp, TestBackends},
};
use serde_json::{json, Value};
use timesale_service::{Sales, Settings, TimesaleService};

pub struct TestApp(ServiceApp<TimesaleService>);

impl Deref for TestApp {
    type Target = ServiceApp<TimesaleService>;
    fn deref(&self) -> &ServiceApp<TimesaleService> {
        &self.0
    }
}

/// The Idempotency-Key lease of test apps: short, so that tests can wait it out.
pub const LEASE: Duration = Duration::from_secs(1);

pub async fn spawn_app(backend: Backend) -> TestApp {
    spawn_app_with(backend, Options::default()).await
}

pub async fn spawn_app_with(backend: Backend, opts: Options) -> TestApp {
    let settings = settings();
    let backends = TestBackends::migrated::<TimesaleService>(backend, "timesale").await;
    let metrics = Metrics::new();
    let svc = queued::with_database::<TimesaleService>(
        backends.db.clone(),
        &backends.backends(),
        metrics.clone(),
        settings,
    )
    .await
    .expect("service starts");
    TestApp(testing::serve_service(backends, svc, metrics, opts).await)
}

/// The settings of test apps: short leases, a hold sweep every 100 ms.
pub fn settings() -> Settings {
    Settings {
        queued: testing::queued_settings::<Sales>(LEASE),
        hold_sweep: Duration::from_millis(100),
        ..Settings::default()
    }
}

/// A sale spec whose window is open now.
pub fn open_sale(stock: i64, per_user: i64, strategy: &str) -> Value {
    let now = chrono::Utc::now();
    json!({
        "product": {"sku": "SKU-1", "name": "Sneaker", "price": 100_000},
        "salePrice": 60_000,
        "stock": stock,
        "perUserLimit": per_user,
        "startsAt": (now - chrono::Duration::hours(1)).to_rfc3339(),
        "endsAt": (now + chrono::Duration::days(1)).to_rfc3339(),
        "strategy": strategy,
    })
}

/// A stored order: (orderId, userId, quantity, status).
pub type Row = (String, String, i64, String);

impl TestApp {
    pub async fn put_sale(&self, id: &str, spec: Value) -> Answer {
        self.admin_put(&format!("/admin/time-sales/{id}"), spec)
            .await
    }

    /// Creates a sale open now; panics unless created.
    pub async fn sale(&self, id: &str, stock: i64, per_user: i64, strategy: &str) {
        let a = self
            .put_sale(id, open_sale(stock, per_user, strategy))
            .await;
        assert_eq!(a.status, 201, "{}", a.body);
    }

    pub async fn order(&self, version: &str, sale: &str, user: &str, quantity: i64) -> Answer {
        let path = match version {
            "" => format!("/time-sales/{sale}/orders"),
            v => format!("/{v}/time-sales/{sale}/orders"),
        };
        self.post(&path, json!({ "userId": user, "quantity": quantity }))
            .await
    }

    pub async fn confirm(&self, order_id: &str, payment_ref: &str) -> Answer {
        self.post(
            &format!("/orders/{order_id}/confirm"),
            json!({ "paymentRef": payment_ref }),
        )
        .await
    }

    /// Moves the end of these orders' holds to `in_ms` from now (negative:
    /// already past), as if that much of the hold had gone by.
    pub async fn hold_ends_in(&self, order_ids: &[String], in_ms: i64) {
        self.hold_ends_at(order_ids, chrono::Utc::now().timestamp_millis() + in_ms)
            .await
    }

    /// Moves the end of these orders' holds to `at` (epoch ms).
    pub async fn hold_ends_at(&self, order_ids: &[String], at: i64) {
        for id in order_ids {
            sqlx::query(
                "UPDATE orders SET hold_expires_at = ? WHERE order_id = ? AND status = 'HELD'",
            )
            .bind(at)
            .bind(id)
            .execute(self.svc.core.db.pool())
            .await
            .unwrap();
        }
    }

    pub async fn cancel(&self, order_id: &str) -> Answer {
        self.post(&format!("/orders/{order_id}/cancel"), json!({}))
            .await
    }

    /// Simulates Redis losing everything this app keeps there.
    pub async fn flush_counters(&self) {
        self.backends.handle.flush().await
    }

    /// Waits until every order has left PENDING; returns their final bodies.
    pub async fn wait_decided(&self, order_ids: &[String]) -> Vec<Value> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        let mut out = Vec::with_capacity(order_ids.len());
        for id in order_ids {
            loop {
                let a = self.get(&format!("/orders/{id}")).await;
                if a.status == 200 && a.body["status"] != "PENDING" {
                    out.push(a.body);
                    break;
                }
                // 404 only while a flushed ticket's event is still in the queue.
                assert!(
                    a.status == 200 || a.status == 404,
                    "order lookup: {} {}",
                    a.status,
                    a.body
                );
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "order {id} still undecided"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        out
    }

    pub async fn stored_orders(&self, sale: &str) -> Vec<Row> {
        sqlx::query_as::<_, Row>(
            "SELECT order_id, user_id, quantity, status FROM orders WHERE sale_id = ?",
        )
        .bind(sale)
        .fetch_all(self.svc.core.db.pool())
        .await
        .unwrap()
    }

    pub async fn sold_column(&self, sale: &str) -> i64 {
        sqlx::query_scalar("SELECT sold FROM sales WHERE id = ?")
            .bind(sale)
            .fetch_one(self.svc.core.db.pool())
            .await
            .unwrap()
    }

    /// The invariants after any run: sold = Σ confirmed and held units ≤
    /// stock, held = Σ held units, nobody over the limit, and sale_users
    /// agrees with the orders. Returns Σ confirmed and held.
    pub async fn check_books(&self, sale: &str, stock: i64, limit: i64) -> i64 {
        let rows = self.stored_orders(sale).await;
        let mut per_user: HashMap<&str, i64> = HashMap::new();
        let (mut total, mut held) = (0, 0);
        for (_, user, q, status) in &rows {
            if status == "CONFIRMED" || status == "HELD" {
                *per_user.entry(user).or_default() += q;
                total += q;
            }
            if status == "HELD" {
                held += q;
            }
        }
        assert!(total <= stock, "oversold: {total} > {stock}");
        assert_eq!(
            self.sold_column(sale).await,
            total,
            "sold column = Σ confirmed and held units"
        );
        let held_column: i64 = sqlx::query_scalar("SELECT held FROM sales WHERE id = ?")
            .bind(sale)
            .fetch_one(self.svc.core.db.pool())
            .await
            .unwrap();
        assert_eq!(held_column, held, "held column = Σ held units");
        for (user, units) in &per_user {
            assert!(*units <= limit, "{user} holds {units} > limit {limit}");
        }
        let held: Vec<(String, i64)> =
            sqlx::query_as("SELECT user_id, units FROM sale_users WHERE sale_id = ? AND units > 0")
                .bind(sale)
                .fetch_all(self.svc.core.db.pool())
                .await
                .unwrap();
        assert_eq!(held.len(), per_user.len(), "sale_users has every holder");
        for (user, units) in held {
            assert_eq!(per_user.get(user.as_str()), Some(&units), "units of {user}");
        }
        total
    }
}
