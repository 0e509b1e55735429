//! Cancel under load: a confirmed order's units return to the sale and to
//! the user's limit exactly once (a second cancel answers the same), are
//! orderable again, and the confirmed units still end equal to the stock.

use futures::future::join_all;

use crate::helpers::{spawn_app, Backend, TestApp};

const STOCK: i64 = 50;

/// Places an order and waits until it is decided; returns (id, final body).
async fn confirmed(app: &TestApp, version: &str, user: &str) -> Option<String> {
    let a = app.order(version, "c", user, 1).await;
    match a.status {
        201 | 202 => {
            let id = a.body["orderId"].as_str().unwrap().to_string();
            let d = &app.wait_decided(std::slice::from_ref(&id)).await[0];
            assert_eq!(d["status"], "CONFIRMED", "{d}");
            Some(id)
        }
        409 | 410 => None,
        s => panic!("unexpected {s}: {}", a.body),
    }
}

async fn run(backend: Backend, version: &str, strategy: &str) {
    let app = spawn_app(backend).await;
    app.sale("c", STOCK, 1, strategy).await;

    // 80 buyers for 50 units.
    let first: Vec<(String, Option<String>)> = join_all((0..80).map(|i| {
        let app = &app;
        async move {
            let user = format!("first-{i}");
            let id = confirmed(app, version, &user).await;
            (user, id)
        }
    }))
    .await;
    let holders: Vec<(String, String)> = first
        .into_iter()
        .filter_map(|(u, id)| id.map(|id| (u, id)))
        .collect();
    assert_eq!(holders.len() as i64, STOCK);

    // A holder is at the limit; cancelling frees it, once.
    let (user, id) = &holders[0];
    assert_eq!(app.order(version, "c", user, 1).await.status, 409);
    let c1 = app.cancel(id).await;
    assert_eq!(
        (c1.status, c1.body["status"].as_str()),
        (200, Some("CANCELLED")),
        "{}",
        c1.body
    );
    let c2 = app.cancel(id).await;
    assert_eq!(c2.status, 200, "a second cancel answers the same");
    assert_eq!(c2.body, c1.body);
    assert!(
        confirmed(&app, version, user).await.is_some(),
        "the freed unit and limit are usable again"
    );

    // Twenty holders cancel (each twice, at once) while forty newcomers buy.
    let cancels = holders[1..21]
        .iter()
        .flat_map(|(_, id)| [id.clone(), id.clone()]);
    let cancel_answers = join_all(cancels.map(|id| {
        let app = &app;
        async move { app.cancel(&id).await }
    }));
    let newcomers = join_all((0..40).map(|i| {
        let app = &app;
        async move { confirmed(app, version, &format!("new-{i}")).await }
    }));
    let (cancel_answers, _) = tokio::join!(cancel_answers, newcomers);
    for a in &cancel_answers {
        assert_eq!(
            (a.status, a.body["status"].as_str()),
            (200, Some("CANCELLED")),
            "{}",
            a.body
        );
    }
    // Whatever the newcomers left is taken by latecomers, one unit each.
    let mut i = 0;
    loop {
        let a = app.order(version, "c", &format!("late-{i}"), 1).await;
        match a.status {
            201 | 202 => {
                let id = a.body["orderId"].as_str().unwrap().to_string();
                app.wait_decided(&[id]).await;
            }
            410 => break,
            s => panic!("unexpected {s}: {}", a.body),
        }
        i += 1;
        assert!(i <= 30, "never sold out again");
    }

    let total = app.check_books("c", STOCK, 1).await;
    assert_eq!(total, STOCK, "cancelled units were sold again, never more");
    let rows = app.stored_orders("c").await;
    let cancelled = rows.iter().filter(|(_, _, _, s)| s == "CANCELLED").count();
    assert_eq!(cancelled, 21, "each cancelled order once");
    let view = app.get("/time-sales/c").await.body;
    assert_eq!(view["remaining"], 0, "{view}");
}

async fn v1_cancel_under_load(backend: Backend) {
    run(backend, "v1", "DATABASE").await
}

async fn v2_cancel_under_load(backend: Backend) {
    run(backend, "v2", "REDIS_LOCK").await
}

async fn v3_cancel_under_load(backend: Backend) {
    run(backend, "v3", "QUEUED").await
}

promo_platform::on_both_backends!(
    v1_cancel_under_load,
    v2_cancel_under_load,
    v3_cancel_under_load
);
