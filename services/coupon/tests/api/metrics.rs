//! The metrics the dashboards and alerts use (docs/operations.md) are exported after real traffic.

use crate::helpers::{spawn_app, Backend};

async fn promised_metrics_are_exported(backend: Backend) {
    let app = spawn_app(backend).await;
    app.campaign("m", 10, 1, "QUEUED").await;
    let id = app.issue("v3", "m", "u1").await.body["requestId"]
        .as_str()
        .unwrap()
        .to_string();
    app.wait_decided(&[id]).await;
    assert_eq!(app.issue("v3", "m", "u1").await.status, 409);
    app.svc.core.refresh_gauges().await.unwrap();
    let text = app.get("/metrics").await.body;
    let text = text.as_str().expect("text exposition");
    for needle in [
        r#"promo_http_requests_total{method="POST",route="/v3/campaigns/{campaign}/issue",service="coupon",status="202"} 1"#,
        r#"promo_http_request_duration_seconds_bucket{method="POST",route="/v3/campaigns/{campaign}/issue",service="coupon""#,
        r#"promo_admissions_total{outcome="issued",promotion="m",service="coupon",strategy="v3_queued"} 1"#,
        r#"promo_admissions_total{outcome="duplicate",promotion="m",service="coupon",strategy="v3_queued"} 1"#,
        r#"promo_remaining{promotion="m",service="coupon"} 9"#,
        r#"promo_pending{promotion="m",service="coupon"} 0"#,
        r#"promo_consumer_batch_size_count{service="coupon"}"#,
        r#"promo_consumer_persist_duration_seconds_count{service="coupon"}"#,
        r#"promo_consumer_messages_total{outcome="issued",service="coupon"} 1"#,
    ] {
        assert!(text.contains(needle), "missing {needle}\n{text}");
    }
}

promo_platform::on_both_backends!(promised_metrics_are_exported);
