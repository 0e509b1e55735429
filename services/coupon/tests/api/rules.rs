//! Window, pause, unknown campaign, per-user limits above one, admin figures.

use serde_json::json;

use crate::helpers::{open_campaign, spawn_app, Backend};

const VERSIONS: [&str; 4] = ["", "v1", "v2", "v3"];

async fn window_and_pause(backend: Backend) {
    let app = spawn_app(backend).await;
    let now = chrono::Utc::now();
    let mut later = open_campaign(10, 1, "QUEUED");
    later["startsAt"] = json!((now + chrono::Duration::hours(1)).to_rfc3339());
    later["endsAt"] = json!((now + chrono::Duration::hours(2)).to_rfc3339());
    assert_eq!(app.put_campaign("later", later).await.status, 201);
    let mut over = open_campaign(10, 1, "DATABASE");
    over["startsAt"] = json!((now - chrono::Duration::hours(2)).to_rfc3339());
    over["endsAt"] = json!((now - chrono::Duration::hours(1)).to_rfc3339());
    assert_eq!(app.put_campaign("over", over).await.status, 201);
    let mut paused = open_campaign(10, 1, "REDIS_LOCK");
    paused["paused"] = json!(true);
    assert_eq!(app.put_campaign("paused", paused.clone()).await.status, 201);

    for v in VERSIONS {
        for c in ["later", "over", "paused"] {
            let a = app.issue(v, c, "u1").await;
            assert_eq!(
                (a.status, a.body["code"].as_str()),
                (422, Some("not_active")),
                "{v} {c}: {}",
                a.body
            );
        }
    }
    // Unpausing reopens it; the update answers 200.
    paused["paused"] = json!(false);
    assert_eq!(app.put_campaign("paused", paused).await.status, 200);
    assert_eq!(app.issue("", "paused", "u1").await.status, 201);
}

async fn unknown_campaign(backend: Backend) {
    let app = spawn_app(backend).await;
    for v in VERSIONS {
        let a = app.issue(v, "nope", "u1").await;
        assert_eq!(
            (a.status, a.body["code"].as_str()),
            (404, Some("campaign_not_found")),
            "{v}"
        );
        assert_eq!(a.content_type, "application/problem+json");
    }
    assert_eq!(app.get_campaign("nope").await.status, 404);
    assert_eq!(app.get("/issue-requests/not-a-request").await.status, 404);
}

async fn per_user_limit_above_one(backend: Backend) {
    let app = spawn_app(backend).await;
    for (campaign, strategy, version) in [
        ("l1", "DATABASE", "v1"),
        ("l2", "REDIS_LOCK", "v2"),
        ("l3", "QUEUED", "v3"),
    ] {
        app.campaign(campaign, 100, 3, strategy).await;
        let mut requests = Vec::new();
        for _ in 0..3 {
            let a = app.issue(version, campaign, "alice").await;
            assert!(a.status == 201 || a.status == 202, "{campaign}: {}", a.body);
            if let Some(r) = a.body["requestId"].as_str() {
                requests.push(r.to_string());
            }
        }
        let a = app.issue(version, campaign, "alice").await;
        assert_eq!(
            (a.status, a.body["code"].as_str()),
            (409, Some("already_issued")),
            "{campaign}"
        );
        app.wait_decided(&requests).await;
        let stored = app.stored_coupons(campaign).await;
        assert_eq!(stored.len(), 3, "{campaign}");
    }
    let page = app.get("/users/alice/coupons?limit=4").await;
    assert_eq!(page.body["items"].as_array().unwrap().len(), 4);
    let cursor = page.body["nextCursor"]
        .as_str()
        .expect("more pages")
        .to_string();
    let rest = app
        .get(&format!("/users/alice/coupons?limit=100&cursor={cursor}"))
        .await;
    assert_eq!(rest.body["items"].as_array().unwrap().len(), 5);
    assert!(rest.body["nextCursor"].is_null());
    let first: Vec<_> = page.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .chain(rest.body["items"].as_array().unwrap())
        .map(|c| c["couponId"].clone())
        .collect();
    let unique: std::collections::HashSet<String> = first.iter().map(|v| v.to_string()).collect();
    assert_eq!(unique.len(), 9, "pages neither repeat nor skip");
}

async fn quota_changes(backend: Backend) {
    let app = spawn_app(backend).await;
    app.campaign("q", 3, 1, "QUEUED").await;
    let mut ids = Vec::new();
    for u in ["a", "b"] {
        ids.push(
            app.issue("", "q", u).await.body["requestId"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    app.wait_decided(&ids).await;
    // Lowering below what is issued is refused and changes nothing.
    let a = app.put_campaign("q", open_campaign(1, 1, "QUEUED")).await;
    assert_eq!(
        (a.status, a.body["code"].as_str()),
        (409, Some("quota_below_issued"))
    );
    // Raising adds the difference to the running counters.
    assert_eq!(
        app.put_campaign("q", open_campaign(5, 1, "QUEUED"))
            .await
            .status,
        200
    );
    let v = app.get_campaign("q").await.body;
    assert_eq!(
        (
            v["quota"].as_i64(),
            v["issued"].as_i64(),
            v["remaining"].as_i64()
        ),
        (Some(5), Some(2), Some(3))
    );
    for u in ["c", "d", "e"] {
        assert_eq!(app.issue("", "q", u).await.status, 202);
    }
    assert_eq!(app.issue("", "q", "f").await.status, 410);
}

promo_platform::on_both_backends!(
    window_and_pause,
    unknown_campaign,
    per_user_limit_above_one,
    quota_changes
);
