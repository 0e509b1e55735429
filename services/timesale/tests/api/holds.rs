//! Holds: a sale with `holdSeconds` sells HELD orders; confirm, cancel and
//! expiry each end a hold once, and an ended hold's units are back in the
//! sale, the user's limit and the counters exactly once — also when
//! confirms, cancels and two replicas' sweeps race, after a restart, and
//! when a process died between its commit and the counters.

use std::{collections::HashMap, sync::Arc, time::Duration};

use futures::future::join_all;
use promo_platform::{metrics::Metrics, queued, testing::Answer};
use serde_json::Value;
use timesale_service::{
    domain::{cancel, holds, TimesaleError},
    TimesaleService,
};

use crate::helpers::{open_sale, settings, spawn_app, Backend, TestApp};

const HOLD: i64 = 600;

async fn held_sale(app: &TestApp, id: &str, stock: i64, per_user: i64, strategy: &str) {
    let mut spec = open_sale(stock, per_user, strategy);
    spec["holdSeconds"] = HOLD.into();
    let a = app.put_sale(id, spec).await;
    assert_eq!(a.status, 201, "{}", a.body);
    assert_eq!(a.body["holdSeconds"], HOLD, "{}", a.body);
}

/// Orders one unit and waits until it is decided; its body.
async fn held_order(app: &TestApp, version: &str, sale: &str, user: &str) -> Value {
    let a = app.order(version, sale, user, 1).await;
    assert!(
        a.status == 201 || a.status == 202,
        "{}: {}",
        a.status,
        a.body
    );
    let id = a.body["orderId"].as_str().unwrap().to_string();
    let d = app.wait_decided(&[id]).await.remove(0);
    assert_eq!(d["status"], "HELD", "{d}");
    d
}

fn id(order: &Value) -> String {
    order["orderId"].as_str().unwrap().to_string()
}

fn code(a: &Answer) -> (u16, String) {
    let code = a.body["code"]
        .as_str()
        .or(a.body["status"].as_str())
        .unwrap_or_default();
    (a.status, code.to_string())
}

async fn view(app: &TestApp, sale: &str) -> Value {
    app.get(&format!("/time-sales/{sale}")).await.body
}

/// Every answer of the API, on one strategy.
async fn lifecycle(backend: Backend, version: &str, strategy: &str) {
    let app = spawn_app(backend).await;
    held_sale(&app, "h", 10, 3, strategy).await;

    // Held, then confirmed; the same paymentRef again answers the same.
    let first = held_order(&app, version, "h", "ann").await;
    let until: chrono::DateTime<chrono::Utc> =
        serde_json::from_value(first["holdExpiresAt"].clone()).unwrap();
    let left = (until - chrono::Utc::now()).num_seconds();
    assert!((HOLD - 60..=HOLD).contains(&left), "holdExpiresAt {until}");
    let v = view(&app, "h").await;
    assert_eq!(
        (v["sold"].as_i64(), v["held"].as_i64()),
        (Some(1), Some(1)),
        "{v}"
    );
    app.svc.core.refresh_gauges().await.unwrap();
    let held = app
        .svc
        .core
        .metrics
        .held
        .with_label_values(&[timesale_service::SERVICE, "h"]);
    assert_eq!(held.get(), 1, "promo_held");
    let c1 = app.confirm(&id(&first), "pay-1").await;
    assert_eq!(code(&c1), (200, "CONFIRMED".into()), "{}", c1.body);
    assert_eq!(c1.body["paymentRef"], "pay-1");
    let c2 = app.confirm(&id(&first), "pay-1").await;
    assert_eq!(
        (c2.status, &c2.body),
        (200, &c1.body),
        "same ref, same answer"
    );
    let c3 = app.confirm(&id(&first), "pay-2").await;
    assert_eq!(code(&c3), (409, "already_confirmed".into()));
    let v = view(&app, "h").await;
    assert_eq!(
        (v["sold"].as_i64(), v["held"].as_i64()),
        (Some(1), Some(0)),
        "{v}"
    );

    // Cancelled while held: units back, and it cannot be confirmed.
    let second = held_order(&app, version, "h", "ann").await;
    let c = app.cancel(&id(&second)).await;
    assert_eq!(code(&c), (200, "CANCELLED".into()), "{}", c.body);
    assert_eq!(
        code(&app.confirm(&id(&second), "pay-3").await),
        (409, "not_held".into())
    );

    // Run out, not yet swept: reads EXPIRED, and a confirm expires it.
    let third = held_order(&app, version, "h", "bob").await;
    app.hold_ends_in(&[id(&third)], -1).await;
    let read = app.get(&format!("/orders/{}", id(&third))).await;
    assert_eq!(read.body["status"], "EXPIRED", "{}", read.body);
    assert_eq!(
        code(&app.confirm(&id(&third), "pay-4").await),
        (409, "hold_expired".into())
    );
    assert_eq!(
        code(&app.confirm(&id(&third), "pay-4").await),
        (409, "hold_expired".into())
    );
    assert_eq!(
        code(&app.cancel(&id(&third)).await),
        (409, "hold_expired".into())
    );

    // Run out and left alone: the sweep expires it within seconds.
    let fourth = held_order(&app, version, "h", "cid").await;
    app.hold_ends_in(&[id(&fourth)], -1).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while app.stored_orders("h").await.iter().any(|r| r.3 == "HELD") {
        assert!(tokio::time::Instant::now() < deadline, "not swept in 5 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let rows = app.stored_orders("h").await;
    let status = |o: &Value| rows.iter().find(|r| r.0 == id(o)).unwrap().3.clone();
    assert_eq!(status(&fourth), "EXPIRED");
    assert_eq!(status(&third), "EXPIRED");

    // Bad input and the orders that are not holds.
    assert_eq!(
        code(&app.confirm(&id(&first), "").await),
        (422, "invalid_payment_ref".into())
    );
    assert_eq!(
        code(
            &app.confirm("0190d6a0-0000-7000-8000-000000000000", "p")
                .await
        ),
        (404, "order_not_found".into())
    );
    app.sale("plain", 5, 1, strategy).await;
    let a = app.order(version, "plain", "dan", 1).await;
    let plain = app.wait_decided(&[id(&a.body)]).await.remove(0);
    assert_eq!(plain["status"], "CONFIRMED");
    assert!(plain.get("holdExpiresAt").is_none(), "{plain}");
    assert_eq!(
        code(&app.confirm(&id(&plain), "p").await),
        (409, "not_held".into())
    );
    let mut short = open_sale(5, 1, strategy);
    short["holdSeconds"] = 29.into();
    assert_eq!(app.put_sale("short", short).await.status, 422);

    // Books: ann holds 1 confirmed; bob and cid got their units back.
    assert_eq!(app.check_books("h", 10, 3).await, 1);
    let v = view(&app, "h").await;
    assert_eq!(
        (v["sold"].as_i64(), v["held"].as_i64()),
        (Some(1), Some(0)),
        "{v}"
    );
    assert_eq!(v["remaining"], 9, "the counters have every unit back: {v}");
    for user in ["ann", "bob", "cid"] {
        let want = if user == "ann" { 2 } else { 3 };
        let a = app.order(version, "h", user, want).await;
        assert!(a.status == 201 || a.status == 202, "{user}: {}", a.body);
    }
}

async fn v1_hold_lifecycle(backend: Backend) {
    lifecycle(backend, "v1", "DATABASE").await
}

async fn v2_hold_lifecycle(backend: Backend) {
    lifecycle(backend, "v2", "REDIS_LOCK").await
}

async fn v3_hold_lifecycle(backend: Backend) {
    lifecycle(backend, "v3", "QUEUED").await
}

/// A second replica of the service on the same database, counters and queue.
async fn replica(app: &TestApp) -> (Arc<TimesaleService>, Arc<Metrics>) {
    let metrics = Metrics::new();
    let svc = queued::with_database::<TimesaleService>(
        app.backends.db.clone(),
        &app.backends.backends(),
        metrics.clone(),
        settings(),
    )
    .await
    .expect("replica starts");
    (svc, metrics)
}

fn expired_count(m: &Metrics) -> u64 {
    m.holds
        .with_label_values(&[timesale_service::SERVICE, "expired"])
        .get()
}

/// 120 holds run out while buyers confirm and cancel them on two replicas
/// and both replicas sweep: every hold ends once, as its answer said, and
/// the sale, the limits and the counters are exact afterwards.
async fn expiry_races_confirms_and_cancels(backend: Backend, version: &str, strategy: &str) {
    const N: usize = 120;
    let app = spawn_app(backend).await;
    let (other, other_metrics) = replica(&app).await;
    let stop = tokio_util::sync::CancellationToken::new();
    let _stop = stop.clone().drop_guard();
    holds::spawn_sweeper(&other, Duration::from_millis(20), stop.clone());
    held_sale(&app, "race", N as i64, 1, strategy).await;
    let orders: Vec<String> = join_all((0..N).map(|i| {
        let app = &app;
        async move { id(&held_order(app, version, "race", &format!("u{i}")).await) }
    }))
    .await;
    assert_eq!(code(&app.order(version, "race", "late", 1).await).0, 410);

    // Each hold runs out in a 300 ms window starting 1 s from now; a third
    // are confirmed and a third cancelled, on either replica, at moments
    // spread over that window and around it, the confirms twice at once;
    // the rest are left to the sweeps.
    let start = tokio::time::Instant::now();
    let base = chrono::Utc::now().timestamp_millis() + 1000;
    for (i, o) in orders.iter().enumerate() {
        app.hold_ends_at(std::slice::from_ref(o), base + (i as i64 * 37) % 300)
            .await;
    }
    let svc = app.svc.clone();
    let acts = orders
        .iter()
        .enumerate()
        .filter(|(i, _)| i % 3 != 2)
        .map(|(i, o)| {
            let (svc, other, o) = (svc.clone(), other.clone(), o.clone());
            async move {
                let at = Duration::from_millis(900 + (i as u64 * 53) % 500);
                tokio::time::sleep_until(start + at).await;
                let on = if i % 2 == 0 { &svc } else { &other };
                let answers = if i % 3 == 0 {
                    let (a, b) = tokio::join!(
                        holds::confirm(&svc, &o, "pay"),
                        holds::confirm(&other, &o, "pay")
                    );
                    vec![a, b]
                } else {
                    vec![cancel::cancel(on, &o).await]
                };
                (o, answers)
            }
        });
    let sweeps = async {
        while start.elapsed() < Duration::from_millis(1600) {
            let (a, b) = tokio::join!(holds::sweep(&svc), holds::sweep(&other));
            a.expect("sweep");
            b.expect("sweep");
            tokio::time::sleep(Duration::from_millis(15)).await;
        }
    };
    let (answers, ()) = tokio::join!(join_all(acts), sweeps);

    // Let the background sweeps finish what is left (leftover restocks wait
    // out their grace).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let rows = app.stored_orders("race").await;
        let restocks: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM restocks")
            .fetch_one(app.svc.core.db.pool())
            .await
            .unwrap();
        if restocks == 0 && !rows.iter().any(|r| r.3 == "HELD") {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "holds or restocks left"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let rows = app.stored_orders("race").await;
    let status: HashMap<&str, &str> = rows.iter().map(|r| (r.0.as_str(), r.3.as_str())).collect();
    for (o, answers) in &answers {
        let end = status[o.as_str()];
        for a in answers {
            match a {
                Ok(order) => assert_eq!(order.status.as_str(), end, "{o}: answered {order:?}"),
                Err(TimesaleError::HoldExpired(_)) => assert_eq!(end, "EXPIRED", "{o}"),
                Err(e) => panic!("{o}: {e}"),
            }
        }
    }
    let count = |s: &str| rows.iter().filter(|r| r.3 == s).count();
    let late = answers
        .iter()
        .flat_map(|(_, a)| a)
        .filter(|a| matches!(a, Err(TimesaleError::HoldExpired(_))))
        .count();
    eprintln!(
        "confirmed {}, cancelled {}, expired {} ({late} answers hold_expired)",
        count("CONFIRMED"),
        count("CANCELLED"),
        count("EXPIRED")
    );
    assert!(
        late > 0 && count("CONFIRMED") > 0 && count("CANCELLED") > 0,
        "the confirms and cancels raced the expiry on both sides"
    );
    assert_eq!(
        count("CONFIRMED") + count("CANCELLED") + count("EXPIRED"),
        N,
        "every hold ended: {rows:?}"
    );
    let expired_metric = expired_count(&app.svc.core.metrics) + expired_count(&other_metrics);
    assert_eq!(
        expired_metric as usize,
        count("EXPIRED"),
        "each expiry counted once"
    );

    // The database, the limits and the counters have every unit back once:
    // the freed units sell again, exactly.
    let sold = app.check_books("race", N as i64, 1).await;
    assert_eq!(sold as usize, count("CONFIRMED"));
    let v = view(&app, "race").await;
    assert_eq!(v["remaining"].as_i64(), Some(N as i64 - sold), "{v}");
    let freed: Vec<&str> = rows
        .iter()
        .filter(|r| r.3 != "CONFIRMED")
        .map(|r| r.1.as_str())
        .collect();
    let again = join_all(freed.iter().map(|u| {
        let app = &app;
        async move { app.order(version, "race", u, 1).await.status }
    }))
    .await;
    assert!(again.iter().all(|s| *s == 201 || *s == 202), "{again:?}");
    assert_eq!(code(&app.order(version, "race", "late", 1).await).0, 410);
}

async fn v2_expiry_races_confirms_and_cancels(backend: Backend) {
    expiry_races_confirms_and_cancels(backend, "v2", "REDIS_LOCK").await
}

async fn v3_expiry_races_confirms_and_cancels(backend: Backend) {
    expiry_races_confirms_and_cancels(backend, "v3", "QUEUED").await
}

/// Due holds left by a stopped service expire when a new one starts; a
/// restock left by a process that died after its commit reaches the
/// counters once, however many replicas find it, also when the counters
/// were lost and rebuilt in between.
async fn a_restart_expires_due_holds(backend: Backend) {
    let app = spawn_app(backend).await;
    held_sale(&app, "r", 4, 1, "REDIS_LOCK").await;
    let a = id(&held_order(&app, "v2", "r", "a").await);
    let b = id(&held_order(&app, "v2", "r", "b").await);
    // Stop the sweeps (the service's own and none other), make both due.
    app.shutdown.cancel();
    app.hold_ends_in(&[a.clone(), b.clone()], -1000).await;
    // What a process that died after expiring `b` leaves: the database has
    // the units back and a restock row; the counters do not.
    let db = app.svc.core.db.pool();
    let mut tx = db.begin().await.unwrap();
    let order = timesale_service::store::lock_order(&mut tx, app.svc.core.db.dialect(), &b)
        .await
        .unwrap()
        .unwrap();
    holds::give_back(
        &mut tx,
        &order,
        timesale_service::domain::OrderStatus::Expired,
    )
    .await
    .unwrap()
    .unwrap();
    tx.commit().await.unwrap();
    let remaining = |svc: Arc<TimesaleService>| async move {
        let sale = svc.core.promotion("r").await.unwrap();
        svc.core.figures(&sale).await.unwrap().0
    };
    assert_eq!(remaining(app.svc.clone()).await, 2, "counters still short");
    // And the counters are lost as well (Redis flushed, or the in-process
    // counters of a restarted process): the rebuild must count `b`'s
    // restock as not yet given, or the restock would give it twice.
    app.flush_counters().await;

    // Two new replicas start: both sweep (the restock's grace first).
    let (one, _) = replica(&app).await;
    let (two, _) = replica(&app).await;
    let stop = tokio_util::sync::CancellationToken::new();
    let _stop = stop.clone().drop_guard();
    for svc in [&one, &two] {
        holds::spawn_sweeper(svc, Duration::from_millis(50), stop.clone());
    }
    let deadline = tokio::time::Instant::now() + holds::RESTOCK_GRACE + Duration::from_secs(5);
    loop {
        let restocks: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM restocks")
            .fetch_one(db)
            .await
            .unwrap();
        let held = app.stored_orders("r").await.iter().any(|r| r.3 == "HELD");
        if restocks == 0 && !held {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "not recovered");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Both replicas gave `b`'s restock: the counters took it once.
    holds::restock(
        &one,
        &[timesale_service::store::Restock {
            order_id: b.clone(),
            sale: "r".into(),
            user_id: "b".into(),
            quantity: 1,
        }],
    )
    .await;
    assert_eq!(app.check_books("r", 4, 1).await, 0);
    assert_eq!(
        remaining(one).await,
        4,
        "every unit back in the counters, once"
    );
}

promo_platform::on_both_backends!(
    v1_hold_lifecycle,
    v2_hold_lifecycle,
    v3_hold_lifecycle,
    v2_expiry_races_confirms_and_cancels,
    v3_expiry_races_confirms_and_cancels,
    a_restart_expires_due_holds
);
