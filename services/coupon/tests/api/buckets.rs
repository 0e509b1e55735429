//! One hot campaign over 16 buckets: exactly the quota is issued, nobody
//! twice, every 202 one coupon row — with arrivals spread over every bucket,
//! and with every arrival in 2 of the 16 (the others give their units),
//! there across a counters loss that rebuilds all buckets from the database.

use std::collections::{HashMap, HashSet};

use futures::{stream, StreamExt};
use promo_contracts::bucket_of;

use crate::helpers::{
    open_campaign, spawn_app, spawn_app_partitioned, spawn_app_uncoalesced, Answer, Backend,
    TestApp,
};

const QUOTA: i64 = 1000;
const BUCKETS: u32 = 16;

async fn bucketed_campaign(app: &TestApp, id: &str) {
    let mut spec = open_campaign(QUOTA, 1, "QUEUED");
    spec["buckets"] = BUCKETS.into();
    let a = app.put_campaign(id, spec).await;
    assert_eq!(a.status, 201, "{}", a.body);
    assert_eq!(a.body["buckets"], BUCKETS);
}

/// Every user twice, the two racing each other, 256 requests at a time.
async fn storm(app: &TestApp, campaign: &str, users: &[String]) -> Vec<(String, Answer)> {
    let requests = users
        .iter()
        .chain(users)
        .map(|user| async move { (user.clone(), app.issue("v3", campaign, user).await) });
    stream::iter(requests).buffer_unordered(256).collect().await
}

/// The 202s' requests, checked: each user at most once.
fn accepted(answers: &[(String, Answer)]) -> Vec<(String, String)> {
    let mut accepted = Vec::new();
    for (user, a) in answers {
        match a.status {
            202 => accepted.push((
                a.body["requestId"].as_str().unwrap().to_string(),
                user.clone(),
            )),
            409 => assert_eq!(a.body["code"], "already_issued"),
            410 => assert_eq!(a.body["code"], "sold_out"),
            // A counters loss answers 503 until the rebuild is done.
            503 => assert_eq!(a.body["code"], "counters_unavailable", "{}", a.body),
            s => panic!("unexpected {s}: {}", a.body),
        }
    }
    let users: HashSet<&String> = accepted.iter().map(|(_, u)| u).collect();
    assert_eq!(users.len(), accepted.len(), "nobody admitted twice");
    accepted
}

/// Every accepted request decided ISSUED to its user, one row each, and
/// exactly the quota stored.
async fn check_exact(app: &TestApp, campaign: &str, accepted: &[(String, String)]) {
    assert_eq!(accepted.len() as i64, QUOTA, "exactly the quota admitted");
    let ids: Vec<String> = accepted.iter().map(|(r, _)| r.clone()).collect();
    let decided = app.wait_decided(&ids).await;
    let mut answered = HashMap::new();
    for (d, (_, user)) in decided.iter().zip(accepted) {
        assert_eq!(d["status"], "ISSUED", "{d}");
        assert_eq!(d["coupon"]["userId"], user.as_str());
        answered.insert(
            d["coupon"]["couponId"].as_str().unwrap().to_string(),
            user.clone(),
        );
    }
    let stored = app.stored_coupons(campaign).await;
    assert_eq!(stored.len() as i64, QUOTA, "exactly the quota stored");
    let rows: HashMap<String, String> = stored.into_iter().collect();
    assert_eq!(rows, answered, "every 202 is one row of its user");
    let view = app.get_campaign(campaign).await.body;
    assert_eq!(
        (
            view["issued"].as_i64(),
            view["remaining"].as_i64(),
            view["pending"].as_i64()
        ),
        (Some(QUOTA), Some(0), Some(0)),
        "{view}"
    );
}

/// 5,000 users × 2 against quota 1,000 over 16 buckets.
async fn v3_buckets_issue_exactly_the_quota(backend: Backend) {
    let app = spawn_app(backend).await;
    bucketed_campaign(&app, "hot").await;
    let users: Vec<String> = (0..5000).map(|i| format!("user-{i}")).collect();
    let answers = storm(&app, "hot", &users).await;
    check_exact(&app, "hot", &accepted(&answers)).await;
}

/// The same with admission coalescing off (on is the default): each
/// admission its own counters step and send.
async fn v3_buckets_uncoalesced_issue_exactly_the_quota(backend: Backend) {
    let app = spawn_app_uncoalesced(backend).await;
    bucketed_campaign(&app, "one-by-one").await;
    let users: Vec<String> = (0..5000).map(|i| format!("user-{i}")).collect();
    let answers = storm(&app, "one-by-one", &users).await;
    check_exact(&app, "one-by-one", &accepted(&answers)).await;
}

/// Every arrival in buckets 0 and 1 of 16: the other 14 buckets' units
/// move to them. Halfway, the counters are lost; admission answers 503
/// until every bucket is rebuilt from the database behind fences.
async fn v3_buckets_skewed_and_rebuilt(backend: Backend) {
    let app = spawn_app(backend).await;
    bucketed_campaign(&app, "skewed").await;
    let users: Vec<String> = (0..)
        .map(|i| format!("user-{i}"))
        .filter(|u| bucket_of(u, BUCKETS) < 2)
        .take(2500)
        .collect();
    let (first, second) = users.split_at(600);
    let mut answers = storm(&app, "skewed", first).await;
    app.flush_counters().await;
    answers.extend(storm(&app, "skewed", second).await);
    check_exact(&app, "skewed", &accepted(&answers)).await;
}

/// 8 buckets on 8 partitions, persisted by four members of the consumer
/// group at once (two partitions each, each member two partitions at a
/// time): their transactions of the one campaign overlap, and still every
/// 202 is one row and exactly the quota is stored. Kafka only: the
/// embedded queue has one partition.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn four_consumers_share_one_campaigns_partitions_on_tansu() {
    let app = spawn_app_partitioned(Backend::Real, 8, 4).await;
    let mut spec = open_campaign(QUOTA, 1, "QUEUED");
    spec["buckets"] = 8.into();
    assert_eq!(app.put_campaign("shared", spec).await.status, 201);
    let users: Vec<String> = (0..2500).map(|i| format!("user-{i}")).collect();
    let answers = storm(&app, "shared", &users).await;
    check_exact(&app, "shared", &accepted(&answers)).await;
}

promo_platform::on_every_backend!(
    v3_buckets_issue_exactly_the_quota,
    v3_buckets_skewed_and_rebuilt
);
promo_platform::on_both_backends!(v3_buckets_uncoalesced_issue_exactly_the_quota);
