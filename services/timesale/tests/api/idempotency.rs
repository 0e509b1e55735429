//! `Idempotency-Key` on time-sale mutations (docs/api.md): a retried order with
//! the same key is the first order, not a second one.

use promo_platform::{
    http::idempotency::Keyed,
    testing::{claim_like, forget_idempotent_answer},
    time::now_ms,
};
use serde_json::json;

use crate::helpers::{spawn_app, Backend, LEASE};

async fn retried_order_orders_once(backend: Backend) {
    let app = spawn_app(backend).await;
    for (v, strategy) in [("v1", "DATABASE"), ("v2", "REDIS_LOCK"), ("v3", "QUEUED")] {
        let sale = format!("s-{v}");
        // Room for three units per user: without the key a retry would be a second order.
        app.sale(&sale, 10, 3, strategy).await;
        let path = format!("/{v}/time-sales/{sale}/orders");
        let body = json!({"userId": "buyer", "quantity": 1});
        let first = app.post_with_key(&path, body.clone(), "order-1").await;
        assert!(
            first.status == 201 || first.status == 202,
            "{v}: {}",
            first.body
        );
        let again = app.post_with_key(&path, body.clone(), "order-1").await;
        assert_eq!(
            (again.status, &again.body, again.replayed),
            (first.status, &first.body, true),
            "{v}"
        );
        let other = app
            .post_with_key(&path, json!({"userId": "buyer", "quantity": 2}), "order-1")
            .await;
        assert_eq!(other.body["code"], "idempotency_key_reused", "{v}");
        let order_id = first.body["orderId"].as_str().unwrap().to_string();
        app.wait_decided(std::slice::from_ref(&order_id)).await;
        assert_eq!(app.check_books(&sale, 10, 3).await, 1, "{v}: one unit sold");

        // Cancel twice with one key: the first answer, replayed.
        let cancel = format!("/orders/{order_id}/cancel");
        let c1 = app.post_with_key(&cancel, json!({}), "cancel-1").await;
        assert_eq!(c1.status, 200, "{v}: {}", c1.body);
        let c2 = app.post_with_key(&cancel, json!({}), "cancel-1").await;
        assert_eq!((c2.status, &c2.body, c2.replayed), (200, &c1.body, true));
        assert_eq!(app.check_books(&sale, 10, 3).await, 0, "{v}: returned once");
    }
}

/// A key whose first run died unanswered: 409 within the lease; after it
/// one retry answers from the first run's order when it exists (never a
/// second order), orders when the first run died before any effect, and
/// keeps the claim while the first order is still in flight.
async fn a_dead_runs_claim_is_taken_over_after_its_lease(backend: Backend) {
    let app = spawn_app(backend).await;
    let lease_ago = || now_ms() - LEASE.as_millis() as i64 - 1;
    for (v, strategy, created) in [
        ("v1", "DATABASE", 201),
        ("v2", "REDIS_LOCK", 201),
        ("v3", "QUEUED", 202),
    ] {
        let sale = format!("lease-{v}");
        app.sale(&sale, 10, 3, strategy).await;
        let path = format!("/{v}/time-sales/{sale}/orders");
        let body = json!({"userId": "buyer", "quantity": 1});
        let (done, none) = (format!("done-{v}"), format!("none-{v}"));
        let first = app.post_with_key(&path, body.clone(), &done).await;
        assert_eq!(first.status, created, "{v}: {}", first.body);
        let first_id = first.body["orderId"].as_str().unwrap().to_string();
        assert_eq!(first_id, Keyed::effect_id(&format!("POST {path}"), &done));
        app.wait_decided(std::slice::from_ref(&first_id)).await;

        forget_idempotent_answer(&app.svc.core.db, &done, now_ms()).await;
        let early = app.post_with_key(&path, body.clone(), &done).await;
        assert_eq!(
            (early.status, early.body["code"].as_str()),
            (409, Some("idempotency_in_progress")),
            "{v}"
        );
        forget_idempotent_answer(&app.svc.core.db, &done, lease_ago()).await;
        let retaken = app.post_with_key(&path, body.clone(), &done).await;
        assert_eq!(
            (retaken.status, retaken.replayed),
            (created, false),
            "{v}: {}",
            retaken.body
        );
        assert_eq!(retaken.body["orderId"], first_id.as_str(), "{v}");
        assert_eq!(
            app.stored_orders(&sale).await.len(),
            1,
            "{v}: no second order"
        );

        claim_like(&app.svc.core.db, &done, &none, lease_ago()).await;
        let ran = app.post_with_key(&path, body.clone(), &none).await;
        assert_eq!(ran.status, created, "{v}: {}", ran.body);
        let ran_id = ran.body["orderId"].as_str().unwrap().to_string();
        assert_ne!(ran_id, first_id, "{v}: an order of its own");
        app.wait_decided(&[ran_id]).await;
        assert_eq!(app.check_books(&sale, 10, 3).await, 2, "{v}");
    }

    let path = "/v3/time-sales/lease-v3/orders";
    let id = Keyed::effect_id(&format!("POST {path}"), "flying");
    app.svc
        .core
        .counters
        .mark_pending(&[&id], std::time::Duration::from_secs(60))
        .await
        .unwrap();
    claim_like(&app.svc.core.db, "done-v3", "flying", lease_ago()).await;
    let body = json!({"userId": "buyer", "quantity": 1});
    let unsettled = app.post_with_key(path, body.clone(), "flying").await;
    assert_eq!(
        (unsettled.status, unsettled.body["code"].as_str()),
        (409, Some("idempotency_in_progress"))
    );
    let again = app.post_with_key(path, body, "flying").await;
    assert_eq!(
        (again.status, again.replayed),
        (409, false),
        "the claim was kept, not recorded"
    );
    assert_eq!(
        app.stored_orders("lease-v3").await.len(),
        2,
        "nothing ordered"
    );
}

promo_platform::on_both_backends!(
    retried_order_orders_once,
    a_dead_runs_claim_is_taken_over_after_its_lease
);
