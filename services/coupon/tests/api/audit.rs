//! Admissions whose event was never sent — the serving process died between
//! the counters step and the send — come back by themselves through the
//! fenced audit; one whose event is still on its way does not. Transfers
//! between buckets whose mover died between two steps are settled by the
//! same audit: the units end up in exactly one bucket.

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

/// What movers killed between a transfer's steps leave behind — one after
/// taking units out of bucket 1, one after they arrived in bucket 0 but
/// before the donor forgot them — is settled by the audit: the first
/// transfer's units go back to bucket 1 (and a late arrival is refused),
/// the second's stay in bucket 0; then the campaign sells exactly its quota.
async fn a_dead_movers_transfers_are_settled(backend: Backend) {
    use promo_platform::{buckets::Layout, ports::Arrival};
    let app = spawn_app_with(backend, Options::default()).await;
    let mut spec = crate::helpers::open_campaign(32, 1, "QUEUED");
    spec["buckets"] = 4.into();
    assert_eq!(app.put_campaign("moving", spec).await.status, 201);
    let c = &app.svc.core.counters;
    let layout = Layout::new("coupon", "moving", 4);
    let receiver = layout.pool(0);
    let ttl = Duration::from_secs(60);
    let lost = c
        .take_out(&layout.pool(1), "xfer:0:died-after-out", 1)
        .await
        .unwrap();
    assert_eq!(lost.units, 4, "half of bucket 1's eight");
    let landed = c
        .take_out(&layout.pool(2), "xfer:0:died-after-in", 1)
        .await
        .unwrap();
    let arrival = c.take_in(
        &receiver,
        "xfer:0:died-after-in",
        landed.units,
        &landed.generation,
        ttl,
    );
    assert_eq!(arrival.await.unwrap(), Arrival::Received);
    let drift = admission::drift(&**c, &layout, 32).await.unwrap();
    assert_eq!(
        drift,
        Some(4),
        "the landed transfer counts twice until settled"
    );

    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(
        app.svc.core.audit("moving").await.unwrap(),
        0,
        "no admission given back"
    );
    let mut left = Vec::new();
    for pool in layout.pools() {
        left.push(c.remaining(&pool).await.unwrap().unwrap());
        assert_eq!(c.in_flight(&pool).await.unwrap(), 0, "{pool} settled");
    }
    assert_eq!(left, vec![12, 8, 4, 8]);
    assert_eq!(admission::drift(&**c, &layout, 32).await.unwrap(), Some(0));
    let late = c.take_in(
        &receiver,
        "xfer:0:died-after-out",
        lost.units,
        &lost.generation,
        ttl,
    );
    assert_eq!(
        late.await.unwrap(),
        Arrival::Cancelled,
        "a late arrival adds nothing"
    );

    let mut admitted = 0;
    for i in 0..100 {
        let a = app.issue("v3", "moving", &format!("buyer-{i}")).await;
        match a.status {
            202 => admitted += 1,
            410 => {}
            s => panic!("unexpected {s}: {}", a.body),
        }
    }
    assert_eq!(admitted, 32, "exactly the quota, across every bucket");
}

promo_platform::on_every_backend!(a_dead_movers_transfers_are_settled);

promo_platform::on_every_backend!(
    a_leaked_admission_comes_back,
    an_admission_on_its_way_is_not_given_back
);
