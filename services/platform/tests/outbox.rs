//! The transactional outbox on SQLite + the embedded queue and on MariaDB +
//! a Kafka-protocol broker: only committed changes go out, as CloudEvents,
//! in order per subject; a relay that dies between the broker's
//! acknowledgement and its mark sends the same ids again; the feed pages
//! by publication; one relay per database at a time; the retention purges.

use std::{collections::HashMap, sync::Arc, time::Duration};

use promo_platform::{
    metrics::Metrics,
    outbox::{self, Change, Outbox, Position},
    ports::{Database, LocalQueue, Queue},
    testing::{self, TempDir},
};
use serde_json::{json, Value};

async fn migrated(db: &Database) {
    let sql = match db.dialect() {
        promo_platform::ports::Dialect::MySql => outbox::MYSQL_TABLES,
        promo_platform::ports::Dialect::Sqlite => outbox::SQLITE_TABLES,
    };
    for statement in sql.split(";\n").map(str::trim).filter(|s| !s.is_empty()) {
        sqlx::query(statement).execute(db.pool()).await.unwrap();
    }
}

/// Reads every event of `subjects` from the topic until `want` arrived.
async fn read(queue: &dyn Queue, topic: &str, subjects: &[&str], want: usize) -> Vec<Value> {
    let mut consumer = queue
        .consumer(topic, &testing::unique("outbox_reader"))
        .await
        .unwrap();
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while out.len() < want {
        assert!(
            tokio::time::Instant::now() < deadline,
            "got {} of {want}",
            out.len()
        );
        for m in consumer
            .poll(500, Duration::from_millis(500))
            .await
            .unwrap()
        {
            let e: Value = serde_json::from_slice(&m.payload).unwrap();
            if subjects.contains(&e["subject"].as_str().unwrap_or_default()) {
                assert_eq!(
                    m.key,
                    e["subject"].as_str().unwrap().as_bytes(),
                    "keyed by subject"
                );
                out.push(e);
            }
        }
    }
    out
}

async fn suite(db: Database, queue: Arc<dyn Queue>) {
    migrated(&db).await;
    let topic = testing::unique("events");
    queue.ensure_topic(&topic, 4).await.unwrap();
    let producer = queue.producer(&topic).unwrap();
    let metrics = Metrics::new();
    let ob = Outbox::new(
        db.clone(),
        "test",
        &topic,
        Duration::from_secs(3600),
        metrics.clone(),
    );
    let (a, b) = (testing::unique("sale_a"), testing::unique("sale_b"));

    // Two subjects, ten changes each, committed; one transaction rolled back.
    for i in 0..10 {
        let mut tx = db.pool().begin().await.unwrap();
        let changes = [
            Change::new(
                "dev.promo.order.held",
                &format!("{a}-{i}"),
                &a,
                json!({"n": i}),
            ),
            Change::new(
                "dev.promo.order.held",
                &format!("{b}-{i}"),
                &b,
                json!({"n": i}),
            ),
        ];
        outbox::record(&mut tx, &changes).await.unwrap();
        tx.commit().await.unwrap();
    }
    let mut tx = db.pool().begin().await.unwrap();
    let ghost = Change::new("dev.promo.order.held", "ghost", &a, json!({}));
    outbox::record(&mut tx, &[ghost]).await.unwrap();
    tx.rollback().await.unwrap();

    // A relay that dies after the broker acknowledged 20, before marking.
    assert_eq!(ob.publish_unmarked(&*producer, 4).await.unwrap(), 20);
    // Its successor (another process) sends the same 20 again and marks
    // them; while it holds the lease, no other relay publishes.
    let second = Outbox::new(
        db.clone(),
        "test",
        &topic,
        Duration::from_secs(3600),
        metrics.clone(),
    );
    assert_eq!(second.relay_once(&*producer, 4).await.unwrap(), 20);
    let mut tx = db.pool().begin().await.unwrap();
    let more = Change::new("dev.promo.order.held", "while-leased", &b, json!({"n": 99}));
    outbox::record(&mut tx, &[more]).await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(ob.relay_once(&*producer, 4).await.unwrap(), 0, "lease held");
    assert_eq!(second.relay_once(&*producer, 4).await.unwrap(), 1);
    assert_eq!(
        second.relay_once(&*producer, 4).await.unwrap(),
        0,
        "nothing left"
    );
    let ob = second;

    let events = read(&*queue, &topic, &[&a, &b], 41).await;
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut last: HashMap<String, i64> = HashMap::new();
    for e in &events {
        assert_eq!(e["specversion"], "1.0");
        assert_eq!(e["source"], "/promo/test");
        assert_eq!(e["type"], "dev.promo.order.held");
        assert_eq!(e["datacontenttype"], "application/json");
        assert!(e["time"].as_str().unwrap().ends_with('Z'), "{e}");
        assert_ne!(e["id"], "order.held:ghost", "a rolled-back change went out");
        *seen
            .entry(e["id"].as_str().unwrap().to_string())
            .or_default() += 1;
        // Per subject, n never goes down within one delivery round.
        let subject = e["subject"].as_str().unwrap().to_string();
        let n = e["data"]["n"].as_i64().unwrap();
        let before = last.insert(subject.clone(), n).unwrap_or(-1);
        assert!(n > before || n == 0, "{subject}: {n} after {before}");
    }
    assert_eq!(seen.remove("order.held:while-leased"), Some(1));
    assert_eq!(seen.len(), 20, "twenty changes");
    assert!(
        seen.values().all(|n| *n == 2),
        "each sent twice, same id: {seen:?}"
    );

    // The feed: everything published, in order, paged.
    let mut at = Position::default();
    let mut paged = Vec::new();
    loop {
        let page = ob.page(at, 7).await.unwrap();
        if page.is_empty() {
            break;
        }
        at = page.last().unwrap().0;
        paged.extend(page.into_iter().map(|(_, e)| e));
    }
    assert_eq!(paged.len(), 21);
    let ids: Vec<&str> = paged.iter().map(|e| e["id"].as_str().unwrap()).collect();
    assert_eq!(ids[0], format!("order.held:{a}-0"));

    // Later changes page after the earlier ones.
    let mut tx = db.pool().begin().await.unwrap();
    let late = Change::new("dev.promo.order.expired", &format!("{a}-0"), &a, json!({}));
    outbox::record(&mut tx, &[late]).await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(ob.relay_once(&*producer, 4).await.unwrap(), 1);
    let next = ob.page(at, 7).await.unwrap();
    assert_eq!(next.len(), 1);
    assert_eq!(next[0].1["type"], "dev.promo.order.expired");

    ob.measure().await.unwrap();
    assert_eq!(metrics.outbox_backlog.with_label_values(&["test"]).get(), 0);
    assert_eq!(
        metrics.events_published.with_label_values(&["test"]).get(),
        22
    );

    // A zero retention purges every published row; unpublished ones stay.
    let mut tx = db.pool().begin().await.unwrap();
    let unsent = Change::new("dev.promo.order.held", "unsent", &b, json!({}));
    outbox::record(&mut tx, &[unsent]).await.unwrap();
    tx.commit().await.unwrap();
    let purger = Outbox::new(db.clone(), "test", &topic, Duration::ZERO, metrics.clone());
    tokio::time::sleep(Duration::from_millis(5)).await;
    assert_eq!(purger.purge().await.unwrap(), 22);
    purger.measure().await.unwrap();
    assert_eq!(metrics.outbox_backlog.with_label_values(&["test"]).get(), 1);
}

#[tokio::test]
async fn outbox_on_sqlite_and_the_embedded_queue() {
    let (db, _dir) = testing::fresh_sqlite("outbox").await;
    let qdir = TempDir::new();
    suite(db, Arc::new(LocalQueue::durable(qdir.0.join("q"), 100_000))).await;
}

#[tokio::test]
async fn mariadb_outbox_on_tansu() {
    suite(
        testing::fresh_mysql("outbox").await,
        Arc::new(testing::kafka()),
    )
    .await;
}
