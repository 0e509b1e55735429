//! `Idempotency-Key` on coupon mutations (API.md): the same call with the
//! same key answers the first answer and changes nothing.

use serde_json::json;

use crate::helpers::{spawn_app, spawn_app_with, Backend, Options};

async fn same_key_same_answer_every_strategy(backend: Backend) {
    let app = spawn_app(backend).await;
    for (v, strategy) in [("v1", "DATABASE"), ("v2", "REDIS_LOCK"), ("v3", "QUEUED")] {
        app.campaign(&format!("c-{v}"), 10, 1, strategy).await;
    }
    let mut v3_request = String::new();
    for (v, created) in [("v1", 201), ("v2", 201), ("v3", 202)] {
        let path = format!("/{v}/campaigns/c-{v}/issue");
        let body = json!({"userId": format!("user-{v}")});
        let key = format!("key-{v}");
        let first = app.post_with_key(&path, body.clone(), &key).await;
        assert_eq!(first.status, created, "{v}: {}", first.body);
        assert!(!first.replayed);
        let again = app.post_with_key(&path, body.clone(), &key).await;
        assert_eq!(
            (again.status, &again.body, again.replayed),
            (created, &first.body, true),
            "{v}: first {}",
            first.body
        );
        // Without the key the user is at their limit: the replay issued nothing.
        let plain = app.post(&path, body.clone()).await;
        assert_eq!(plain.status, 409, "{v}: {}", plain.body);
        // The same key for another request is refused, not replayed.
        let other = app
            .post_with_key(&path, json!({"userId": "someone-else"}), &key)
            .await;
        assert_eq!(
            (other.status, other.body["code"].as_str()),
            (422, Some("idempotency_key_reused")),
            "{v}"
        );
        if v == "v3" {
            v3_request = first.body["requestId"].as_str().unwrap().to_string();
        }
    }
    app.wait_decided(&[v3_request]).await;
    for v in ["v1", "v2", "v3"] {
        let stored = app.stored_coupons(&format!("c-{v}")).await;
        assert_eq!(stored.len(), 1, "{v}: one coupon per key");
    }

    // Refusals are answers too: replayed as they were.
    app.campaign("none", 1, 1, "DATABASE").await;
    assert_eq!(app.issue("v1", "none", "taker").await.status, 201);
    let sold = app
        .post_with_key(
            "/v1/campaigns/none/issue",
            json!({"userId": "late"}),
            "late-1",
        )
        .await;
    assert_eq!(sold.status, 410);
    let again = app
        .post_with_key(
            "/v1/campaigns/none/issue",
            json!({"userId": "late"}),
            "late-1",
        )
        .await;
    assert_eq!((again.status, again.replayed), (410, true));
    assert_eq!(again.content_type, "application/problem+json");

    // Keys are ids: a malformed one is refused before anything runs.
    let bad = app
        .post_with_key(
            "/v1/campaigns/c-v1/issue",
            json!({"userId": "x"}),
            "no spaces",
        )
        .await;
    assert_eq!(bad.status, 400, "{}", bad.body);
}

/// A 5xx changed nothing and is not kept: retrying with the same key runs
/// again. Counters lost → 503 until rebuilt, then the same key is admitted.
async fn server_errors_are_not_replayed(backend: Backend) {
    // No consumer yet: the rebuild cannot pass its fence, so the first try
    // answers 503 (after waiting its second for the rebuild).
    let app = spawn_app_with(backend, Options::without_consumer()).await;
    app.campaign("q", 10, 1, "QUEUED").await;
    app.flush_counters().await;
    let body = json!({"userId": "patient"});
    let first = app
        .post_with_key("/v3/campaigns/q/issue", body.clone(), "retry-me")
        .await;
    assert_eq!(first.status, 503, "the first try met the missing counters");
    promo_platform::service::spawn_consumer(&app.svc, app.shutdown.clone());
    let mut statuses = vec![first.status];
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let a = app
            .post_with_key("/v3/campaigns/q/issue", body.clone(), "retry-me")
            .await;
        statuses.push(a.status);
        if a.status == 202 {
            assert!(!a.replayed);
            break;
        }
        assert_eq!(a.status, 503, "{}", a.body);
        assert!(tokio::time::Instant::now() < deadline, "never admitted");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let again = app
        .post_with_key("/v3/campaigns/q/issue", body, "retry-me")
        .await;
    assert_eq!((again.status, again.replayed), (202, true));
}

promo_platform::on_both_backends!(
    same_key_same_answer_every_strategy,
    server_errors_are_not_replayed
);
