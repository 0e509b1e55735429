//! Window, pause, quantities, unknown sales and orders, sale updates, and
//! the sale listings — the same answer on every route.

use serde_json::json;

use crate::helpers::{open_sale, spawn_app, Backend};

const ROUTES: [&str; 4] = ["", "v1", "v2", "v3"];

async fn window_and_pause(backend: Backend) {
    let app = spawn_app(backend).await;
    let now = chrono::Utc::now();
    let mut later = open_sale(10, 3, "QUEUED");
    later["startsAt"] = json!((now + chrono::Duration::hours(1)).to_rfc3339());
    assert_eq!(app.put_sale("later", later).await.status, 201);
    let mut over = open_sale(10, 3, "REDIS_LOCK");
    over["startsAt"] = json!((now - chrono::Duration::days(2)).to_rfc3339());
    over["endsAt"] = json!((now - chrono::Duration::days(1)).to_rfc3339());
    assert_eq!(app.put_sale("over", over).await.status, 201);
    let mut paused = open_sale(10, 3, "DATABASE");
    paused["paused"] = json!(true);
    assert_eq!(app.put_sale("paused", paused.clone()).await.status, 201);
    for sale in ["later", "over", "paused"] {
        for v in ROUTES {
            let a = app.order(v, sale, "u", 1).await;
            assert_eq!(
                (a.status, a.body["code"].as_str()),
                (422, Some("not_active")),
                "{sale} {v}: {}",
                a.body
            );
        }
    }
    // Unpausing opens it.
    paused["paused"] = json!(false);
    assert_eq!(app.put_sale("paused", paused).await.status, 200);
    assert_eq!(app.order("v1", "paused", "u", 1).await.status, 201);

    // The listing shows active and upcoming sales, not ended ones.
    let list = app.get("/time-sales").await;
    assert_eq!(list.status, 200);
    let ids: Vec<&str> = list
        .body
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["sale"].as_str().unwrap())
        .collect();
    assert!(ids.contains(&"later") && ids.contains(&"paused"), "{ids:?}");
    assert!(!ids.contains(&"over"), "{ids:?}");
    let later = list
        .body
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["sale"] == "later")
        .unwrap();
    assert_eq!(
        (later["remaining"].as_i64(), later["sold"].as_i64()),
        (Some(10), Some(0))
    );
}

async fn quantities_and_unknowns(backend: Backend) {
    let app = spawn_app(backend).await;
    for (sale, strategy) in [("s1", "DATABASE"), ("s2", "REDIS_LOCK"), ("s3", "QUEUED")] {
        app.sale(sale, 10, 3, strategy).await;
    }
    for v in ROUTES {
        for sale in ["s1", "s2", "s3"] {
            for q in [0, -1] {
                let a = app.order(v, sale, "u", q).await;
                assert_eq!(
                    (a.status, a.body["code"].as_str()),
                    (422, Some("invalid_quantity")),
                    "{v} {sale} {q}: {}",
                    a.body
                );
            }
            let a = app.order(v, sale, "u", 4).await;
            assert_eq!(
                (a.status, a.body["code"].as_str()),
                (409, Some("limit_exceeded")),
                "{v} {sale}: {}",
                a.body
            );
            let a = app.order(v, sale, "u", 11).await;
            assert!(a.status == 409 || a.status == 410, "{v} {sale}: {}", a.body);
        }
        let a = app.order(v, "nope", "u", 1).await;
        assert_eq!(
            (a.status, a.body["code"].as_str()),
            (404, Some("sale_not_found")),
            "{v}: {}",
            a.body
        );
    }
    // More than what is left is refused whole: no partial fills.
    assert_eq!(app.order("v1", "s1", "a", 3).await.status, 201);
    assert_eq!(app.order("v1", "s1", "b", 3).await.status, 201);
    assert_eq!(app.order("v1", "s1", "c", 3).await.status, 201);
    let a = app.order("v1", "s1", "d", 2).await;
    assert_eq!(
        (a.status, a.body["code"].as_str()),
        (410, Some("sold_out")),
        "{}",
        a.body
    );
    assert_eq!(app.order("v1", "s1", "d", 1).await.status, 201);

    let a = app.get("/orders/no-such-order").await;
    assert_eq!(
        (a.status, a.body["code"].as_str()),
        (404, Some("order_not_found"))
    );
    let a = app.cancel("no-such-order").await;
    assert_eq!(
        (a.status, a.body["code"].as_str()),
        (404, Some("order_not_found"))
    );
    assert_eq!(app.get("/time-sales/nope").await.status, 404);
}

async fn stock_updates(backend: Backend) {
    let app = spawn_app(backend).await;
    for (sale, strategy) in [("u1", "DATABASE"), ("u2", "REDIS_LOCK"), ("u3", "QUEUED")] {
        app.sale(sale, 4, 2, strategy).await;
        for user in ["a", "b"] {
            let a = app.order("", sale, user, 2).await;
            assert!(a.status == 201 || a.status == 202, "{}", a.body);
            let id = a.body["orderId"].as_str().unwrap().to_string();
            app.wait_decided(&[id]).await;
        }
        assert_eq!(
            app.order("", sale, "c", 1).await.status,
            410,
            "{strategy} sold out"
        );
        // Below what is sold: refused, nothing changes.
        let mut spec = open_sale(3, 2, strategy);
        let a = app.put_sale(sale, spec.clone()).await;
        assert_eq!(
            (a.status, a.body["code"].as_str()),
            (409, Some("stock_below_sold")),
            "{}",
            a.body
        );
        // Raised: exactly the difference becomes orderable.
        spec["stock"] = json!(6);
        let a = app.put_sale(sale, spec).await;
        assert_eq!(
            (a.status, a.body["remaining"].as_i64()),
            (200, Some(2)),
            "{}",
            a.body
        );
        let a = app.order("", sale, "c", 2).await;
        assert!(a.status == 201 || a.status == 202, "{strategy}: {}", a.body);
        let id = a.body["orderId"].as_str().unwrap().to_string();
        app.wait_decided(&[id]).await;
        assert_eq!(
            app.order("", sale, "d", 1).await.status,
            410,
            "{strategy} sold out again"
        );
        assert_eq!(app.check_books(sale, 6, 2).await, 6);
    }
}

async fn a_rejected_or_pending_order_cannot_be_cancelled(backend: Backend) {
    let app =
        crate::helpers::spawn_app_with(backend, crate::helpers::Options::without_consumer()).await;
    app.sale("p", 5, 1, "QUEUED").await;
    let a = app.order("v3", "p", "u", 1).await;
    assert_eq!(a.status, 202);
    let id = a.body["orderId"].as_str().unwrap();
    let o = app.get(&format!("/orders/{id}")).await;
    assert_eq!(
        (o.status, o.body["status"].as_str()),
        (200, Some("PENDING"))
    );
    let c = app.cancel(id).await;
    assert_eq!(
        (c.status, c.body["code"].as_str()),
        (409, Some("not_cancellable")),
        "{}",
        c.body
    );
}

promo_platform::on_both_backends!(
    window_and_pause,
    quantities_and_unknowns,
    stock_updates,
    a_rejected_or_pending_order_cannot_be_cancelled
);
