//! Redemption math, idempotency per order, cancellation.

use serde_json::json;

use crate::helpers::{open_campaign, spawn_app, Backend, TestApp};

async fn coupon_of(app: &TestApp, campaign: &str, user: &str) -> String {
    let a = app.issue("v1", campaign, user).await;
    assert_eq!(a.status, 201, "{}", a.body);
    a.body["code"].as_str().unwrap().to_string()
}

async fn redeem(
    app: &TestApp,
    code: &str,
    user: &str,
    order: &str,
    amount: i64,
) -> crate::helpers::Answer {
    app.post(
        &format!("/coupons/{code}/redeem"),
        json!({"userId": user, "orderId": order, "orderAmount": amount}),
    )
    .await
}

async fn fixed_and_percent_discounts(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut fixed = open_campaign(10, 5, "DATABASE");
    fixed["discount"] = json!({"kind": "FIXED", "value": 3000, "minOrderAmount": 10000});
    assert_eq!(app.put_campaign("fixed", fixed).await.status, 201);
    let mut pct = open_campaign(10, 5, "DATABASE");
    pct["discount"] = json!({"kind": "PERCENT", "value": 10, "maxAmount": 3000});
    assert_eq!(app.put_campaign("pct", pct).await.status, 201);

    let code = coupon_of(&app, "fixed", "u1").await;
    let a = redeem(&app, &code, "u1", "o1", 5000).await;
    assert_eq!(
        (a.status, a.body["code"].as_str()),
        (422, Some("below_minimum_order"))
    );
    let a = redeem(&app, &code, "u1", "o1", 20000).await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(
        (
            a.body["discountAmount"].as_i64(),
            a.body["payableAmount"].as_i64()
        ),
        (Some(3000), Some(17000))
    );

    for (amount, off) in [(12345, 1234), (50000, 3000), (20000, 2000)] {
        let code = coupon_of(&app, "pct", "u2").await;
        let a = redeem(&app, &code, "u2", &format!("order-{amount}"), amount).await;
        assert_eq!(
            a.body["discountAmount"].as_i64(),
            Some(off),
            "{amount}: {}",
            a.body
        );
        assert_eq!(a.body["payableAmount"].as_i64(), Some(amount - off));
    }
}

async fn idempotency_and_cancel(backend: Backend) {
    let app = spawn_app(backend).await;
    app.campaign("c", 10, 1, "DATABASE").await;
    let code = coupon_of(&app, "c", "u1").await;
    let first = redeem(&app, &code, "u1", "o1", 9000).await;
    assert_eq!(first.status, 200);
    // The same order again answers the same and changes nothing.
    let again = redeem(&app, &code, "u1", "o1", 9000).await;
    assert_eq!((again.status, &again.body), (200, &first.body));
    let other = redeem(&app, &code, "u1", "o2", 9000).await;
    assert_eq!(
        (other.status, other.body["code"].as_str()),
        (409, Some("already_redeemed"))
    );
    let wrong = redeem(&app, &code, "mallory", "o3", 9000).await;
    assert_eq!(
        (wrong.status, wrong.body["code"].as_str()),
        (403, Some("wrong_user"))
    );
    let coupons = app.get("/users/u1/coupons").await;
    assert_eq!(coupons.body["items"][0]["status"], "REDEEMED");

    let path = format!("/coupons/{code}/cancel-redemption");
    let cancel = |order: &'static str| app.post(&path, json!({"orderId": order}));
    let a = cancel("o2").await;
    assert_eq!(
        (a.status, a.body["code"].as_str()),
        (409, Some("order_mismatch"))
    );
    let a = cancel("o1").await;
    assert_eq!((a.status, a.body["status"].as_str()), (200, Some("ISSUED")));
    let a = cancel("o1").await;
    assert_eq!(
        (a.status, a.body["status"].as_str()),
        (200, Some("ISSUED")),
        "cancel is idempotent"
    );
    // Usable again, for another order.
    assert_eq!(redeem(&app, &code, "u1", "o2", 9000).await.status, 200);
    assert_eq!(
        redeem(&app, "NOSUCHCODE", "u1", "o9", 9000).await.status,
        404
    );
}

async fn expired_coupon(backend: Backend) {
    let app = spawn_app(backend).await;
    let now = chrono::Utc::now();
    let mut spec = open_campaign(10, 1, "DATABASE");
    spec["endsAt"] = json!((now + chrono::Duration::milliseconds(1500)).to_rfc3339());
    assert_eq!(app.put_campaign("short", spec).await.status, 201);
    let code = coupon_of(&app, "short", "u1").await;
    tokio::time::sleep(std::time::Duration::from_millis(1700)).await;
    let a = redeem(&app, &code, "u1", "o1", 9000).await;
    assert_eq!((a.status, a.body["code"].as_str()), (422, Some("expired")));
    assert_eq!(
        app.get("/users/u1/coupons").await.body["items"][0]["status"],
        "EXPIRED"
    );
}

promo_platform::on_both_backends!(
    fixed_and_percent_discounts,
    idempotency_and_cancel,
    expired_coupon
);
