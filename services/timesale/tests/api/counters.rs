//! Counter loss: with the stock counters gone, V2 and V3 answer 503
//! `counters_unavailable` with Retry-After until they are rebuilt from the
//! database (remaining = stock − sold − in flight), then continue; the
//! stock is never exceeded and per-user units are remembered.

use std::{sync::Arc, time::Duration};

use futures::future::join_all;

use crate::helpers::{spawn_app, spawn_app_with, Backend, Options};

async fn flush_then_recover(backend: Backend, version: &str, strategy: &str) {
    let queued = strategy == "QUEUED";
    // A V3 rebuild needs the consumer to pass its fence: without one, the
    // request that finds the pool missing waits its second, then gets 503.
    let opts = if queued {
        Options::without_consumer()
    } else {
        Options::default()
    };
    let app = spawn_app_with(backend, opts).await;
    app.sale("f", 10, 2, strategy).await;
    let first_consumer = tokio_util::sync::CancellationToken::new();
    if queued {
        promo_platform::service::spawn_consumer(&app.svc, first_consumer.clone());
    }
    let first = app.order(version, "f", "before", 2).await;
    assert!(first.status == 201 || first.status == 202, "{}", first.body);
    let id = first.body["orderId"].as_str().unwrap().to_string();
    app.wait_decided(&[id]).await;
    if queued {
        first_consumer.cancel();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    app.flush_counters().await;
    let a = app.order(version, "f", "during", 1).await;
    if !queued {
        // V2 needs no fence: the request waits for the rebuild and goes through.
        assert_eq!(a.status, 201, "{}", a.body);
    } else {
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
        promo_platform::service::spawn_consumer(&app.svc, app.shutdown.clone());
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let a = app.order(version, "f", "during", 1).await;
        if a.status == 201 || a.status == 202 {
            break;
        }
        assert_eq!(a.status, 503, "{}", a.body);
        assert!(
            tokio::time::Instant::now() < deadline,
            "counters never rebuilt"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The rebuilt counters remember what each user holds.
    let a = app.order(version, "f", "before", 1).await;
    assert_eq!(
        (a.status, a.body["code"].as_str()),
        (409, Some("limit_exceeded")),
        "{}",
        a.body
    );
    let v = app.get("/time-sales/f").await.body;
    let sum = v["sold"].as_i64().unwrap()
        + v["pending"].as_i64().unwrap()
        + v["remaining"].as_i64().unwrap();
    assert_eq!(sum, 10, "{v}");
}

async fn v2_flush_then_recover(backend: Backend) {
    flush_then_recover(backend, "v2", "REDIS_LOCK").await
}

async fn v3_flush_then_recover(backend: Backend) {
    flush_then_recover(backend, "v3", "QUEUED").await
}

async fn v3_flush_mid_run_never_oversells(backend: Backend) {
    const STOCK: i64 = 300;
    let app = Arc::new(spawn_app(backend).await);
    app.sale("storm", STOCK, 3, "QUEUED").await;
    let flusher = {
        let app = app.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(150)).await;
            app.flush_counters().await;
        })
    };
    // 600 users ordering 1–3 units, each retrying on 503 as Retry-After asks.
    let requests = (0..600).map(|i| {
        let app = app.clone();
        async move {
            let user = format!("user-{i}");
            let q = (i % 3) as i64 + 1;
            loop {
                let a = app.order("v3", "storm", &user, q).await;
                match a.status {
                    503 => {
                        assert_eq!(a.body["code"], "counters_unavailable");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    202 => return Some(a.body["orderId"].as_str().unwrap().to_string()),
                    409 | 410 => return None,
                    s => panic!("unexpected {s}: {}", a.body),
                }
            }
        }
    });
    let ids: Vec<String> = join_all(requests).await.into_iter().flatten().collect();
    flusher.await.unwrap();
    let decided = app.wait_decided(&ids).await;
    let confirmed: i64 = decided
        .iter()
        .filter(|d| d["status"] == "CONFIRMED")
        .map(|d| d["quantity"].as_i64().unwrap())
        .sum();
    let total = app.check_books("storm", STOCK, 3).await;
    assert_eq!(total, confirmed, "every CONFIRMED answer has its row");
    assert!(total <= STOCK);
}

promo_platform::on_every_backend!(
    v2_flush_then_recover,
    v3_flush_then_recover,
    v3_flush_mid_run_never_oversells
);
