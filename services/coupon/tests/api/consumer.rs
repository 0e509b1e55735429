//! A consumer that dies after its database commit and before its offset
//! commit: the batch is redelivered and stores nothing twice.

use std::time::Duration;

use coupon_service::consumer::persist_batch;

use crate::helpers::{spawn_app_with, Backend, Options};

async fn crash_between_db_commit_and_offset_commit(backend: Backend) {
    let app = spawn_app_with(
        backend,
        Options {
            consumer: false,
            ..Options::default()
        },
    )
    .await;
    app.campaign("crash", 50, 1, "QUEUED").await;
    let mut ids = Vec::new();
    for i in 0..40 {
        let a = app.issue("v3", "crash", &format!("u{i}")).await;
        assert_eq!(a.status, 202, "{}", a.body);
        ids.push(a.body["requestId"].as_str().unwrap().to_string());
    }

    // The doomed consumer: persists everything it got, then "crashes".
    let topic = app.svc.settings.topic.clone();
    let group = app.svc.settings.group.clone();
    let mut doomed = app.queue.consumer(&topic, &group).await.unwrap();
    let mut batch = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while batch.len() < 40 && tokio::time::Instant::now() < deadline {
        batch.extend(doomed.poll(100, Duration::from_secs(5)).await.unwrap());
    }
    assert_eq!(batch.len(), 40);
    persist_batch(&app.svc, &batch).await.expect("persisted");
    drop(doomed); // no offset commit
    assert_eq!(app.stored_coupons("crash").await.len(), 40);

    // Its successor gets the same events again.
    promo_platform::service::spawn_consumer(&app.svc, app.shutdown.clone());
    let redelivered = app
        .svc
        .metrics
        .consumer_messages
        .with_label_values(&["coupon", "redelivered"]);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while redelivered.get() < 40 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "redelivery did not happen ({} seen)",
            redelivered.get()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let stored = app.stored_coupons("crash").await;
    assert_eq!(stored.len(), 40, "nothing stored twice");
    assert_eq!(app.issued_column("crash").await, 40);
    let decided = app.wait_decided(&ids).await;
    assert!(decided.iter().all(|d| d["status"] == "ISSUED"));
    let issued = app
        .svc
        .metrics
        .consumer_messages
        .with_label_values(&["coupon", "issued"])
        .get();
    assert_eq!(issued, 40, "the redelivered batch issued nothing new");
}

promo_platform::on_both_backends!(crash_between_db_commit_and_offset_commit);
