//! Every coupon change is one CloudEvent in the outbox, published by the
//! relay and listed by `GET /admin/events`: issued, sold out, redeemed and
//! redemption cancelled — each with one id, about the campaign.

use std::{collections::HashSet, time::Duration};

use futures::future::join_all;
use serde_json::{json, Value};

use crate::helpers::{open_campaign, spawn_app, Backend, TestApp};

/// Asks for a coupon for `user`; returns it (V3: once decided), or None
/// when refused.
async fn coupon(app: &TestApp, version: &str, user: &str) -> Option<Value> {
    let a = app.issue(version, "ev", user).await;
    match (version, a.status) {
        ("v3", 202) => {
            let id = a.body["requestId"].as_str().unwrap().to_string();
            let decided = app.wait_decided(&[id]).await.remove(0);
            (decided["status"] == "ISSUED").then(|| decided["coupon"].clone())
        }
        (_, 201) => Some(a.body),
        (_, 410) => None,
        (_, s) => panic!("issue: {s} {}", a.body),
    }
}

async fn run(backend: Backend, version: &str, strategy: &str) {
    let app = spawn_app(backend).await;
    assert_eq!(
        app.put_campaign("ev", open_campaign(3, 1, strategy))
            .await
            .status,
        201
    );
    let mut coupons = Vec::new();
    for user in ["a", "b", "c"] {
        coupons.push(coupon(&app, version, user).await.expect("issued"));
    }
    assert!(
        coupon(&app, version, "d").await.is_none(),
        "a refusal changes nothing and publishes nothing"
    );
    let code = coupons[0]["code"].as_str().unwrap();
    let (redeem_path, cancel_path) = (
        format!("/coupons/{code}/redeem"),
        format!("/coupons/{code}/cancel-redemption"),
    );
    let redeem = |order: &'static str| {
        app.post(
            &redeem_path,
            json!({"userId": "a", "orderId": order, "orderAmount": 5000}),
        )
    };
    let cancel = |order: &'static str| app.post(&cancel_path, json!({"orderId": order}));
    assert_eq!(redeem("o1").await.status, 200);
    assert_eq!(redeem("o1").await.status, 200, "no second event");
    assert_eq!(cancel("o1").await.status, 200);
    assert_eq!(cancel("o1").await.status, 200, "no second event");
    assert_eq!(
        redeem("o1").await.status,
        200,
        "a new redemption, a new event"
    );
    // A raised quota sells out again, at the higher count.
    assert_eq!(
        app.put_campaign("ev", open_campaign(4, 1, strategy))
            .await
            .status,
        200
    );
    coupons.push(coupon(&app, version, "d").await.expect("issued"));

    let events = app.events_about("ev", 9).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(app.events_about("ev", 9).await.len(), 9);
    assert_eq!(events.len(), 9, "exactly one event per change: {events:#?}");
    let ids: HashSet<&str> = events.iter().map(|e| e["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), 9, "distinct ids: {events:#?}");
    for e in &events {
        assert_eq!(e["specversion"], "1.0");
        assert_eq!(e["source"], "/promo/coupon");
        assert_eq!(e["subject"], "ev");
    }
    let kinds: Vec<&str> = events
        .iter()
        .map(|e| e["type"].as_str().unwrap().trim_start_matches("dev.promo."))
        .collect();
    assert_eq!(
        kinds,
        [
            "coupon.issued",
            "coupon.issued",
            "coupon.issued",
            "campaign.sold_out",
            "coupon.redeemed",
            "coupon.redemption_cancelled",
            "coupon.redeemed",
            "coupon.issued",
            "campaign.sold_out",
        ],
        "one campaign's events in the order they happened"
    );
    for (e, c) in events[..3].iter().zip(&coupons) {
        assert_eq!(
            e["id"],
            format!("coupon.issued:{}", c["couponId"].as_str().unwrap())
        );
        assert_eq!(e["data"]["couponId"], c["couponId"]);
        assert_eq!(e["data"]["userId"], c["userId"]);
        assert_eq!(e["data"]["status"], "ISSUED");
    }
    assert_eq!(events[3]["id"], "campaign.sold_out:ev:3");
    assert_eq!(events[3]["data"], json!({"campaign": "ev", "issued": 3}));
    assert_eq!(events[8]["id"], "campaign.sold_out:ev:4");
    let redeemed = &events[4]["data"];
    assert_eq!(redeemed["couponId"], coupons[0]["couponId"]);
    assert_eq!(
        (
            &redeemed["orderId"],
            &redeemed["userId"],
            &redeemed["campaign"]
        ),
        (&"o1".into(), &"a".into(), &"ev".into())
    );
    assert_eq!(
        (&redeemed["discountAmount"], &redeemed["payableAmount"]),
        (&1000.into(), &4000.into())
    );
    assert_eq!(events[5]["data"]["orderId"], "o1");
    assert_eq!(events[5]["data"]["couponId"], coupons[0]["couponId"]);
}

async fn v1_every_change_is_one_event(backend: Backend) {
    run(backend, "v1", "DATABASE").await
}

async fn v2_every_change_is_one_event(backend: Backend) {
    run(backend, "v2", "REDIS_LOCK").await
}

async fn v3_every_change_is_one_event(backend: Backend) {
    run(backend, "v3", "QUEUED").await
}

/// A storm of one campaign: 60 users ask twice each at once for 40
/// coupons (one per user). Requests that lose (sold out, a user's second
/// request colliding on its UNIQUE seq after its statements began) are
/// rolled back with any event written before the failing statement, so the
/// events are exactly one per coupon issued and one sell-out.
async fn storm(backend: Backend, version: &str, strategy: &str) {
    let app = spawn_app(backend).await;
    let created = app.put_campaign("ev", open_campaign(40, 1, strategy)).await;
    assert_eq!(created.status, 201);
    let users: Vec<String> = (0..60).map(|i| format!("u{i}")).collect();
    let asks = users
        .iter()
        .chain(&users)
        .map(|u| app.issue(version, "ev", u));
    let mut issued = HashSet::new();
    for a in join_all(asks).await {
        match a.status {
            201 => assert!(issued.insert(a.body["couponId"].as_str().unwrap().to_string())),
            409 | 410 => {}
            s => panic!("issue: {s} {}", a.body),
        }
    }
    assert_eq!(issued.len(), 40, "the quota, exactly");
    let events = app.events_about("ev", 41).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(app.events_about("ev", 41).await.len(), 41);
    assert_eq!(events.len(), 41, "one event per coupon and the sell-out");
    let mut published = HashSet::new();
    for e in &events {
        match e["type"].as_str().unwrap() {
            "dev.promo.coupon.issued" => {
                let id = e["data"]["couponId"].as_str().unwrap().to_string();
                assert_eq!(e["id"], format!("coupon.issued:{id}"));
                assert!(published.insert(id));
            }
            "dev.promo.campaign.sold_out" => assert_eq!(e["id"], "campaign.sold_out:ev:40"),
            t => panic!("unexpected {t}"),
        }
    }
    assert_eq!(published, issued, "the issued coupons' events, no others");
}

async fn v1_storm_events_are_the_issued_coupons(backend: Backend) {
    storm(backend, "v1", "DATABASE").await
}

async fn v2_storm_events_are_the_issued_coupons(backend: Backend) {
    storm(backend, "v2", "REDIS_LOCK").await
}

promo_platform::on_both_backends!(
    v1_every_change_is_one_event,
    v2_every_change_is_one_event,
    v3_every_change_is_one_event,
    v1_storm_events_are_the_issued_coupons,
    v2_storm_events_are_the_issued_coupons
);
