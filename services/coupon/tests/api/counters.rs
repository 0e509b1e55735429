//! Counter loss: with the admission counters gone, V3 answers 503
//! `counters_unavailable` with Retry-After until they are rebuilt from the
//! database, then continues; the quota is never exceeded.

use std::{collections::HashSet, sync::Arc, time::Duration};

use futures::future::join_all;

use crate::helpers::{spawn_app, spawn_app_with, Backend, Options};

/// Without a consumer the rebuild cannot pass its fence: after waiting its
/// second for the rebuild, admission answers 503; once a consumer runs, the
/// same request goes through.
async fn flush_answers_503_then_recovers(backend: Backend) {
    let app = spawn_app_with(backend, Options::without_consumer()).await;
    app.campaign("f", 10, 1, "QUEUED").await;
    let first = app.issue("v3", "f", "before").await;
    assert_eq!(first.status, 202);
    app.flush_counters().await;
    let a = app.issue("v3", "f", "during").await;
    assert_eq!(
        (a.status, a.body["code"].as_str()),
        (503, Some("counters_unavailable")),
        "{}",
        a.body
    );
    assert!(
        a.retry_after.is_some(),
        "Retry-After tells when to come back"
    );
    // Recovery: the same request succeeds once rebuilt.
    promo_platform::service::spawn_consumer(&app.svc, app.shutdown.clone());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let a = app.issue("v3", "f", "during").await;
        if a.status == 202 {
            break;
        }
        assert_eq!(a.status, 503, "{}", a.body);
        assert!(
            tokio::time::Instant::now() < deadline,
            "counters never rebuilt"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The rebuilt counters remember who already holds a coupon.
    assert_eq!(app.issue("v3", "f", "before").await.status, 409);
    let v = app.get_campaign("f").await.body;
    assert_eq!(
        v["issued"].as_i64().unwrap()
            + v["pending"].as_i64().unwrap()
            + v["remaining"].as_i64().unwrap(),
        10
    );
}

async fn flush_mid_run_never_oversells(backend: Backend) {
    const QUOTA: i64 = 300;
    let app = Arc::new(spawn_app(backend).await);
    app.campaign("storm", QUOTA, 1, "QUEUED").await;
    let flusher = {
        let app = app.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(150)).await;
            app.flush_counters().await;
        })
    };
    // 1,000 users, each retrying on 503 as Retry-After asks, until answered.
    let requests = (0..1000).map(|i| {
        let app = app.clone();
        async move {
            let user = format!("user-{i}");
            let mut saw_503 = false;
            loop {
                let a = app.issue("v3", "storm", &user).await;
                match a.status {
                    503 => {
                        assert_eq!(a.body["code"], "counters_unavailable");
                        saw_503 = true;
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    202 => {
                        return (
                            Some(a.body["requestId"].as_str().unwrap().to_string()),
                            saw_503,
                        )
                    }
                    409 | 410 => return (None, saw_503),
                    s => panic!("unexpected {s}: {}", a.body),
                }
            }
        }
    });
    let results = join_all(requests).await;
    flusher.await.unwrap();
    let ids: Vec<String> = results.iter().filter_map(|(r, _)| r.clone()).collect();
    let decided = app.wait_decided(&ids).await;
    let issued = decided.iter().filter(|d| d["status"] == "ISSUED").count() as i64;
    let stored = app.stored_coupons("storm").await;
    assert!(
        stored.len() as i64 <= QUOTA,
        "never over quota: {}",
        stored.len()
    );
    assert_eq!(
        stored.len() as i64,
        issued,
        "every ISSUED answer has its row"
    );
    let users: HashSet<_> = stored.iter().map(|(_, u)| u).collect();
    assert_eq!(users.len(), stored.len(), "nobody twice");
    assert_eq!(app.issued_column("storm").await, stored.len() as i64);
    // Demand exceeded the quota, so after recovery the quota is used up.
    assert_eq!(stored.len() as i64, QUOTA);
}

promo_platform::on_every_backend!(
    flush_answers_503_then_recovers,
    flush_mid_run_never_oversells
);
