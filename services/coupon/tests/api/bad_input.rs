//! Bad input is a problem+json 4xx with a stable code, never a 500.

use serde_json::json;

use crate::helpers::{open_campaign, spawn_app, spawn_app_with, Backend, Options, TestApp};

fn assert_problem(a: &crate::helpers::Answer, status: u16, code: &str) {
    assert_eq!(a.status, status, "{}", a.body);
    assert_eq!(a.content_type, "application/problem+json");
    assert_eq!(a.body["code"], code, "{}", a.body);
    assert_eq!(a.body["status"], status);
}

async fn raw(app: &TestApp, path: &str, body: &'static str) -> crate::helpers::Answer {
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
    app.campaign("c", 10, 1, "DATABASE").await;
    assert_problem(
        &raw(&app, "/v1/campaigns/c/issue", "{\"userId\": ").await,
        400,
        "malformed_json",
    );
    assert_problem(
        &raw(&app, "/v1/campaigns/c/issue", "{\"userId\": 7}").await,
        422,
        "invalid_body",
    );
    assert_problem(
        &raw(&app, "/v1/campaigns/c/issue", "{}").await,
        422,
        "invalid_body",
    );
    assert_problem(
        &raw(
            &app,
            "/v1/campaigns/c/issue",
            "{\"userId\": \"u\", \"extra\": 1}",
        )
        .await,
        422,
        "invalid_body",
    );
    let no_type = app
        .send(
            app.client
                .post(app.url("/v1/campaigns/c/issue"))
                .body("{\"userId\":\"u\"}"),
        )
        .await;
    assert_problem(&no_type, 400, "unsupported_media_type");
    let big = format!("{{\"userId\": \"{}\"}}", "x".repeat(70 * 1024));
    let a = app
        .send(
            app.client
                .post(app.url("/v1/campaigns/c/issue"))
                .header("content-type", "application/json")
                .body(big),
        )
        .await;
    assert_problem(&a, 413, "body_too_large");
    let long = "u".repeat(129);
    assert_problem(&app.issue("v1", "c", &long).await, 400, "invalid_id");
    assert_problem(
        &app.issue("v1", &"c".repeat(129), "u").await,
        400,
        "invalid_id",
    );
    assert_problem(&app.issue("v1", "c", "").await, 400, "invalid_id");
    assert_problem(
        &app.get("/users/u/coupons?limit=0").await,
        400,
        "invalid_query",
    );
    assert_problem(
        &app.get("/users/u/coupons?limit=abc").await,
        400,
        "invalid_query",
    );
    assert_problem(&app.get("/no/such/route").await, 404, "route_not_found");
    let wrong_method = app
        .send(app.client.delete(app.url("/v1/campaigns/c/issue")))
        .await;
    assert_problem(&wrong_method, 405, "method_not_allowed");
    let wrong_method = app.send(app.client.put(app.url("/metrics"))).await;
    assert_problem(&wrong_method, 405, "method_not_allowed");
}

async fn invalid_campaigns_and_amounts(backend: Backend) {
    let app = spawn_app(backend).await;
    for (field, value) in [
        ("quota", json!(-1)),
        ("quota", json!(0)),
        ("perUserLimit", json!(0)),
        ("quota", json!("ten")),
    ] {
        let mut spec = open_campaign(10, 1, "DATABASE");
        spec[field] = value.clone();
        let a = app.put_campaign("bad", spec).await;
        assert_eq!(a.status, 422, "{field}={value}: {}", a.body);
    }
    let mut spec = open_campaign(10, 1, "DATABASE");
    spec["endsAt"] = spec["startsAt"].clone();
    assert_problem(
        &app.put_campaign("bad", spec).await,
        422,
        "invalid_campaign",
    );
    let mut spec = open_campaign(10, 1, "DATABASE");
    spec["discount"] = json!({"kind": "PERCENT", "value": 150});
    assert_problem(
        &app.put_campaign("bad", spec).await,
        422,
        "invalid_campaign",
    );
    let mut spec = open_campaign(10, 1, "SOMETHING");
    spec["strategy"] = json!("SOMETHING");
    assert_eq!(app.put_campaign("bad", spec).await.status, 422);
    assert_eq!(
        app.get_campaign("bad").await.status,
        404,
        "nothing invalid was stored"
    );

    app.campaign("c", 10, 1, "DATABASE").await;
    let code = app.issue("v1", "c", "u").await.body["code"]
        .as_str()
        .unwrap()
        .to_string();
    for amount in [json!(-5), json!(0)] {
        let a = app
            .post(
                &format!("/coupons/{code}/redeem"),
                json!({"userId": "u", "orderId": "o", "orderAmount": amount}),
            )
            .await;
        assert_problem(&a, 422, "invalid_amount");
    }
    let a = app
        .post(
            &format!("/coupons/{code}/redeem"),
            json!({"userId": "u", "orderId": "o", "orderAmount": 1.5}),
        )
        .await;
    assert_problem(&a, 422, "invalid_body");
}

async fn admin_token_required_when_configured(backend: Backend) {
    let app = spawn_app_with(
        backend,
        Options {
            admin_token: Some("s3cret".into()),
            ..Options::default()
        },
    )
    .await;
    let spec = open_campaign(10, 1, "DATABASE");
    let none = app
        .send(app.client.put(app.url("/admin/campaigns/c")).json(&spec))
        .await;
    assert_problem(&none, 401, "admin_token_required");
    let wrong = app
        .send(
            app.client
                .put(app.url("/admin/campaigns/c"))
                .bearer_auth("nope")
                .json(&spec),
        )
        .await;
    assert_problem(&wrong, 403, "invalid_admin_token");
    let get = app
        .send(app.client.get(app.url("/admin/campaigns/c")))
        .await;
    assert_problem(&get, 401, "admin_token_required");
    assert_eq!(
        app.put_campaign("c", spec).await.status,
        201,
        "with the token"
    );
    // Issuing is public.
    assert_eq!(app.issue("v1", "c", "u").await.status, 201);
}

/// Ids from URLs that name no campaign cannot add metric series: thousands
/// of them are counted under one `promotion="other"` label.
async fn unknown_ids_add_no_metric_series(backend: Backend) {
    use futures::StreamExt;
    let app = spawn_app(backend).await;
    app.campaign("c", 10, 1, "QUEUED").await;
    assert_eq!(app.issue("v3", "c", "u").await.status, 202);
    let before = app.series("promo_admissions_total").await;
    let answers: Vec<u16> = futures::stream::iter(0..3000)
        .map(|i| {
            let app = &app;
            async move {
                let version = ["v1", "v2", "v3"][i % 3];
                app.issue(version, &format!("nope-{i}"), "u").await.status
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
    invalid_campaigns_and_amounts,
    admin_token_required_when_configured
);
