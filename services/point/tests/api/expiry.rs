//! Expiry: uses take the soonest-expiring points first; expired points are
//! never spendable and an EXPIRE entry records them, the same whether a
//! read found them (lazily) or the sweep did; a refund restores exactly the
//! lots its use took, once.

use std::time::Duration;

use chrono::Utc;
use serde_json::{json, Value};

use crate::helpers::{spawn_app, Backend, TestApp};

async fn earn_expiring(app: &TestApp, user: &str, amount: i64, in_ms: Option<i64>) -> String {
    let mut body = json!({"amount": amount, "reason": "test"});
    if let Some(ms) = in_ms {
        body["expiresAt"] = json!((Utc::now() + chrono::Duration::milliseconds(ms)).to_rfc3339());
    }
    let a = app
        .mutate(user, "earn", &uuid::Uuid::new_v4().to_string(), body)
        .await;
    assert_eq!(a.status, 200, "{}", a.body);
    a.body["entryId"].as_str().unwrap().to_string()
}

async fn spend(app: &TestApp, user: &str, amount: i64) -> (u16, Value) {
    let a = app
        .mutate(
            user,
            "use",
            &uuid::Uuid::new_v4().to_string(),
            json!({"amount": amount, "reason": "order"}),
        )
        .await;
    (a.status, a.body)
}

async fn lot(app: &TestApp, lot_id: &str) -> i64 {
    sqlx::query_scalar("SELECT remaining FROM lots WHERE lot_id = ?")
        .bind(lot_id)
        .fetch_one(app.svc.db.pool())
        .await
        .unwrap()
}

async fn history(app: &TestApp, user: &str) -> Vec<Value> {
    app.get(&format!("/users/{user}/points/history?limit=100"))
        .await
        .body["items"]
        .as_array()
        .unwrap()
        .clone()
}

const DAY: i64 = 24 * 3600 * 1000;

async fn soonest_expiring_points_go_first(backend: Backend) {
    let app = spawn_app(backend).await;
    let a = earn_expiring(&app, "u", 10, Some(DAY)).await;
    let b = earn_expiring(&app, "u", 10, Some(2 * DAY)).await;
    let c = earn_expiring(&app, "u", 10, None).await;
    let d = earn_expiring(&app, "u", 10, Some(DAY / 2)).await;
    assert_eq!(spend(&app, "u", 15).await.0, 200);
    assert_eq!(
        (lot(&app, &d).await, lot(&app, &a).await),
        (0, 5),
        "d then a"
    );
    assert_eq!((lot(&app, &b).await, lot(&app, &c).await), (10, 10));
    assert_eq!(spend(&app, "u", 20).await.0, 200);
    assert_eq!(
        (
            lot(&app, &a).await,
            lot(&app, &b).await,
            lot(&app, &c).await
        ),
        (0, 0, 5),
        "never-expiring last"
    );
    let view = app.get("/users/u/points").await.body;
    assert_eq!(view["balance"], 5);
    assert_eq!(
        view["expiringSoon"],
        json!([]),
        "what is left never expires"
    );
}

async fn expired_points_are_never_spendable(backend: Backend) {
    let app = spawn_app(backend).await;
    earn_expiring(&app, "u", 10, Some(800)).await;
    earn_expiring(&app, "u", 5, None).await;
    let view = app.get("/users/u/points").await.body;
    assert_eq!(view["balance"], 15);
    assert_eq!(view["expiringSoon"][0]["amount"], 10);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    // The write path expires first: only 5 are spendable.
    let (status, body) = spend(&app, "u", 6).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (409, Some("insufficient_balance")),
        "{body}"
    );
    assert_eq!(app.balance("u").await, 5, "the cached 15 was invalidated");
    let h = history(&app, "u").await;
    assert_eq!(
        (h[0]["kind"].as_str(), h[0]["amount"].as_i64()),
        (Some("EXPIRE"), Some(-10))
    );
    assert_eq!(h[0]["balanceAfter"], 5);
    let (balance, sum, _) = app.books("u").await;
    assert_eq!((balance, sum), (5, 5));
}

async fn lazy_and_swept_expiry_agree(backend: Backend) {
    let app = spawn_app(backend).await;
    for user in ["lazy", "swept"] {
        earn_expiring(&app, user, 30, Some(800)).await;
        earn_expiring(&app, user, 12, None).await;
        assert_eq!(spend(&app, user, 20).await.0, 200);
    }
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(app.balance("lazy").await, 12, "a read expires lazily");
    assert!(
        app.svc.sweep().await.unwrap() >= 1,
        "the sweep finds the other"
    );
    assert_eq!(
        app.svc.sweep().await.unwrap(),
        0,
        "and nothing is left to sweep"
    );
    assert_eq!(app.balance("lazy").await, 12);
    assert_eq!(app.balance("swept").await, 12);
    let shape = |h: Vec<Value>| -> Vec<(String, i64, i64)> {
        h.iter()
            .map(|e| {
                (
                    e["kind"].as_str().unwrap().to_string(),
                    e["amount"].as_i64().unwrap(),
                    e["balanceAfter"].as_i64().unwrap(),
                )
            })
            .collect()
    };
    let lazy = shape(history(&app, "lazy").await);
    assert_eq!(
        lazy,
        shape(history(&app, "swept").await),
        "the same entries either way"
    );
    assert_eq!(
        lazy[0],
        ("EXPIRE".to_string(), -10, 12),
        "what was left of the lot, once"
    );
    assert_eq!(app.books("lazy").await.0, app.books("swept").await.0);
}

async fn a_refund_restores_its_lots_once(backend: Backend) {
    let app = spawn_app(backend).await;
    let l1 = earn_expiring(&app, "u", 10, Some(DAY)).await;
    let l2 = earn_expiring(&app, "u", 10, None).await;
    let (status, body) = spend(&app, "u", 15).await;
    assert_eq!(status, 200);
    let use_id = body["entryId"].as_str().unwrap().to_string();
    assert_eq!((lot(&app, &l1).await, lot(&app, &l2).await), (0, 5));
    let refund = |key: &'static str, id: String| {
        let app = &app;
        async move { app.mutate("u", "refund", key, json!({"entryId": id})).await }
    };
    let r = refund("r1", use_id.clone()).await;
    assert_eq!(
        (r.status, r.body["balance"].as_i64()),
        (200, Some(20)),
        "{}",
        r.body
    );
    assert_eq!(
        (lot(&app, &l1).await, lot(&app, &l2).await),
        (10, 10),
        "each lot got its own points back"
    );
    assert_eq!(
        refund("r1", use_id.clone()).await.body,
        r.body,
        "a replay answers the same"
    );
    let twice = refund("r2", use_id.clone()).await;
    assert_eq!(
        (twice.status, twice.body["code"].as_str()),
        (409, Some("already_refunded"))
    );
    let earn = refund("r3", l1.clone()).await;
    assert_eq!(
        (earn.status, earn.body["code"].as_str()),
        (409, Some("not_refundable"))
    );
    let unknown = refund("r4", "no-such-entry".into()).await;
    assert_eq!(
        (unknown.status, unknown.body["code"].as_str()),
        (404, Some("entry_not_found"))
    );
    let foreign = app
        .mutate("other", "refund", "r5", json!({"entryId": use_id}))
        .await;
    assert_eq!(foreign.status, 404, "another user's entry is not found");
    assert_eq!(app.books("u").await, (20, 20, 4));
}

async fn refunded_points_of_an_expired_lot_expire_at_once(backend: Backend) {
    let app = spawn_app(backend).await;
    earn_expiring(&app, "u", 10, Some(800)).await;
    let (_, body) = spend(&app, "u", 10).await;
    let use_id = body["entryId"].as_str().unwrap().to_string();
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let r = app
        .mutate("u", "refund", "r", json!({"entryId": use_id}))
        .await;
    assert_eq!(
        (r.status, r.body["balance"].as_i64()),
        (200, Some(0)),
        "{}",
        r.body
    );
    let h = history(&app, "u").await;
    let kinds: Vec<&str> = h.iter().map(|e| e["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["EXPIRE", "REFUND", "USE", "EARN"]);
    assert_eq!(app.books("u").await, (0, 0, 4));
}

promo_platform::on_both_backends!(
    soonest_expiring_points_go_first,
    expired_points_are_never_spendable,
    lazy_and_swept_expiry_agree,
    a_refund_restores_its_lots_once,
    refunded_points_of_an_expired_lot_expire_at_once
);
