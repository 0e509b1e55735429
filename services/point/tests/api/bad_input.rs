//! Bad input is a problem+json 4xx with a stable code, never a 500.

use serde_json::json;

use crate::helpers::{spawn_app, Answer, Backend, TestApp};

fn assert_problem(a: &Answer, status: u16, code: &str) {
    assert_eq!(a.status, status, "{}", a.body);
    assert_eq!(a.content_type, "application/problem+json");
    assert_eq!(a.body["code"], code, "{}", a.body);
}

async fn raw(app: &TestApp, path: &str, body: &'static str) -> Answer {
    app.send(
        app.client
            .post(app.url(path))
            .header("content-type", "application/json")
            .header("Idempotency-Key", uuid::Uuid::new_v4().to_string())
            .body(body),
    )
    .await
}

async fn refused_with_problems(backend: Backend) {
    let app = spawn_app(backend).await;
    let no_key = app
        .send(
            app.client
                .post(app.url("/users/u/points/earn"))
                .json(&json!({"amount": 1, "reason": "r"})),
        )
        .await;
    assert_problem(&no_key, 400, "idempotency_key_required");
    let long_key = app
        .mutate(
            "u",
            "earn",
            &"k".repeat(129),
            json!({"amount": 1, "reason": "r"}),
        )
        .await;
    assert_problem(&long_key, 400, "invalid_id");
    for body in [
        json!({"amount": 0, "reason": "r"}),
        json!({"amount": -5, "reason": "r"}),
        json!({"amount": 1, "reason": ""}),
        json!({"amount": 1, "reason": "r", "expiresAt": "2020-01-01T00:00:00Z"}),
        json!({"amount": 10_000_000_000_000i64, "reason": "r"}),
    ] {
        let a = app
            .mutate("u", "earn", &uuid::Uuid::new_v4().to_string(), body.clone())
            .await;
        assert_problem(&a, 422, "invalid_request");
    }
    assert_problem(
        &raw(&app, "/users/u/points/earn", "{\"amount\": ").await,
        400,
        "malformed_json",
    );
    assert_problem(
        &raw(
            &app,
            "/users/u/points/earn",
            "{\"amount\": \"ten\", \"reason\": \"r\"}",
        )
        .await,
        422,
        "invalid_body",
    );
    assert_problem(
        &raw(
            &app,
            "/users/u/points/use",
            "{\"amount\": 1, \"reason\": \"r\", \"x\": 1}",
        )
        .await,
        422,
        "invalid_body",
    );
    assert_problem(
        &raw(&app, "/users/u/points/refund", "{}").await,
        422,
        "invalid_body",
    );
    assert_problem(
        &raw(
            &app,
            "/users/u/points/earn",
            "{\"amount\": 1, \"reason\": \"r\", \"expiresAt\": \"soon\"}",
        )
        .await,
        422,
        "invalid_body",
    );
    let user = "x".repeat(129);
    assert_problem(
        &app.get(&format!("/users/{user}/points")).await,
        400,
        "invalid_id",
    );
    assert_problem(
        &app.get("/users/u/points/history?limit=0").await,
        400,
        "invalid_query",
    );
    let a = app
        .mutate("u", "use", "k", json!({"amount": 1, "reason": "r"}))
        .await;
    assert_problem(&a, 409, "insufficient_balance");
    assert_eq!(app.books("u").await.0, 0, "nothing was written");
}

promo_platform::on_both_backends!(refused_with_problems);
