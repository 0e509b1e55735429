//! A consumer that dies after its database commit and before its offset
//! commit: the batch is redelivered and stores nothing twice.

use std::time::Duration;

use crate::helpers::{spawn_app_with, Backend, Options};

async fn crash_between_db_commit_and_offset_commit(backend: Backend) {
    let app = spawn_app_with(backend, Options::without_consumer()).await;
    app.sale("crash", 100, 3, "QUEUED").await;
    let mut ids = Vec::new();
    for i in 0..40 {
        let a = app.order("v3", "crash", &format!("u{i}"), 2).await;
        assert_eq!(a.status, 202, "{}", a.body);
        ids.push(a.body["orderId"].as_str().unwrap().to_string());
    }

    // The doomed consumer: persists everything it got, then "crashes".
    let topic = app.svc.core.settings.topic.clone();
    let group = app.svc.core.settings.group.clone();
    let mut doomed = app.queue.consumer(&topic, &group).await.unwrap();
    let mut batch = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while batch.len() < 40 && tokio::time::Instant::now() < deadline {
        batch.extend(doomed.poll(100, Duration::from_secs(5)).await.unwrap());
    }
    assert_eq!(batch.len(), 40);
    app.svc.core.persist_batch(&batch).await.expect("persisted");
    drop(doomed); // no offset commit
    assert_eq!(app.stored_orders("crash").await.len(), 40);

    // Its successor gets the same events again.
    promo_platform::service::spawn_consumer(&app.svc, app.shutdown.clone());
    let redelivered = app
        .svc
        .core
        .metrics
        .consumer_messages
        .with_label_values(&["timesale", "redelivered"]);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while redelivered.get() < 40 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "redelivery did not happen ({} seen)",
            redelivered.get()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        app.stored_orders("crash").await.len(),
        40,
        "nothing stored twice"
    );
    assert_eq!(app.check_books("crash", 100, 3).await, 80);
    let decided = app.wait_decided(&ids).await;
    for id in &ids {
        let pending = app.svc.core.counters.ticket_pending(id).await.unwrap();
        assert!(!pending, "{id}: a decided request's ticket is cleared");
    }
    assert!(decided.iter().all(|d| d["status"] == "CONFIRMED"));
    let confirmed = app
        .svc
        .core
        .metrics
        .consumer_messages
        .with_label_values(&["timesale", "confirmed"])
        .get();
    assert_eq!(confirmed, 40, "the redelivered batch confirmed nothing new");
}

promo_platform::on_both_backends!(crash_between_db_commit_and_offset_commit);

/// The batch writers' units upsert creates rows for new holders and
/// overwrites existing ones; the pairs look-up reads them back, padded
/// chunks and unknown users included.
async fn batch_units_upsert_and_lookup(backend: Backend) {
    use std::collections::HashMap;
    use timesale_service::store;

    let app = crate::helpers::spawn_app(backend).await;
    let dialect = app.svc.core.db.dialect();
    let mut tx = app.svc.core.db.pool().begin().await.unwrap();
    let first: HashMap<&str, i64> = [("a", 1), ("b", 2)].into();
    store::set_user_units(&mut tx, dialect, "s", &first)
        .await
        .unwrap();
    let second: HashMap<&str, i64> = [("a", 3), ("c", 1)].into();
    store::set_user_units(&mut tx, dialect, "s", &second)
        .await
        .unwrap();
    let other: HashMap<&str, i64> = [("a", 5)].into();
    store::set_user_units(&mut tx, dialect, "other", &other)
        .await
        .unwrap();
    let held = store::user_units(&mut tx, dialect, "s", &["a", "b", "c", "nobody"])
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let want: HashMap<String, i64> = [("a", 3), ("b", 2), ("c", 1)]
        .map(|(u, n)| (u.to_string(), n))
        .into();
    assert_eq!(held, want);
}

promo_platform::on_both_backends!(batch_units_upsert_and_lookup);

/// An order event for a sale that no longer exists is decided, not skipped:
/// REJECTED `unknown_sale` (as a coupon request for an unknown campaign is
/// REJECTED `unknown_campaign`), readable, its ticket cleared, stored once
/// when the batch comes again.
async fn an_order_for_an_unknown_sale_is_rejected(backend: Backend) {
    use promo_platform::ports::Message;
    use timesale_service::events::{Event, OrderEvent};

    let app = spawn_app_with(backend, Options::without_consumer()).await;
    let id = "0190d2c4-0000-7000-8000-000000000001";
    app.svc
        .core
        .counters
        .mark_pending(&[id], Duration::from_secs(60))
        .await
        .unwrap();
    let batch = vec![Message {
        partition: 0,
        offset: 0,
        key: b"gone".to_vec(),
        payload: OrderEvent::Order {
            order_id: id.into(),
            sale: "gone".into(),
            user_id: "dan".into(),
            quantity: 2,
            admitted_at: chrono::Utc::now().timestamp_millis(),
            bucket: None,
        }
        .encode(),
    }];
    for round in 0..2 {
        app.svc.core.persist_batch(&batch).await.expect("persisted");
        let a = app.get(&format!("/orders/{id}")).await;
        assert_eq!(a.status, 200, "round {round}: {}", a.body);
        assert_eq!(
            (a.body["status"].as_str(), a.body["reason"].as_str()),
            (Some("REJECTED"), Some("unknown_sale")),
            "round {round}: {}",
            a.body
        );
        assert_eq!(app.stored_orders("gone").await.len(), 1, "round {round}");
    }
    assert!(!app.svc.core.counters.ticket_pending(id).await.unwrap());
}

promo_platform::on_both_backends!(an_order_for_an_unknown_sale_is_rejected);

/// A user's orders on two partitions at once — what a change of the topic's
/// partition count does to a user's bucket — persisted by two concurrent
/// transactions of the same batch: 200 users each order 1 unit four times
/// (two orders on each partition) against a per-user limit of 3. The
/// unlocked first try reads the users' rows with a locking read, so the two
/// transactions cannot both plan from the same units: one waits or fails
/// (and is retried, as the consumer does), and every
/// user ends with exactly 3 units confirmed and one order rejected.
async fn a_users_orders_on_two_partitions_stay_within_the_limit(backend: Backend) {
    use std::collections::HashMap;

    use promo_platform::ports::Message;
    use timesale_service::events::{Event, OrderEvent};

    let app = spawn_app_with(backend, Options::without_consumer()).await;
    app.sale("resized", 100_000, 3, "QUEUED").await;
    let mut batch = Vec::new();
    let mut offsets = [0i64; 2];
    for round in 0..4 {
        for u in 0..200 {
            let partition = round % 2;
            let order_id = uuid::Uuid::now_v7().to_string();
            batch.push(Message {
                partition: partition as i32,
                offset: offsets[partition],
                key: b"resized".to_vec(),
                payload: OrderEvent::Order {
                    order_id,
                    sale: "resized".into(),
                    user_id: format!("u{u}"),
                    quantity: 1,
                    admitted_at: chrono::Utc::now().timestamp_millis(),
                    bucket: None,
                }
                .encode(),
            });
            offsets[partition] += 1;
        }
    }
    // As the consumer persists a polled batch: one transaction per
    // partition, both at once, each retried until it commits.
    let core = &app.svc.core;
    let options = core.settings.consumer_options("timesale");
    let persisted = promo_platform::consumer::persist_partitions(
        &**core,
        &batch,
        &options,
        &core.metrics,
        &app.shutdown,
    )
    .await;
    assert!(persisted);
    let rows = app.stored_orders("resized").await;
    assert_eq!(rows.len(), 800, "every order decided once");
    let mut confirmed: HashMap<&str, i64> = HashMap::new();
    for (_, user, quantity, status) in &rows {
        if status == "CONFIRMED" {
            *confirmed.entry(user.as_str()).or_default() += quantity;
        }
    }
    assert_eq!(confirmed.len(), 200);
    assert!(
        confirmed.values().all(|&n| n == 3),
        "every user exactly at the limit"
    );
    assert_eq!(app.check_books("resized", 100_000, 3).await, 600);
}

promo_platform::on_both_backends!(a_users_orders_on_two_partitions_stay_within_the_limit);
