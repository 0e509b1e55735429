//! The Idempotency-Key middleware in isolation, on both databases: a handler
//! that counts its runs behind it.

use std::{
    sync::{
        atomic::{AtomicU32, Ordering},
        Arc,
    },
    time::Duration,
};

use axum::{
    extract::Extension, http::StatusCode, middleware, response::IntoResponse, routing::post, Router,
};
use promo_platform::{
    http::idempotency::{self, idempotent, Idempotency, Keyed, MYSQL_TABLE, SQLITE_TABLE},
    ports::{sql::Migrations, Database, Migration},
    testing::{fresh_mysql, fresh_sqlite, serve},
};
use tokio_util::sync::CancellationToken;

const TABLE: Migrations = Migrations {
    mysql: &[Migration {
        version: 1,
        name: "idempotency",
        sql: MYSQL_TABLE,
    }],
    sqlite: &[Migration {
        version: 1,
        name: "idempotency",
        sql: SQLITE_TABLE,
    }],
};

async fn app(db: Database, retention: Duration) -> (String, Arc<AtomicU32>) {
    app_with(db.clone(), Idempotency::with_retention(db, retention)).await
}

async fn app_with(db: Database, idem: Idempotency) -> (String, Arc<AtomicU32>) {
    db.migrate(&TABLE).await.unwrap();
    let runs = Arc::new(AtomicU32::new(0));
    let counted = runs.clone();
    let router = Router::new()
        .route(
            "/things",
            post(move |body: String| {
                let n = counted.fetch_add(1, Ordering::SeqCst) + 1;
                async move {
                    match body.as_str() {
                        "fail" => (StatusCode::SERVICE_UNAVAILABLE, "try later".to_string()),
                        "no" => (StatusCode::CONFLICT, format!("{{\"refusal\":{n}}}")),
                        _ => (StatusCode::CREATED, format!("{{\"run\":{n}}}")),
                    }
                }
            }),
        )
        .route_layer(middleware::from_fn_with_state(idem, idempotent));
    (serve(router, CancellationToken::new()).await, runs)
}

async fn call(base: &str, key: Option<&str>, body: &str) -> (u16, String, bool) {
    let mut req = reqwest::Client::new()
        .post(format!("{base}/things"))
        .body(body.to_string());
    if let Some(k) = key {
        req = req.header("Idempotency-Key", k);
    }
    let res = req.send().await.unwrap();
    let replayed = res.headers().contains_key("idempotency-replayed");
    (res.status().as_u16(), res.text().await.unwrap(), replayed)
}

async fn conforms(db: Database) {
    let (base, runs) = app(db, Duration::from_secs(3600)).await;
    let first = call(&base, Some("k1"), "a").await;
    assert_eq!(first, (201, "{\"run\":1}".into(), false));
    assert_eq!(
        call(&base, Some("k1"), "a").await,
        (201, first.1.clone(), true)
    );
    assert_eq!(
        runs.load(Ordering::SeqCst),
        1,
        "the replay did not run the handler"
    );
    let (status, body, _) = call(&base, Some("k1"), "b").await;
    assert_eq!(status, 422, "{body}");
    assert!(body.contains("idempotency_key_reused"));
    // Without a key, or with another, it runs.
    assert_eq!(call(&base, None, "a").await.0, 201);
    assert_eq!(call(&base, Some("k2"), "a").await.1, "{\"run\":3}");
    // A 5xx is not kept: the same key runs again.
    assert_eq!(call(&base, Some("k3"), "fail").await.0, 503);
    assert_eq!(
        call(&base, Some("k3"), "fail").await,
        (503, "try later".into(), false)
    );
    assert_eq!(runs.load(Ordering::SeqCst), 5);
    assert_eq!(call(&base, Some("bad key"), "a").await.0, 400);
}

/// Refusals replay within their window, up to the window's budget; past
/// it they are answered, not kept, and a retry runs again.
async fn refusals_are_kept_within_a_budget(db: Database) {
    let idem = Idempotency::with_retention(db.clone(), Duration::from_secs(3600))
        .with_refusal_limits(Duration::from_secs(3600), 2);
    let (base, runs) = app_with(db, idem).await;
    for key in ["r1", "r2"] {
        let first = call(&base, Some(key), "no").await;
        assert_eq!((first.0, first.2), (409, false));
        assert_eq!(call(&base, Some(key), "no").await, (409, first.1, true));
    }
    let over = call(&base, Some("r3"), "no").await;
    assert_eq!((over.0, over.2), (409, false));
    let again = call(&base, Some("r3"), "no").await;
    assert_eq!((again.0, again.2), (409, false), "not kept: it runs again");
    assert_eq!(runs.load(Ordering::SeqCst), 4);
    // Successes are not limited.
    assert_eq!(call(&base, Some("ok"), "a").await.0, 201);
    assert!(call(&base, Some("ok"), "a").await.2, "replayed");
}

async fn refusals_are_purged_sooner(db: Database) {
    let idem = Idempotency::with_retention(db.clone(), Duration::from_secs(3600))
        .with_refusal_limits(Duration::from_millis(300), 100);
    let (base, _) = app_with(db.clone(), idem).await;
    assert_eq!(call(&base, Some("kept"), "a").await.0, 201);
    assert_eq!(call(&base, Some("refused"), "no").await.0, 409);
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(call(&base, Some("trigger"), "a").await.0, 201);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let count = |k: &'static str| {
        let db = db.clone();
        async move {
            sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM idempotency_keys WHERE idem_key = ?")
                .bind(k)
                .fetch_one(db.pool())
                .await
                .unwrap()
        }
    };
    while count("refused").await != 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "refusal never purged"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(count("kept").await, 1, "a success stays for its retention");
}

async fn purges_after_retention(db: Database) {
    let (base, runs) = app(db.clone(), Duration::from_millis(300)).await;
    assert_eq!(call(&base, Some("old"), "a").await.0, 201);
    tokio::time::sleep(Duration::from_millis(400)).await;
    // This claim starts the purge (in the background) …
    assert_eq!(call(&base, Some("new"), "a").await.0, 201);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let left: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM idempotency_keys WHERE idem_key = 'old'")
                .fetch_one(db.pool())
                .await
                .unwrap();
        if left == 0 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "never purged");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // … so the old key is gone: the same call runs again.
    let again = call(&base, Some("old"), "a").await;
    assert_eq!((again.0, again.2), (201, false));
    assert_eq!(runs.load(Ordering::SeqCst), 3);
}

/// A handler whose first run never ends (its process "died" after claiming)
/// and whose later runs answer what the middleware told them; a body of
/// "unsettled" answers [`idempotency::unsettled`] on its retaken runs.
async fn leased_app(db: Database, lease: Duration) -> (String, Arc<AtomicU32>) {
    db.migrate(&TABLE).await.unwrap();
    let runs = Arc::new(AtomicU32::new(0));
    let counted = runs.clone();
    let router = Router::new()
        .route(
            "/things",
            post(move |keyed: Extension<Keyed>, body: String| {
                let n = counted.fetch_add(1, Ordering::SeqCst) + 1;
                async move {
                    if n == 1 {
                        std::future::pending::<()>().await;
                    }
                    if keyed.retaken && body == "unsettled" {
                        return idempotency::unsettled();
                    }
                    let answer = format!(
                        "{{\"effect\":\"{}\",\"retaken\":{}}}",
                        keyed.effect_id, keyed.retaken
                    );
                    (StatusCode::CREATED, answer).into_response()
                }
            }),
        )
        .route_layer(middleware::from_fn_with_state(
            Idempotency::new(db).with_lease(lease),
            idempotent,
        ));
    (serve(router, CancellationToken::new()).await, runs)
}

/// A claim whose run never answers blocks retries (409) for the lease;
/// then exactly one of several concurrent retries takes it over, runs with
/// the key's effect id and `retaken`, and its answer is the key's answer.
/// An unsettled answer keeps the claim in progress.
async fn claims_are_taken_over_after_the_lease(db: Database) {
    let lease = Duration::from_millis(500);
    let (base, runs) = leased_app(db.clone(), lease).await;
    let stuck = {
        let base = base.clone();
        tokio::spawn(async move { call(&base, Some("k"), "a").await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(runs.load(Ordering::SeqCst), 1, "the first run started");
    let early = call(&base, Some("k"), "a").await;
    assert_eq!(early.0, 409, "{}", early.1);
    assert!(early.1.contains("idempotency_in_progress"));
    stuck.abort();
    tokio::time::sleep(lease).await;
    let retries: Vec<_> = (0..4)
        .map(|_| {
            let base = base.clone();
            tokio::spawn(async move { call(&base, Some("k"), "a").await })
        })
        .collect();
    let mut answers = Vec::new();
    for r in retries {
        answers.push(r.await.unwrap());
    }
    let effect = Keyed::effect_id("POST /things", "k");
    let expected = format!("{{\"effect\":\"{effect}\",\"retaken\":true}}");
    let winners: Vec<_> = answers.iter().filter(|a| a.0 == 201 && !a.2).collect();
    assert_eq!(winners.len(), 1, "one retry took over: {answers:?}");
    assert_eq!(winners[0].1, expected);
    for a in &answers {
        assert!(
            a.0 == 409 || a.0 == 201,
            "{a:?}: in progress, or the answer"
        );
    }
    assert_eq!(runs.load(Ordering::SeqCst), 2, "the handler ran once more");
    assert_eq!(call(&base, Some("k"), "a").await, (201, expected, true));
    // A fresh key runs as new, with its own effect id.
    let fresh = call(&base, Some("k2"), "a").await;
    assert!(fresh.1.contains(&Keyed::effect_id("POST /things", "k2")));
    assert!(fresh.1.contains("\"retaken\":false"));

    // Unsettled: answered 409, the claim stays in progress for another lease.
    // (A second app on the same table: its first run is stuck again.)
    let (base, _) = leased_app(db, lease).await;
    let stuck = {
        let base = base.clone();
        tokio::spawn(async move { call(&base, Some("u"), "unsettled").await })
    };
    tokio::time::sleep(Duration::from_millis(100) + lease).await;
    stuck.abort();
    let retaken = call(&base, Some("u"), "unsettled").await;
    assert_eq!(retaken.0, 409, "{}", retaken.1);
    let again = call(&base, Some("u"), "unsettled").await;
    assert_eq!(
        (again.0, again.2),
        (409, false),
        "kept in progress, nothing recorded"
    );
}

#[tokio::test]
async fn sqlite_conforms() {
    let (db, _dir) = fresh_sqlite("idem").await;
    conforms(db).await;
}

#[tokio::test]
async fn mysql_conforms() {
    conforms(fresh_mysql("idem").await).await;
}

#[tokio::test]
async fn sqlite_takes_claims_over_after_the_lease() {
    let (db, _dir) = fresh_sqlite("idem_lease").await;
    claims_are_taken_over_after_the_lease(db).await;
}

#[tokio::test]
async fn mysql_takes_claims_over_after_the_lease() {
    claims_are_taken_over_after_the_lease(fresh_mysql("idem_lease").await).await;
}

#[tokio::test]
async fn sqlite_keeps_refusals_within_a_budget() {
    let (db, _dir) = fresh_sqlite("idem_refusals").await;
    refusals_are_kept_within_a_budget(db).await;
}

#[tokio::test]
async fn mysql_keeps_refusals_within_a_budget() {
    refusals_are_kept_within_a_budget(fresh_mysql("idem_refusals").await).await;
}

#[tokio::test]
async fn sqlite_purges_refusals_sooner() {
    let (db, _dir) = fresh_sqlite("idem_refusal_purge").await;
    refusals_are_purged_sooner(db).await;
}

#[tokio::test]
async fn mysql_purges_refusals_sooner() {
    refusals_are_purged_sooner(fresh_mysql("idem_refusal_purge").await).await;
}

#[tokio::test]
async fn sqlite_purges_after_retention() {
    let (db, _dir) = fresh_sqlite("idem_purge").await;
    purges_after_retention(db).await;
}

#[tokio::test]
async fn mysql_purges_after_retention() {
    purges_after_retention(fresh_mysql("idem_purge").await).await;
}
