//! Bad input is a problem+json 4xx with a stable code, never a 500.

use serde_json::json;

use crate::helpers::{open_sale, spawn_app, spawn_app_with, Answer, Backend, Options, TestApp};

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
            .body(body),
    )
    .await
}

async fn malformed_and_mistyped(backend: Backend) {
    let app = spawn_app(backend).await;
    app.sale("s", 10, 3, "DATABASE").await;
    let path = "/v1/time-sales/s/orders";
    assert_problem(
        &raw(&app, path, "{\"userId\": ").await,
        400,
        "malformed_json",
    );
    assert_problem(
        &raw(&app, path, "{\"userId\": \"u\", \"quantity\": \"two\"}").await,
        422,
        "invalid_body",
    );
    assert_problem(
        &raw(&app, path, "{\"userId\": \"u\", \"quantity\": 1.5}").await,
        422,
        "invalid_body",
    );
    assert_problem(
        &raw(&app, path, "{\"userId\": \"u\"}").await,
        422,
        "invalid_body",
    );
    assert_problem(
        &raw(&app, path, "{\"userId\": \"u\", \"quantity\": 1, \"x\": 1}").await,
        422,
        "invalid_body",
    );
    assert_problem(
        &raw(
            &app,
            path,
            "{\"userId\": \"u\", \"quantity\": 99999999999999999999}",
        )
        .await,
        422,
        "invalid_body",
    );
    assert_problem(
        &app.order("v1", "s", &"u".repeat(129), 1).await,
        400,
        "invalid_id",
    );
    assert_problem(
        &app.order("v1", &"s".repeat(129), "u", 1).await,
        400,
        "invalid_id",
    );
    assert_problem(&app.order("v1", "s", "", 1).await, 400, "invalid_id");
    assert_problem(
        &app.order("v1", "s", "u", i64::MAX).await,
        409,
        "limit_exceeded",
    );
    assert_problem(
        &app.get(&format!("/orders/{}", "o".repeat(129))).await,
        400,
        "invalid_id",
    );
    // Path ids are checked by the extractor, named as the API names them.
    let spaced = app.get("/orders/a%20b").await;
    assert_problem(&spaced, 400, "invalid_id");
    assert!(
        spaced.body["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("orderId"),
        "{}",
        spaced.body
    );

    // Sale specifications.
    for (field, value) in [
        ("stock", json!(0)),
        ("perUserLimit", json!(0)),
        ("salePrice", json!(0)),
        ("salePrice", json!(100_001)),
        ("endsAt", json!("2020-01-01T00:00:00Z")),
    ] {
        let mut spec = open_sale(10, 3, "QUEUED");
        spec[field] = value;
        assert_problem(&app.put_sale("bad", spec).await, 422, "invalid_sale");
    }
    let mut spec = open_sale(10, 3, "QUEUED");
    spec["strategy"] = json!("KAFKA");
    assert_problem(&app.put_sale("bad", spec).await, 422, "invalid_body");
    let mut spec = open_sale(10, 3, "QUEUED");
    spec["product"]["colour"] = json!("red");
    assert_problem(&app.put_sale("bad", spec).await, 422, "invalid_body");
    assert_eq!(
        app.get("/time-sales/bad").await.status,
        404,
        "nothing was stored"
    );
}

async fn admin_routes_need_the_token(backend: Backend) {
    let app = spawn_app_with(
        backend,
        Options {
            admin_token: Some("sesame".into()),
            ..Options::default()
        },
    )
    .await;
    let anonymous = app
        .send(
            app.client
                .put(app.url("/admin/time-sales/s"))
                .json(&open_sale(1, 1, "DATABASE")),
        )
        .await;
    assert_problem(&anonymous, 401, "admin_token_required");
    assert_eq!(
        app.put_sale("s", open_sale(1, 1, "DATABASE")).await.status,
        201
    );
    // Ordering and reading are public.
    assert_eq!(app.order("", "s", "u", 1).await.status, 201);
    assert_eq!(app.get("/time-sales/s").await.status, 200);
}

/// Ids from URLs that name no sale cannot add metric series: thousands of
/// them are counted under one `promotion="other"` label.
async fn unknown_ids_add_no_metric_series(backend: Backend) {
    use futures::StreamExt;
    let app = spawn_app(backend).await;
    app.sale("s", 10, 1, "QUEUED").await;
    assert_eq!(app.order("v3", "s", "u", 1).await.status, 202);
    let before = app.series("promo_admissions_total").await;
    let answers: Vec<u16> = futures::stream::iter(0..3000)
        .map(|i| {
            let app = &app;
            async move {
                let version = ["v1", "v2", "v3"][i % 3];
                app.order(version, &format!("nope-{i}"), "u", 1)
                    .await
                    .status
            }
        })
        .buffer_unordered(32)
        .collect()
        .await;
    assert!(answers.iter().all(|s| *s == 404), "{answers:?}");
    let after = app.series("promo_admissions_total").await;
    assert!(after <= before + 3, "{before} series before, {after} after");
    assert!(app.series("promo_http_requests_total").await < 20);
}

promo_platform::on_both_backends!(
    unknown_ids_add_no_metric_series,
    malformed_and_mistyped,
    admin_routes_need_the_token
);
