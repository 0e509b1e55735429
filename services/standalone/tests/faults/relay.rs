//! The outbox relay killed between publishing and marking: `coupon-service
//! serve` (MariaDB + Redis + tansu, a database and events topic of its own)
//! issues coupons at full speed while its relay publishes their events;
//! it is killed (kill -9) mid-storm, up to five times, until a kill lands
//! while events are on the topic but not yet marked published in the
//! database. A killed relay's lease would keep its successor waiting up to
//! 10 s; the experiment ends the lease in the database instead of waiting. After the restarts: every event in the outbox reached the
//! topic, the ones in flight at a kill were sent again under the same ids
//! with the same contents, nothing else is on the topic, and there is
//! exactly one event per coupon issued. Its row in the fault table: acked =
//! events in the outbox, lost = events missing from the topic, persisted =
//! coupons issued, admits = the restart, decided = from the storm's end
//! until every event was published.

use std::{
    collections::{HashMap, HashSet},
    sync::atomic::{AtomicUsize, Ordering},
    time::{Duration, Instant},
};

use futures::{stream, StreamExt};
use promo_platform::{
    ports::{Database, KafkaQueue, Queue},
    testing::{self, TempDir},
};
use serde_json::{json, Value};

use crate::harness::{self, Kind, Proc, Row};

const QUOTA: usize = 6000;
const CONCURRENCY: usize = 32;
/// Acknowledged issues between one start of the server and its kill.
const KILL_AFTER_ACKS: usize = 700;
const ROUNDS: usize = 5;

struct Setup {
    dir: TempDir,
    database_prefix: String,
    redis_prefix: String,
    topic: String,
    port: u16,
}

impl Setup {
    fn serve(&self) -> Proc {
        let args: Vec<String> = [
            "serve",
            "--listen",
            &format!("127.0.0.1:{}", self.port),
            "--mysql-url",
            &testing::mysql_url(),
            "--redis-url",
            &testing::redis_url(),
            "--kafka-brokers",
            &testing::kafka_brokers(),
            "--database-prefix",
            &self.database_prefix,
            "--redis-prefix",
            &self.redis_prefix,
            "--events-topic",
            &self.topic,
            "--coupon-topic",
            &format!("{}.admissions", self.topic),
            "--coupon-consumer-group",
            &format!("{}.group", self.topic),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        Proc::start(
            &crate::real::binary(Kind::Coupon),
            &args,
            &[],
            self.port,
            &self.dir.0.join("serve.log"),
        )
    }
}

/// Every message on `topic` now: event id → payloads, read by a consumer
/// group of its own from the start until every id of `want` was seen and
/// nothing new came for 2 s (a message the group hands out twice, after a
/// rebalance, counts once by its partition and offset). Nothing is being
/// produced while it reads. The count from the partitions' watermarks is
/// not used: tansu's came out below the messages it delivers.
async fn topic_contents(
    queue: &KafkaQueue,
    topic: &str,
    want: &HashSet<String>,
) -> HashMap<String, Vec<Vec<u8>>> {
    let group = testing::unique("relay_reader");
    let mut consumer = queue.consumer(topic, &group).await.expect("consumer");
    let mut out: HashMap<String, Vec<Vec<u8>>> = HashMap::new();
    let mut read = HashSet::new();
    let started = Instant::now();
    let mut last_new = started;
    loop {
        let seen_all = want.iter().all(|id| out.contains_key(id));
        if seen_all && last_new.elapsed() >= Duration::from_secs(2) {
            return out;
        }
        if started.elapsed() >= Duration::from_secs(60) {
            return out; // the caller names what is missing
        }
        for m in consumer
            .poll(1000, Duration::from_millis(200))
            .await
            .expect("poll")
        {
            if !read.insert((m.partition, m.offset)) {
                continue;
            }
            last_new = Instant::now();
            let event: Value = serde_json::from_slice(&m.payload).expect("JSON event");
            let id = event["id"].as_str().expect("an id").to_string();
            out.entry(id).or_default().push(m.payload);
        }
    }
}

/// The outbox's event ids: all of them, and those marked published.
async fn outbox_ids(db: &Database) -> (HashSet<String>, HashSet<String>) {
    let outbox = promo_platform::outbox::Outbox::new(
        db.clone(),
        "coupon",
        "unused",
        Duration::from_secs(3600),
        promo_platform::metrics::Metrics::new(),
    );
    let rows = outbox.ids().await.expect("outbox");
    let all = rows.iter().map(|(id, _)| id.clone()).collect();
    let marked = rows
        .into_iter()
        .filter_map(|(id, published)| published.then_some(id))
        .collect();
    (all, marked)
}

async fn issue(client: &reqwest::Client, base: &str, campaign: &str, user: usize) -> bool {
    let r = client
        .post(format!("{base}/campaigns/{campaign}/issue"))
        .json(&json!({ "userId": format!("u{user}") }))
        .send()
        .await;
    matches!(r, Ok(r) if r.status() == 201)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "fault suite: scripts/faults.sh"]
async fn real_outbox_relay_kill9() {
    let s = Setup {
        dir: TempDir::new(),
        database_prefix: format!("{}_", testing::unique("relay")),
        redis_prefix: format!("{}:", testing::unique("relay")),
        topic: testing::unique("relay_events"),
        port: harness::free_port(),
    };
    let client = harness::client();
    let queue = KafkaQueue::new(&testing::kafka_brokers()).expect("kafka client");
    let mut server = s.serve();
    server.ready(&client, Duration::from_secs(60)).await;
    let db_url = promo_platform::ports::sql::mysql_database_url(
        &testing::mysql_url(),
        &format!("{}promo_coupon", s.database_prefix),
    )
    .unwrap();
    let db = Database::connect(&db_url, 2)
        .await
        .expect("the coupon database");
    let now = chrono::Utc::now();
    let campaign = "relay";
    let created = client
        .put(format!("{}/admin/campaigns/{campaign}", server.base))
        .json(&json!({
            "quota": QUOTA, "perUserLimit": 1, "strategy": "DATABASE",
            "startsAt": (now - chrono::Duration::hours(1)).to_rfc3339(),
            "endsAt": (now + chrono::Duration::days(1)).to_rfc3339(),
            "discount": {"kind": "FIXED", "value": 1000},
        }))
        .send()
        .await
        .expect("campaign");
    assert_eq!(created.status(), 201);

    println!("real outbox relay kill -9 between publish and mark");
    let mut next_user = 0;
    let mut in_flight: HashSet<String> = HashSet::new();
    let mut rounds = 0;
    let mut ready_after = Duration::ZERO;
    while rounds < ROUNDS && in_flight.is_empty() {
        rounds += 1;
        let acks = AtomicUsize::new(0);
        let base = server.base.clone();
        let users = next_user..next_user + QUOTA;
        let storm = stream::iter(users)
            .map(|u| {
                let (client, base, acks) = (&client, &base, &acks);
                async move {
                    if issue(client, base, campaign, u).await {
                        acks.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
            .buffer_unordered(CONCURRENCY);
        let kill = async {
            while acks.load(Ordering::Relaxed) < KILL_AFTER_ACKS {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        };
        // The storm's requests still open are dropped with it.
        tokio::select! {
            _ = storm.collect::<Vec<()>>() => panic!("the storm ended before the kill"),
            _ = kill => server.kill9(),
        }
        next_user += QUOTA;
        let (_, marked) = outbox_ids(&db).await;
        let on_topic = topic_contents(&queue, &s.topic, &HashSet::new()).await;
        let unmarked: HashSet<String> = on_topic
            .keys()
            .filter(|id| !marked.contains(*id))
            .cloned()
            .collect();
        println!(
            "  kill {rounds} after {} acks: {} events on the topic, {} of them not marked published",
            acks.load(Ordering::Relaxed),
            on_topic.len(),
            unmarked.len()
        );
        in_flight.extend(unmarked);
        sqlx::query("UPDATE outbox_relay SET lease_until = 0")
            .execute(db.pool())
            .await
            .expect("the lease ends");
        let restarted = Instant::now();
        server = s.serve();
        server.ready(&client, Duration::from_secs(60)).await;
        ready_after = restarted.elapsed();
    }
    assert!(
        !in_flight.is_empty(),
        "no kill in {ROUNDS} landed between a publish and its mark"
    );

    // The rest of the quota, then wait for the relay to publish everything.
    let base = server.base.clone();
    stream::iter(next_user..next_user + QUOTA)
        .map(|u| issue(&client, &base, campaign, u))
        .buffer_unordered(CONCURRENCY)
        .collect::<Vec<bool>>()
        .await;
    let stormed = Instant::now();
    let deadline = stormed + Duration::from_secs(60);
    let all = loop {
        let (all, marked) = outbox_ids(&db).await;
        if all.len() == marked.len() {
            break all;
        }
        assert!(Instant::now() < deadline, "the relay left rows unpublished");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let published_after = stormed.elapsed();
    let started = Instant::now();
    let on_topic = topic_contents(&queue, &s.topic, &all).await;
    let ids: HashSet<String> = on_topic.keys().cloned().collect();
    let missing: Vec<&String> = all.difference(&ids).collect();
    let extra: Vec<&String> = ids.difference(&all).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "topic and outbox differ: {} missing from the topic (e.g. {:?}), {} not in the outbox (e.g. {:?})",
        missing.len(),
        &missing[..missing.len().min(3)],
        extra.len(),
        &extra[..extra.len().min(3)]
    );
    for (id, copies) in &on_topic {
        assert!(
            copies.iter().all(|c| c == &copies[0]),
            "{id} was sent with different contents"
        );
    }
    let resent: Vec<&String> = in_flight
        .iter()
        .filter(|id| on_topic[*id].len() < 2)
        .collect();
    assert!(
        resent.is_empty(),
        "{} events in flight at a kill were not sent again: {:?}",
        resent.len(),
        &resent[..resent.len().min(3)]
    );
    let coupons: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM coupons")
        .fetch_one(db.pool())
        .await
        .unwrap();
    let issued_events = all
        .iter()
        .filter(|id| id.starts_with("coupon.issued:"))
        .count();
    assert_eq!(issued_events as i64, coupons, "one event per coupon");
    assert_eq!(
        coupons, QUOTA as i64,
        "demand above the quota issues it exactly"
    );
    assert!(all.contains(&format!("campaign.sold_out:{campaign}:{QUOTA}")));
    let copies: usize = on_topic.values().map(Vec::len).sum();
    println!(
        "  {} events in the outbox, all on the topic ({copies} messages: {} sent twice); \
         {} in flight at a kill, every one sent again with the same id; read in {:.1}s",
        all.len(),
        copies - all.len(),
        in_flight.len(),
        started.elapsed().as_secs_f64()
    );
    Row::header();
    Row {
        scenario: format!(
            "real outbox relay kill -9: {} events resent",
            in_flight.len()
        ),
        acknowledged: all.len(),
        lost: missing.len(),
        persisted: coupons,
        limit: QUOTA as i64,
        over_limit: 0,
        admits_again_after: ready_after,
        all_decided_after: published_after,
    }
    .print();
}
