//! Every ledger entry is one CloudEvent in the outbox, published by the
//! relay and listed by `GET /admin/events`: points earned, used, refunded
//! and expired, about the user — none for a replayed request or a write
//! that lost its version check and was retried.

use std::{collections::HashSet, time::Duration};

use chrono::Utc;
use serde_json::{json, Value};

use crate::helpers::{spawn_app, Backend};

async fn every_entry_is_one_event(backend: Backend) {
    let app = spawn_app(backend).await;
    let earn = json!({"amount": 100, "reason": "signup"});
    let first = app.mutate("ev", "earn", "k1", earn.clone()).await;
    assert_eq!(first.status, 200, "{}", first.body);
    let again = app.mutate("ev", "earn", "k1", earn).await;
    assert_eq!(again.body, first.body, "a replay: no second entry or event");
    // Concurrent uses race on the account's version; the losers retry, and
    // their rolled-back attempts leave no event.
    let keys: Vec<String> = (0..20).map(|i| format!("u{i}")).collect();
    // A use that lost its retries answers 409 `conflict`; like a client,
    // the test sends it again with the same key.
    let app = &app;
    let uses = keys.iter().enumerate().map(|(i, key)| async move {
        let body = json!({"amount": 3, "reason": "order", "orderId": format!("o{i}")});
        for _ in 0..20 {
            let a = app.mutate("ev", "use", key, body.clone()).await;
            if a.status != 409 {
                return a;
            }
        }
        panic!("use {i}: 409 twenty times");
    });
    let answers = futures::future::join_all(uses).await;
    for a in &answers {
        assert_eq!(a.status, 200, "{}", a.body);
    }
    let used = answers[0].body["entryId"].as_str().unwrap();
    let a = app
        .mutate("ev", "refund", "r1", json!({"entryId": used}))
        .await;
    assert_eq!(a.status, 200, "{}", a.body);
    let soon = (Utc::now() + chrono::Duration::milliseconds(300)).to_rfc3339();
    let a = app
        .mutate(
            "ev",
            "earn",
            "k2",
            json!({"amount": 10, "reason": "promo", "expiresAt": soon}),
        )
        .await;
    assert_eq!(a.status, 200, "{}", a.body);
    tokio::time::sleep(Duration::from_millis(400)).await;
    // Reading the balance expires the 10 points that ran out.
    assert_eq!(app.balance("ev").await, 100 - 60 + 3 + 10 - 10);

    let history = app.get("/users/ev/points/history?limit=100").await.body["items"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(history.len(), 2 + 20 + 1 + 1, "{history:#?}");
    let events = app.events_about("ev", history.len()).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        app.events_about("ev", history.len()).await.len(),
        history.len()
    );
    assert_eq!(
        events.len(),
        history.len(),
        "one event per entry: {events:#?}"
    );
    let want: HashSet<String> = history
        .iter()
        .map(|e| {
            let happened = match e["kind"].as_str().unwrap() {
                "EARN" => "earned",
                "USE" => "used",
                "REFUND" => "refunded",
                "EXPIRE" => "expired",
                k => panic!("kind {k}"),
            };
            format!("points.{happened}:{}", e["entryId"].as_str().unwrap())
        })
        .collect();
    let got: HashSet<String> = events
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(got, want);
    for e in &events {
        assert_eq!(e["source"], "/promo/point");
        assert_eq!(e["data"]["userId"], "ev");
        let entry: &Value = history
            .iter()
            .find(|h| h["entryId"] == e["data"]["entryId"])
            .unwrap();
        assert_eq!(e["data"]["amount"], entry["amount"]);
        assert_eq!(e["data"]["balanceAfter"], entry["balanceAfter"]);
    }
    // One user's events come in ledger order: each balanceAfter follows
    // from the one before.
    let mut balance = 0;
    for e in &events {
        balance += e["data"]["amount"].as_i64().unwrap();
        assert_eq!(e["data"]["balanceAfter"], balance, "{events:#?}");
    }
}

promo_platform::on_both_backends!(every_entry_is_one_event);
