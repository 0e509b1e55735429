//! Orders whose event was never sent — the serving process died between the
//! counters step and the send — give their units back by themselves through
//! the fenced audit; one whose event is still on its way does not.

use std::time::Duration;

use promo_platform::{admission, ports::Admission};

use crate::helpers::{spawn_app_with, Backend, Options};

const LONG: Duration = Duration::from_secs(3600);

async fn a_leaked_order_gives_its_units_back(backend: Backend) {
    let app = spawn_app_with(backend, Options::default()).await;
    app.sale("leak", 6, 3, "QUEUED").await;
    let pool = admission::pool_name("timesale", "leak");
    let taken = app
        .svc
        .core
        .counters
        .admit(&pool, "ghost", 3, 3, Some(("never-sent", LONG)));
    assert_eq!(taken.await.unwrap(), Admission::Admitted { remaining: 3 });
    assert_eq!(
        app.svc.core.audit("leak").await.unwrap(),
        0,
        "too young to judge"
    );
    let a = app.order("v3", "leak", "u1", 2).await;
    assert_eq!(a.status, 202, "{}", a.body);
    app.wait_decided(&[a.body["orderId"].as_str().unwrap().to_string()])
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
        Some(4)
    );
    let layout = promo_platform::buckets::Layout::new("timesale", "leak", 1);
    let drift = admission::drift(&*app.svc.core.counters, &layout, 6 - 2).await;
    assert_eq!(drift.unwrap(), Some(0));

    // The ghost's limit and units are back: the sale sells out exactly.
    let mut ids = Vec::new();
    for (user, q) in [("ghost", 3), ("u2", 1)] {
        let a = app.order("v3", "leak", user, q).await;
        assert_eq!(a.status, 202, "{user}: {}", a.body);
        ids.push(a.body["orderId"].as_str().unwrap().to_string());
    }
    assert_eq!(app.order("v3", "leak", "u3", 1).await.status, 410);
    let decided = app.wait_decided(&ids).await;
    assert!(
        decided.iter().all(|d| d["status"] == "CONFIRMED"),
        "{decided:?}"
    );
    assert_eq!(app.sold_column("leak").await, 6);
}

async fn an_order_on_its_way_is_not_given_back(backend: Backend) {
    let app = spawn_app_with(backend, Options::without_consumer()).await;
    app.sale("late", 6, 3, "QUEUED").await;
    let mut ids = Vec::new();
    for (user, q) in [("u1", 3), ("u2", 1)] {
        let a = app.order("v3", "late", user, q).await;
        assert_eq!(a.status, 202, "{}", a.body);
        ids.push(a.body["orderId"].as_str().unwrap().to_string());
    }
    tokio::time::sleep(Duration::from_millis(400)).await;
    let svc = app.svc.clone();
    let audit = tokio::spawn(async move { svc.core.audit("late").await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!audit.is_finished(), "the audit waits for its fence");
    promo_platform::service::spawn_consumer(&app.svc, app.shutdown.clone());
    assert_eq!(audit.await.unwrap().unwrap(), 0, "nothing given back");
    let decided = app.wait_decided(&ids).await;
    assert!(
        decided.iter().all(|d| d["status"] == "CONFIRMED"),
        "{decided:?}"
    );
    let pool = admission::pool_name("timesale", "late");
    assert_eq!(
        app.svc.core.counters.remaining(&pool).await.unwrap(),
        Some(2)
    );
    assert_eq!(app.svc.core.counters.in_flight(&pool).await.unwrap(), 0);
    assert_eq!(
        app.order("v3", "late", "u1", 1).await.status,
        409,
        "u1 is at the limit"
    );
}

promo_platform::on_every_backend!(
    a_leaked_order_gives_its_units_back,
    an_order_on_its_way_is_not_given_back
);
