//! Every change of an order is one CloudEvent in the outbox, published by
//! the relay and listed by `GET /admin/events`: held, confirmed,
//! cancelled, expired — each with one id, about the sale.

use std::{collections::HashMap, time::Duration};

use serde_json::Value;

use crate::helpers::{open_sale, spawn_app, Backend};

async fn run(backend: Backend, version: &str, strategy: &str) {
    let app = spawn_app(backend).await;
    let mut spec = open_sale(10, 1, strategy);
    spec["holdSeconds"] = 600.into();
    assert_eq!(app.put_sale("ev", spec).await.status, 201);
    let mut ids = Vec::new();
    for user in ["a", "b", "c"] {
        let a = app.order(version, "ev", user, 1).await;
        let id = a.body["orderId"].as_str().unwrap().to_string();
        app.wait_decided(std::slice::from_ref(&id)).await;
        ids.push(id);
    }
    assert_eq!(app.confirm(&ids[0], "pay").await.status, 200);
    assert_eq!(
        app.confirm(&ids[0], "pay").await.status,
        200,
        "no second event"
    );
    assert_eq!(app.cancel(&ids[1]).await.status, 200);
    assert_eq!(app.cancel(&ids[1]).await.status, 200, "no second event");
    app.hold_ends_in(&ids[2..], -1).await;

    let events = app.events_about("ev", 6).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let events_again = app.events_about("ev", 6).await;
    assert_eq!(events.len(), 6, "exactly one event per change: {events:#?}");
    assert_eq!(events_again.len(), 6);
    let mut by_id: HashMap<&str, &Value> = HashMap::new();
    for e in &events {
        assert_eq!(e["specversion"], "1.0");
        assert_eq!(e["source"], "/promo/timesale");
        assert!(by_id.insert(e["id"].as_str().unwrap(), e).is_none(), "{e}");
    }
    let kind = |id: &str| format!("order.{id}");
    for (n, (id, happened)) in [
        (0, "held"),
        (0, "confirmed"),
        (1, "held"),
        (1, "cancelled"),
        (2, "held"),
        (2, "expired"),
    ]
    .iter()
    .enumerate()
    {
        let key = format!("{}:{}", kind(happened), ids[*id]);
        let e = by_id
            .get(key.as_str())
            .unwrap_or_else(|| panic!("#{n} {key} missing"));
        assert_eq!(e["type"], format!("dev.promo.order.{happened}"));
        assert_eq!(e["data"]["orderId"], ids[*id].as_str());
        assert_eq!(e["data"]["status"], happened.to_uppercase());
    }
    // One subject's events come in the order they happened.
    let position = |key: String| events.iter().position(|e| e["id"] == key.as_str()).unwrap();
    for (id, last) in [(0, "confirmed"), (1, "cancelled"), (2, "expired")] {
        assert!(
            position(format!("order.held:{}", ids[id]))
                < position(format!("order.{last}:{}", ids[id]))
        );
    }
    let bad = app.get("/admin/events?after=nonsense").await;
    assert_eq!(
        (bad.status, &bad.body["code"]),
        (400, &"invalid_cursor".into())
    );
}

async fn v1_every_change_is_one_event(backend: Backend) {
    run(backend, "v1", "DATABASE").await
}

async fn v2_every_change_is_one_event(backend: Backend) {
    run(backend, "v2", "REDIS_LOCK").await
}

async fn v3_every_change_is_one_event(backend: Backend) {
    run(backend, "v3", "QUEUED").await
}

promo_platform::on_both_backends!(
    v1_every_change_is_one_event,
    v2_every_change_is_one_event,
    v3_every_change_is_one_event
);
