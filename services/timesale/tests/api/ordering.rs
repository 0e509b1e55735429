//! The headline invariant, per strategy: stock 300, 1,500 users each
//! sending two orders of 1–3 units at once (per-user limit 3) — confirmed
//! units sum to exactly the stock, nobody over their limit, every success
//! maps to one stored order, every refusal a 409 or 410, no 5xx. And the
//! same for one hot sale over 16 buckets: stock 1,000, 2,500 users.

use std::collections::HashMap;

use futures::{future::join_all, stream, StreamExt};

use crate::helpers::{spawn_app, Backend, TestApp};

const LIMIT: i64 = 3;

/// A storm's size: the sale's stock and buckets, and how many users each
/// send two orders.
#[derive(Clone, Copy)]
struct Shape {
    stock: i64,
    users: usize,
    buckets: u32,
}

const ONE_BUCKET: Shape = Shape {
    stock: 300,
    users: 1500,
    buckets: 1,
};

/// Demand (2,500 users × 2 orders of 1–3 units) is about ten times the
/// stock, so the buckets must move units to sell out exactly.
const SIXTEEN_BUCKETS: Shape = Shape {
    stock: 1000,
    users: 2500,
    buckets: 16,
};

/// Quantity of a user's n-th order: 1–3, spread evenly.
fn quantity(user: usize, n: usize) -> i64 {
    ((user * 7 + n * 3) % 3) as i64 + 1
}

/// Every user twice, interleaved so a user's two orders race each other,
/// 512 at a time. Returns (user, quantity, answer).
async fn storm(
    app: &TestApp,
    version: &str,
    sale: &str,
    users: usize,
) -> Vec<(String, i64, crate::helpers::Answer)> {
    let orders = (0..users * 2).map(|i| {
        let (user, n) = (i % users, i / users);
        let q = quantity(user, n);
        let user = format!("user-{user}");
        async move {
            let a = app.order(version, sale, &user, q).await;
            (user, q, a)
        }
    });
    stream::iter(orders).buffer_unordered(512).collect().await
}

/// Fresh one-unit buyers until the sale answers sold out: whatever the
/// storm left (no partial fills) is taken, so the stock ends exactly used.
async fn sweep(app: &TestApp, version: &str, sale: &str) -> Vec<String> {
    let mut accepted = Vec::new();
    for i in 0..50 {
        let a = app.order(version, sale, &format!("sweeper-{i}"), 1).await;
        match a.status {
            201 | 202 => accepted.push(a.body["orderId"].as_str().unwrap().to_string()),
            410 => return accepted,
            s => panic!("sweep answered {s}: {}", a.body),
        }
    }
    panic!("the sale never sold out");
}

async fn run(backend: Backend, version: &str, strategy: &str) {
    run_shaped(backend, version, strategy, ONE_BUCKET).await
}

async fn run_shaped(backend: Backend, version: &str, strategy: &str, shape: Shape) {
    let app = spawn_app(backend).await;
    let mut spec = crate::helpers::open_sale(shape.stock, LIMIT, strategy);
    spec["buckets"] = shape.buckets.into();
    let created = app.put_sale("storm", spec).await;
    assert_eq!(created.status, 201, "{}", created.body);
    let answers = storm(&app, version, "storm", shape.users).await;
    let queued = strategy == "QUEUED";
    let mut successes: HashMap<String, (String, i64)> = HashMap::new();
    for (user, q, a) in &answers {
        match a.status {
            201 if !queued => {
                assert_eq!(a.body["status"], "CONFIRMED");
                assert_eq!(a.body["userId"], user.as_str());
                assert_eq!(a.body["quantity"], *q);
                assert_eq!(a.body["amount"], 60_000 * q);
                let id = a.body["orderId"].as_str().unwrap().to_string();
                successes.insert(id, (user.clone(), *q));
            }
            202 if queued => {
                assert_eq!(a.body["status"], "PENDING");
                let id = a.body["orderId"].as_str().unwrap().to_string();
                successes.insert(id, (user.clone(), *q));
            }
            409 => assert_eq!(a.body["code"], "limit_exceeded", "{}", a.body),
            410 => assert_eq!(a.body["code"], "sold_out", "{}", a.body),
            s => panic!("unexpected {s}: {}", a.body),
        }
    }
    for id in sweep(&app, version, "storm").await {
        successes.insert(id, (String::new(), 1));
    }
    if queued {
        let ids: Vec<String> = successes.keys().cloned().collect();
        for d in app.wait_decided(&ids).await {
            assert_eq!(
                d["status"], "CONFIRMED",
                "admitted orders are confirmed: {d}"
            );
        }
    }
    let total = app.check_books("storm", shape.stock, LIMIT).await;
    assert_eq!(
        total, shape.stock,
        "demand exceeded the stock, so all of it is sold"
    );
    let stored: HashMap<String, (String, i64, String)> = app
        .stored_orders("storm")
        .await
        .into_iter()
        .map(|(id, u, q, s)| (id, (u, q, s)))
        .collect();
    for (id, (user, q)) in &successes {
        let (u, sq, status) = stored
            .get(id)
            .unwrap_or_else(|| panic!("success {id} has no row"));
        assert_eq!(status, "CONFIRMED");
        assert_eq!(sq, q);
        if !user.is_empty() {
            assert_eq!(u, user);
        }
    }
    let confirmed_rows = stored.values().filter(|(_, _, s)| s == "CONFIRMED").count();
    assert_eq!(
        confirmed_rows,
        successes.len(),
        "every confirmed row was answered to someone"
    );
    let view = app.get("/time-sales/storm").await.body;
    assert_eq!(
        (
            view["sold"].as_i64(),
            view["remaining"].as_i64(),
            view["pending"].as_i64()
        ),
        (Some(shape.stock), Some(0), Some(0))
    );
}

async fn v1_database(backend: Backend) {
    run(backend, "v1", "DATABASE").await
}

async fn v2_redis_stock(backend: Backend) {
    run(backend, "v2", "REDIS_LOCK").await
}

async fn v2_redis_stock_over_buckets(backend: Backend) {
    run_shaped(backend, "v2", "REDIS_LOCK", SIXTEEN_BUCKETS).await
}

async fn v3_queued_over_buckets(backend: Backend) {
    run_shaped(backend, "v3", "QUEUED", SIXTEEN_BUCKETS).await
}

async fn v3_queued(backend: Backend) {
    run(backend, "v3", "QUEUED").await
}

/// The unversioned route follows the sale's strategy.
async fn default_route_follows_the_strategy(backend: Backend) {
    let app = spawn_app(backend).await;
    for (sale, strategy, status) in [
        ("d1", "DATABASE", 201),
        ("d2", "REDIS_LOCK", 201),
        ("d3", "QUEUED", 202),
    ] {
        app.sale(sale, 5, 2, strategy).await;
        let a = app.order("", sale, "alice", 2).await;
        assert_eq!(a.status, status, "{strategy}: {}", a.body);
        let id = a.body["orderId"].as_str().unwrap().to_string();
        let o = &app.wait_decided(&[id]).await[0];
        assert_eq!(o["status"], "CONFIRMED");
        assert_eq!(o["strategy"], strategy);
        assert_eq!(o["sale"], sale);
        assert_eq!(o["amount"], 120_000);
    }
}

/// V2 decides whatever queued up in one transaction: orders for an open
/// sale, a paused one and an unknown one, interleaved, each get their own
/// sale's answer, and the open one sells exactly its stock.
async fn v2_batches_mixing_sales(backend: Backend) {
    let app = spawn_app(backend).await;
    app.sale("open", 50, 2, "REDIS_LOCK").await;
    let mut paused = crate::helpers::open_sale(50, 2, "REDIS_LOCK");
    paused["paused"] = serde_json::json!(true);
    assert_eq!(app.put_sale("paused", paused).await.status, 201);
    let sales = ["open", "paused", "missing"];
    let answers = join_all((0..600).map(|i| {
        let (app, sale) = (&app, sales[i % 3]);
        async move { (sale, app.order("v2", sale, &format!("u{}", i / 6), 2).await) }
    }))
    .await;
    let mut confirmed = 0;
    for (sale, a) in &answers {
        match (*sale, a.status) {
            ("open", 201) => {
                assert_eq!(a.body["status"], "CONFIRMED");
                confirmed += a.body["quantity"].as_i64().unwrap();
            }
            ("open", 410) => assert_eq!(a.body["code"], "sold_out"),
            ("open", 409) => assert_eq!(a.body["code"], "limit_exceeded"),
            ("paused", 422) => assert_eq!(a.body["code"], "not_active"),
            ("missing", 404) => assert_eq!(a.body["code"], "sale_not_found"),
            (s, st) => panic!("{s}: unexpected {st}: {}", a.body),
        }
    }
    assert_eq!(confirmed, 50);
    assert_eq!(app.check_books("open", 50, 2).await, 50);
    assert!(app.stored_orders("paused").await.is_empty());
}

promo_platform::on_both_backends!(
    v1_database,
    v2_batches_mixing_sales,
    default_route_follows_the_strategy
);
promo_platform::on_every_backend!(v2_redis_stock, v3_queued, v3_queued_over_buckets);
// V2 takes units through the same buckets code as V3 (`buckets::take`).
promo_platform::on_both_backends!(v2_redis_stock_over_buckets);

/// Clients that give up mid-request (the server drops their handlers) leak
/// no stock: every unit taken from the counters is sold or given back.
async fn disconnecting_clients_leak_no_stock(backend: Backend) {
    const STOCK: i64 = 100_000;
    let app = spawn_app(backend).await;
    let addr = app.base.trim_start_matches("http://").to_string();
    for (sale, version, strategy) in [("leak2", "v2", "REDIS_LOCK"), ("leak3", "v3", "QUEUED")] {
        app.sale(sale, STOCK, 1, strategy).await;
        // Each client sends its order and hangs up at once, without reading.
        join_all((0..400).map(|i| {
            let addr = addr.clone();
            async move {
                use tokio::io::AsyncWriteExt;
                let body = format!(r#"{{"userId":"u{i}","quantity":1}}"#);
                let req = format!(
                    "POST /{version}/time-sales/{sale}/orders HTTP/1.1\r\nHost: x\r\n\
                     Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                );
                let mut conn = tokio::net::TcpStream::connect(&addr).await.unwrap();
                conn.write_all(req.as_bytes()).await.unwrap();
                tokio::time::sleep(std::time::Duration::from_millis(1)).await;
                drop(conn);
            }
        }))
        .await;
        // Let the abandoned work finish, then the books must balance.
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let v = app.get(&format!("/time-sales/{sale}")).await.body;
            let (sold, pending, remaining) = (
                v["sold"].as_i64().unwrap(),
                v["pending"].as_i64().unwrap(),
                v["remaining"].as_i64().unwrap(),
            );
            if pending == 0 && sold + remaining == STOCK {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{strategy}: sold {sold} + pending {pending} + remaining {remaining} != {STOCK}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        app.check_books(sale, STOCK, 1).await;
    }
}

promo_platform::on_both_backends!(disconnecting_clients_leak_no_stock);
