//! The headline invariant: 2,000 concurrent requests from 1,000 users (each
//! twice) against quota 300 store exactly 300 coupons, nobody twice, each
//! success backed by exactly one row, every refusal a 409 or 410, no 5xx.

use std::collections::{HashMap, HashSet};

use futures::future::join_all;

use crate::helpers::{spawn_app, Backend, TestApp};

const QUOTA: usize = 300;
const USERS: usize = 1000;

async fn storm(
    app: &TestApp,
    version: &str,
    campaign: &str,
) -> Vec<(String, crate::helpers::Answer)> {
    // Every user twice, interleaved so a user's two requests race each other.
    let requests = (0..USERS * 2).map(|i| {
        let user = format!("user-{}", i % USERS);
        async move {
            let a = app.issue(version, campaign, &user).await;
            (user, a)
        }
    });
    join_all(requests).await
}

async fn check_store(app: &TestApp, campaign: &str, successes: &HashMap<String, String>) {
    let stored = app.stored_coupons(campaign).await;
    assert_eq!(stored.len(), QUOTA, "exactly the quota is stored");
    let users: HashSet<&String> = stored.iter().map(|(_, u)| u).collect();
    assert_eq!(users.len(), QUOTA, "no user holds two coupons");
    let by_id: HashMap<&String, &String> = stored.iter().map(|(c, u)| (c, u)).collect();
    assert_eq!(
        successes.len(),
        QUOTA,
        "every stored coupon was answered to someone"
    );
    for (coupon_id, user) in successes {
        assert_eq!(
            by_id.get(coupon_id),
            Some(&user),
            "success {coupon_id} maps to its row"
        );
    }
    assert_eq!(app.issued_column(campaign).await, QUOTA as i64);
}

async fn synchronous_strategy(backend: Backend, version: &str, strategy: &str) {
    let app = spawn_app(backend).await;
    app.campaign("storm", QUOTA as i64, 1, strategy).await;
    let answers = storm(&app, version, "storm").await;
    let mut successes = HashMap::new();
    for (user, a) in &answers {
        match a.status {
            201 => {
                let id = a.body["couponId"].as_str().unwrap().to_string();
                assert_eq!(a.body["userId"], user.as_str());
                assert!(successes.insert(id, user.clone()).is_none());
            }
            409 => assert_eq!(a.body["code"], "already_issued"),
            410 => assert_eq!(a.body["code"], "sold_out"),
            s => panic!("unexpected {s}: {}", a.body),
        }
    }
    check_store(&app, "storm", &successes).await;
}

async fn v1_database(backend: Backend) {
    synchronous_strategy(backend, "v1", "DATABASE").await
}

async fn v2_redis_lock(backend: Backend) {
    synchronous_strategy(backend, "v2", "REDIS_LOCK").await
}

/// V2 decides whatever queued up in one transaction: requests for an open
/// campaign, a paused one and an unknown one, interleaved, each get their
/// own campaign's answer, and the open one stores exactly its quota.
async fn v2_batches_mixing_campaigns(backend: Backend) {
    let app = spawn_app(backend).await;
    app.campaign("open", 50, 1, "REDIS_LOCK").await;
    let mut paused = crate::helpers::open_campaign(50, 1, "REDIS_LOCK");
    paused["paused"] = serde_json::json!(true);
    assert_eq!(app.put_campaign("paused", paused).await.status, 201);
    let campaigns = ["open", "paused", "missing"];
    let answers = join_all((0..600).map(|i| {
        let (app, campaign) = (&app, campaigns[i % 3]);
        async move {
            let a = app.issue("v2", campaign, &format!("u{i}")).await;
            (campaign, format!("u{i}"), a)
        }
    }))
    .await;
    let mut successes = HashMap::new();
    for (campaign, user, a) in &answers {
        match (*campaign, a.status) {
            ("open", 201) => {
                assert_eq!(a.body["userId"], user.as_str());
                successes.insert(
                    a.body["couponId"].as_str().unwrap().to_string(),
                    user.clone(),
                );
            }
            ("open", 410) => assert_eq!(a.body["code"], "sold_out"),
            ("paused", 422) => assert_eq!(a.body["code"], "not_active"),
            ("missing", 404) => assert_eq!(a.body["code"], "campaign_not_found"),
            (c, s) => panic!("{c}: unexpected {s}: {}", a.body),
        }
    }
    assert_eq!(successes.len(), 50);
    let stored = app.stored_coupons("open").await;
    assert_eq!(stored.len(), 50);
    for (coupon_id, user) in &stored {
        assert_eq!(successes.get(coupon_id), Some(user));
    }
    assert_eq!(app.issued_column("open").await, 50);
    assert!(app.stored_coupons("paused").await.is_empty());
}

/// The unversioned route follows the campaign's strategy (here V1).
async fn default_route_follows_strategy(backend: Backend) {
    let app = spawn_app(backend).await;
    app.campaign("d1", 5, 1, "DATABASE").await;
    app.campaign("d3", 5, 1, "QUEUED").await;
    assert_eq!(app.issue("", "d1", "u").await.status, 201);
    let a = app.issue("", "d3", "u").await;
    assert_eq!(a.status, 202, "{}", a.body);
    assert_eq!(a.body["status"], "PENDING");
}

async fn v3_queued(backend: Backend) {
    let app = spawn_app(backend).await;
    app.campaign("storm", QUOTA as i64, 1, "QUEUED").await;
    let answers = storm(&app, "v3", "storm").await;
    let mut accepted = Vec::new();
    for (user, a) in &answers {
        match a.status {
            202 => {
                assert_eq!(a.body["status"], "PENDING");
                accepted.push((
                    a.body["requestId"].as_str().unwrap().to_string(),
                    user.clone(),
                ));
            }
            409 => assert_eq!(a.body["code"], "already_issued"),
            410 => assert_eq!(a.body["code"], "sold_out"),
            s => panic!("unexpected {s}: {}", a.body),
        }
    }
    assert_eq!(accepted.len(), QUOTA, "admission is exact");
    let ids: Vec<String> = accepted.iter().map(|(r, _)| r.clone()).collect();
    let decided = app.wait_decided(&ids).await;
    let mut successes = HashMap::new();
    for (d, (_, user)) in decided.iter().zip(&accepted) {
        assert_eq!(d["status"], "ISSUED", "{d}");
        assert_eq!(d["coupon"]["userId"], user.as_str());
        successes.insert(
            d["coupon"]["couponId"].as_str().unwrap().to_string(),
            user.clone(),
        );
    }
    check_store(&app, "storm", &successes).await;
    let view = app.get_campaign("storm").await.body;
    assert_eq!(
        (
            view["issued"].as_i64(),
            view["remaining"].as_i64(),
            view["pending"].as_i64()
        ),
        (Some(300), Some(0), Some(0))
    );
}

promo_platform::on_both_backends!(
    v1_database,
    v2_batches_mixing_campaigns,
    default_route_follows_strategy
);
promo_platform::on_every_backend!(v2_redis_lock, v3_queued);
