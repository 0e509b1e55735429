//! `Idempotency-Key` on coupon mutations (docs/api.md): the same call with the
//! same key answers the first answer and changes nothing.

use promo_platform::{
    http::idempotency::Keyed,
    testing::{claim_like, forget_idempotent_answer},
    time::now_ms,
};
use serde_json::json;

use crate::helpers::{spawn_app, spawn_app_with, Backend, Options, LEASE};

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

/// A key whose first run died unanswered answers 409 until its lease ran
/// out; then one retry takes it over and never makes a second coupon: it
/// answers from the first run's coupon (or queued request) when there is
/// one, and issues when the first run died before any effect. A queued
/// request still in flight keeps the claim (409) until it is decided.
async fn a_dead_runs_claim_is_taken_over_after_its_lease(backend: Backend) {
    let app = spawn_app(backend).await;
    let lease_ago = || now_ms() - LEASE.as_millis() as i64 - 1;
    for (v, strategy, created) in [
        ("v1", "DATABASE", 201),
        ("v2", "REDIS_LOCK", 201),
        ("v3", "QUEUED", 202),
    ] {
        // Three per user: only the key keeps a retry from a second coupon.
        let campaign = format!("lease-{v}");
        app.campaign(&campaign, 10, 3, strategy).await;
        let path = format!("/{v}/campaigns/{campaign}/issue");
        let body = json!({"userId": "u"});
        let (done, none) = (format!("done-{v}"), format!("none-{v}"));

        // The effect happened, the answer was never recorded.
        let first = app.post_with_key(&path, body.clone(), &done).await;
        assert_eq!(first.status, created, "{v}: {}", first.body);
        if v == "v3" {
            app.wait_decided(&[first.body["requestId"].as_str().unwrap().into()])
                .await;
        }
        forget_idempotent_answer(&app.svc.core.db, &done, now_ms()).await;
        let early = app.post_with_key(&path, body.clone(), &done).await;
        assert_eq!(
            (early.status, early.body["code"].as_str()),
            (409, Some("idempotency_in_progress")),
            "{v}: within the lease"
        );
        forget_idempotent_answer(&app.svc.core.db, &done, lease_ago()).await;
        let retaken = app.post_with_key(&path, body.clone(), &done).await;
        assert_eq!(
            (retaken.status, retaken.replayed),
            (created, false),
            "{v}: {}",
            retaken.body
        );
        let same = if v == "v3" { "requestId" } else { "couponId" };
        assert_eq!(
            retaken.body[same], first.body[same],
            "{v}: the first effect's answer"
        );
        assert_eq!(
            app.stored_coupons(&campaign).await.len(),
            1,
            "{v}: no second coupon"
        );
        let replay = app.post_with_key(&path, body.clone(), &done).await;
        assert_eq!(
            (replay.status, replay.replayed),
            (created, true),
            "{v}: recorded now"
        );

        // The run died before any effect: the retry issues.
        claim_like(&app.svc.core.db, &done, &none, lease_ago()).await;
        let ran = app.post_with_key(&path, body.clone(), &none).await;
        assert_eq!(ran.status, created, "{v}: {}", ran.body);
        assert_ne!(ran.body[same], first.body[same], "{v}: a coupon of its own");
        if v == "v3" {
            assert_eq!(
                ran.body["requestId"].as_str(),
                Some(Keyed::effect_id(&format!("POST {path}"), &none).as_str()),
                "the request carries the key's effect id"
            );
            app.wait_decided(&[ran.body["requestId"].as_str().unwrap().into()])
                .await;
        }
        assert_eq!(app.stored_coupons(&campaign).await.len(), 2, "{v}");
    }

    // Still in flight: the claim stays in progress, nothing is recorded.
    let path = "/v3/campaigns/lease-v3/issue";
    let flying = "flying";
    let id = Keyed::effect_id(&format!("POST {path}"), flying);
    app.svc
        .core
        .counters
        .mark_pending(&[&id], std::time::Duration::from_secs(60))
        .await
        .unwrap();
    claim_like(&app.svc.core.db, "done-v3", flying, lease_ago()).await;
    let unsettled = app
        .post_with_key(path, json!({"userId": "u"}), flying)
        .await;
    assert_eq!(
        (unsettled.status, unsettled.body["code"].as_str()),
        (409, Some("idempotency_in_progress")),
        "{}",
        unsettled.body
    );
    let status: Option<i64> =
        sqlx::query_scalar("SELECT status FROM idempotency_keys WHERE idem_key = ?")
            .bind(flying)
            .fetch_one(app.svc.core.db.pool())
            .await
            .unwrap();
    assert_eq!(status, None, "the claim is still in progress");
    assert_eq!(
        app.stored_coupons("lease-v3").await.len(),
        2,
        "nothing issued"
    );
}

promo_platform::on_both_backends!(
    same_key_same_answer_every_strategy,
    server_errors_are_not_replayed,
    a_dead_runs_claim_is_taken_over_after_its_lease
);
