//! Admissions whose event was never sent — the serving process died between
//! the counters step and the send — come back by themselves through the
//! fenced audit; one whose event is still on its way does not.

use std::time::Duration;

use promo_platform::{admission, ports::Admission};

use crate::helpers::{spawn_app_with, Backend, Options};

const LONG: Duration = Duration::from_secs(3600);

async fn a_leaked_admission_comes_back(backend: Backend) {
    let app = spawn_app_with(backend, Options::default()).await;
    app.campaign("leak", 3, 1, "QUEUED").await;
    let pool = admission::pool_name("coupon", "leak");
    // What a process that died right after the counters step leaves behind.
    let taken = app
        .svc
        .core
        .counters
        .admit(&pool, "ghost", 1, 1, Some(("never-sent", LONG)));
    assert_eq!(taken.await.unwrap(), Admission::Admitted { remaining: 2 });
    assert_eq!(
        app.svc.core.audit("leak").await.unwrap(),
        0,
        "too young to judge"
    );
    let a = app.issue("v3", "leak", "u1").await;
    assert_eq!(a.status, 202, "{}", a.body);
    app.wait_decided(&[a.body["requestId"].as_str().unwrap().to_string()])
        .await;

    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(app.svc.core.audit("leak").await.unwrap(), 1);
    assert_eq!(
        app.svc.core.audit("leak").await.unwrap(),
        0,
        "given back once"
    );
    assert_eq!(
        app.svc.core.counters.remaining(&pool).await.unwrap(),
        Some(2)
    );
    let layout = promo_platform::buckets::Layout::new("coupon", "leak", 1);
    let drift = admission::drift(&*app.svc.core.counters, &layout, 3 - 1).await;
    assert_eq!(drift.unwrap(), Some(0));

    // The ghost's limit and the unit are back: the campaign sells out exactly.
    let mut ids = Vec::new();
    for user in ["ghost", "u2"] {
        let a = app.issue("v3", "leak", user).await;
        assert_eq!(a.status, 202, "{user}: {}", a.body);
        ids.push(a.body["requestId"].as_str().unwrap().to_string());
    }
    assert_eq!(app.issue("v3", "leak", "u3").await.status, 410);
    let decided = app.wait_decided(&ids).await;
    assert!(
        decided.iter().all(|d| d["status"] == "ISSUED"),
        "{decided:?}"
    );
    assert_eq!(app.issued_column("leak").await, 3);
}

async fn an_admission_on_its_way_is_not_given_back(backend: Backend) {
    let app = spawn_app_with(backend, Options::without_consumer()).await;
    app.campaign("late", 5, 1, "QUEUED").await;
    let mut ids = Vec::new();
    for user in ["u1", "u2"] {
        let a = app.issue("v3", "late", user).await;
        assert_eq!(a.status, 202, "{}", a.body);
        ids.push(a.body["requestId"].as_str().unwrap().to_string());
    }
    // Old enough to be audited, their events still unread in the queue.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let svc = app.svc.clone();
    let audit = tokio::spawn(async move { svc.core.audit("late").await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!audit.is_finished(), "the audit waits for its fence");
    promo_platform::service::spawn_consumer(&app.svc, app.shutdown.clone());
    assert_eq!(audit.await.unwrap().unwrap(), 0, "nothing given back");
    let decided = app.wait_decided(&ids).await;
    assert!(
        decided.iter().all(|d| d["status"] == "ISSUED"),
        "{decided:?}"
    );
    let pool = admission::pool_name("coupon", "late");
    assert_eq!(
        app.svc.core.counters.remaining(&pool).await.unwrap(),
        Some(3)
    );
    assert_eq!(app.svc.core.counters.in_flight(&pool).await.unwrap(), 0);
    assert_eq!(
        app.issue("v3", "late", "u1").await.status,
        409,
        "u1 still holds one"
    );
}

promo_platform::on_every_backend!(
    a_leaked_admission_comes_back,
    an_admission_on_its_way_is_not_given_back
);
