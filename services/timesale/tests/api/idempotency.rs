//! `Idempotency-Key` on time-sale mutations (API.md): a retried order with
//! the same key is the first order, not a second one.

use serde_json::json;

use crate::helpers::{spawn_app, Backend};

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

promo_platform::on_both_backends!(retried_order_orders_once);
