//! The transactional outbox on SQLite + the embedded queue and on MariaDB +
//! a Kafka-protocol broker: only committed changes go out, as CloudEvents,
//! in order per subject; a relay that dies between the broker's
//! acknowledgement and its mark sends the same ids again; the feed pages
//! by publication; one relay per database at a time; the retention purges.

use std::{collections::HashMap, sync::Arc, time::Duration};

use promo_platform::{
    metrics::Metrics,
    outbox::{self, Change, Outbox, Position},
    ports::{sql::Migrations, Database, Dialect, LocalQueue, Migration, Producer, Queue},
    testing::{self, TempDir},
};
use serde_json::{json, Value};

/// The outbox's migrations as a service lists them: one event per row
/// (version 1 here), then packed rows (on MySQL then the REDUNDANT row
/// format; on SQLite a plain rowid, then a relay index of published rows
/// only).
const BEFORE_PACKING: Migrations = Migrations {
    mysql: &[Migration {
        version: 1,
        name: "outbox",
        sql: outbox::MYSQL_TABLES,
    }],
    sqlite: &[Migration {
        version: 1,
        name: "outbox",
        sql: outbox::SQLITE_TABLES,
    }],
};
const MIGRATIONS: Migrations = Migrations {
    mysql: &[
        BEFORE_PACKING.mysql[0],
        Migration {
            version: 2,
            name: "outbox_packed",
            sql: outbox::MYSQL_PACKED,
        },
        Migration {
            version: 3,
            name: "outbox_mark_in_place",
            sql: outbox::MYSQL_MARK_IN_PLACE,
        },
    ],
    sqlite: &[
        BEFORE_PACKING.sqlite[0],
        Migration {
            version: 2,
            name: "outbox_packed",
            sql: outbox::SQLITE_PACKED,
        },
        Migration {
            version: 3,
            name: "outbox_rowid",
            sql: outbox::SQLITE_ROWID,
        },
        Migration {
            version: 4,
            name: "outbox_published_index",
            sql: outbox::SQLITE_PUBLISHED_INDEX,
        },
    ],
};

async fn migrated(db: &Database) {
    db.migrate(&MIGRATIONS).await.unwrap();
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

/// A fresh events topic (4 partitions), its producer, and the outbox of a
/// service "test" that keeps published rows an hour.
async fn new_topic(
    db: &Database,
    queue: &dyn Queue,
    metrics: Arc<Metrics>,
) -> (String, Arc<dyn Producer>, Arc<Outbox>) {
    let topic = testing::unique("events");
    queue.ensure_topic(&topic, 4).await.unwrap();
    let producer = queue.producer(&topic).unwrap();
    let outbox = Outbox::new(
        db.clone(),
        "test",
        &topic,
        Duration::from_secs(3600),
        metrics,
    );
    (topic, producer, outbox)
}

/// Runs `test` on a fresh SQLite database and a durable embedded queue.
async fn on_sqlite<Fut: std::future::Future<Output = ()>>(
    name: &str,
    test: impl FnOnce(Database, Arc<dyn Queue>) -> Fut,
) {
    let (db, _dir) = testing::fresh_sqlite(name).await;
    let qdir = TempDir::new();
    test(db, Arc::new(LocalQueue::durable(qdir.0.join("q"), 100_000))).await;
}

/// Runs `test` on a fresh MariaDB database and tansu.
async fn on_mariadb<Fut: std::future::Future<Output = ()>>(
    name: &str,
    test: impl FnOnce(Database, Arc<dyn Queue>) -> Fut,
) {
    test(testing::fresh_mysql(name).await, Arc::new(testing::kafka())).await;
}

async fn suite(db: Database, queue: Arc<dyn Queue>) {
    migrated(&db).await;
    let metrics = Metrics::new();
    let (topic, producer, ob) = new_topic(&db, &*queue, metrics.clone()).await;
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
    on_sqlite("outbox", suite).await;
}

/// SQLite's relay looks for unpublished rows above the last one it marked,
/// and its index holds published rows only. A purge that emptied the table
/// would let the next change take a `seq` below that mark and never go out:
/// the purge keeps the newest row, and the next change goes out.
#[tokio::test]
async fn changes_after_a_purge_of_everything_published_go_out_on_sqlite() {
    on_sqlite("outbox_purged_all", |db, queue| async move {
        migrated(&db).await;
        let metrics = Metrics::new();
        let (topic, producer, ob) = new_topic(&db, &*queue, metrics.clone()).await;
        let subject = testing::unique("sale");
        let change = |i: usize| {
            Change::new(
                "dev.promo.order.held",
                &format!("{subject}-{i}"),
                &subject,
                json!({"n": i}),
            )
        };
        for i in 0..3 {
            let mut tx = db.pool().begin().await.unwrap();
            outbox::record(&mut tx, &[change(i)]).await.unwrap();
            tx.commit().await.unwrap();
        }
        assert_eq!(ob.relay_once(&*producer, 4).await.unwrap(), 3);
        let purger = Outbox::new(db.clone(), "test", &topic, Duration::ZERO, metrics.clone());
        tokio::time::sleep(Duration::from_millis(5)).await;
        assert_eq!(purger.purge().await.unwrap(), 2, "the newest row stays");
        for i in 3..5 {
            let mut tx = db.pool().begin().await.unwrap();
            outbox::record(&mut tx, &[change(i)]).await.unwrap();
            tx.commit().await.unwrap();
        }
        purger.measure().await.unwrap();
        assert_eq!(metrics.outbox_backlog.with_label_values(&["test"]).get(), 2);
        assert_eq!(ob.relay_once(&*producer, 4).await.unwrap(), 2);
        ob.measure().await.unwrap();
        assert_eq!(metrics.outbox_backlog.with_label_values(&["test"]).get(), 0);
        let events = read(&*queue, &topic, &[&subject], 5).await;
        let ns: Vec<i64> = events
            .iter()
            .map(|e| e["data"]["n"].as_i64().unwrap())
            .collect();
        assert_eq!(ns, [0, 1, 2, 3, 4]);
        let index: String = sqlx::query_scalar(
            "SELECT sql FROM sqlite_master WHERE type = 'index' AND tbl_name = 'outbox'",
        )
        .fetch_one(db.pool())
        .await
        .unwrap();
        assert!(index.contains("WHERE published_at IS NOT NULL"), "{index}");
    })
    .await;
}

#[tokio::test]
async fn mariadb_outbox_on_tansu() {
    on_mariadb("outbox", suite).await;
}

/// One change of many events: 450 for one subject and 3 for another in a
/// single `record` are packed into rows of at most `ROW_EVENTS`; each goes
/// out once per relay, in order per subject, and the feed pages through
/// them across row boundaries.
async fn packed(db: Database, queue: Arc<dyn Queue>) {
    migrated(&db).await;
    let (topic, producer, ob) = new_topic(&db, &*queue, Metrics::new()).await;
    let (a, b) = (testing::unique("camp_a"), testing::unique("camp_b"));
    let mut changes = Vec::new();
    for i in 0..450 {
        changes.push(Change::new(
            "dev.promo.coupon.issued",
            &format!("{a}-{i}"),
            &a,
            json!({ "n": i }),
        ));
        if i % 150 == 0 {
            changes.push(Change::new(
                "dev.promo.coupon.issued",
                &format!("{b}-{i}"),
                &b,
                json!({ "n": i }),
            ));
        }
    }
    let mut tx = db.pool().begin().await.unwrap();
    outbox::record(&mut tx, &changes).await.unwrap();
    tx.commit().await.unwrap();
    let rows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM outbox")
        .fetch_one(db.pool())
        .await
        .unwrap();
    assert_eq!(rows, 4, "a: 200 + 200 + 50, b: 3");

    assert_eq!(ob.relay_once(&*producer, 4).await.unwrap(), 453);
    assert_eq!(ob.relay_once(&*producer, 4).await.unwrap(), 0);
    let sent = read(&*queue, &topic, &[&a, &b], 453).await;
    let ids = |events: &[Value], subject: &str| -> Vec<String> {
        events
            .iter()
            .filter(|e| e["subject"] == subject)
            .map(|e| e["id"].as_str().unwrap().to_string())
            .collect()
    };
    let want = |subject: &str| -> Vec<String> {
        changes
            .iter()
            .filter(|c| c.subject == subject)
            .map(|c| c.id.clone())
            .collect()
    };
    assert_eq!(ids(&sent, &a), want(&a), "a's events once each, in order");
    assert_eq!(ids(&sent, &b), want(&b));
    assert!(sent.iter().all(|e| e["source"] == "/promo/test"));

    let mut at = Position::default();
    let mut paged = Vec::new();
    loop {
        let page = ob.page(at, 7).await.unwrap();
        if page.is_empty() {
            break;
        }
        assert!(page.len() == 7 || paged.len() + page.len() == 453);
        at = page.last().unwrap().0;
        paged.extend(page.into_iter().map(|(_, e)| e));
    }
    assert_eq!(ids(&paged, &a), want(&a), "the feed: every event once");
    assert_eq!(ids(&paged, &b), want(&b));
    assert_eq!(ob.ids().await.unwrap().len(), 453);
}

#[tokio::test]
async fn packed_rows_on_sqlite_and_the_embedded_queue() {
    on_sqlite("outbox_packed", packed).await;
}

#[tokio::test]
async fn mariadb_packed_rows_on_tansu() {
    on_mariadb("outbox_packed", packed).await;
}

/// `record_then` writes the events and runs the caller's statement with its
/// own arguments (on SQLite in one call, whose arguments bind in order);
/// when that statement fails, the transaction rolls back with its events.
/// More outbox rows than one insert takes go the long way, alike.
async fn record_then(db: Database, _queue: Arc<dyn Queue>) {
    migrated(&db).await;
    sqlx::query("CREATE TABLE things (id VARCHAR(64) NOT NULL PRIMARY KEY, v BIGINT NOT NULL)")
        .execute(db.pool())
        .await
        .unwrap();
    let change = |i: usize| Change::new("dev.promo.thing.made", &i.to_string(), "s", json!(i));
    let insert = "INSERT INTO things (id, v) VALUES (?, ?), (?, ?)";
    let things = || async {
        sqlx::query_as::<_, (String, i64)>("SELECT id, v FROM things ORDER BY id")
            .fetch_all(db.pool())
            .await
            .unwrap()
    };
    let ids = || async {
        let mut ids: Vec<String> = outbox_ids(&db).await;
        ids.sort();
        ids
    };

    let mut tx = db.pool().begin().await.unwrap();
    outbox::record_then(&mut tx, &[change(1)], insert, |q| {
        q.bind("x").bind(1i64).bind("y").bind(2i64)
    })
    .await
    .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(things().await, [("x".into(), 1), ("y".into(), 2)]);
    assert_eq!(ids().await, ["thing.made:1"]);

    let mut tx = db.pool().begin().await.unwrap();
    let failed = outbox::record_then(&mut tx, &[change(2)], insert, |q| {
        q.bind("z").bind(3i64).bind("x").bind(4i64)
    })
    .await;
    assert!(failed.is_err(), "x exists: {failed:?}");
    drop(tx);
    assert_eq!(things().await.len(), 2, "nothing of the failed statement");
    assert_eq!(ids().await, ["thing.made:1"], "and not its event");

    // 150 subjects: 150 rows, more than one outbox insert takes.
    let many: Vec<Change> = (0..150)
        .map(|i| {
            Change::new(
                "dev.promo.thing.made",
                &format!("m{i}"),
                &format!("s{i}"),
                json!(i),
            )
        })
        .collect();
    let mut tx = db.pool().begin().await.unwrap();
    outbox::record_then(&mut tx, &many, insert, |q| {
        q.bind("p").bind(5i64).bind("q").bind(6i64)
    })
    .await
    .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(things().await.len(), 4);
    assert_eq!(ids().await.len(), 151);
}

/// Every event id in the outbox, published or not.
async fn outbox_ids(db: &Database) -> Vec<String> {
    let ob = Outbox::new(
        db.clone(),
        "test",
        "unused",
        Duration::from_secs(3600),
        Metrics::new(),
    );
    ob.ids()
        .await
        .unwrap()
        .into_iter()
        .map(|(id, _)| id)
        .collect()
}

#[tokio::test]
async fn record_then_on_sqlite() {
    on_sqlite("outbox_then", record_then).await;
}

#[tokio::test]
async fn record_then_on_mariadb() {
    on_mariadb("outbox_then", record_then).await;
}

/// Rows written one event per row, before the packing migration, are
/// relayed and paged after it like the rest, unpublished and published.
async fn upgraded(db: Database, queue: Arc<dyn Queue>) {
    db.migrate(&BEFORE_PACKING).await.unwrap();
    let subject = testing::unique("sale");
    for (i, published_at) in [(0, Some(1_i64)), (1, None)] {
        sqlx::query(
            "INSERT INTO outbox (event_id, type, subject, time, data, published_at) \
             VALUES (?, 'dev.promo.order.held', ?, ?, ?, ?)",
        )
        .bind(format!("order.held:old-{i}"))
        .bind(&subject)
        .bind(1_700_000_000_000_i64 + i)
        .bind(json!({ "n": i }).to_string())
        .bind(published_at)
        .execute(db.pool())
        .await
        .unwrap();
    }
    let sqlite = db.dialect() == Dialect::Sqlite;
    let later = if sqlite {
        MIGRATIONS.sqlite.len()
    } else {
        MIGRATIONS.mysql.len()
    } - 1;
    assert_eq!(db.migrate(&MIGRATIONS).await.unwrap(), later);
    let mut tx = db.pool().begin().await.unwrap();
    let new = Change::new("dev.promo.order.held", "new", &subject, json!({ "n": 2 }));
    outbox::record(&mut tx, &[new]).await.unwrap();
    tx.commit().await.unwrap();
    let seqs: Vec<i64> = sqlx::query_scalar("SELECT seq FROM outbox ORDER BY seq")
        .fetch_all(db.pool())
        .await
        .unwrap();
    assert_eq!(
        seqs,
        [1, 2, 3],
        "the rows keep their seq; a new one follows"
    );
    if sqlite {
        let table: String = sqlx::query_scalar(
            "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'outbox'",
        )
        .fetch_one(db.pool())
        .await
        .unwrap();
        assert!(!table.contains("AUTOINCREMENT"), "{table}");
    } else {
        let format: String = sqlx::query_scalar(
            "SELECT ROW_FORMAT FROM information_schema.TABLES \
             WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'outbox'",
        )
        .fetch_one(db.pool())
        .await
        .unwrap();
        assert_eq!(format, "Redundant", "the mark fills a NULL in place");
    }

    let (topic, producer, ob) = new_topic(&db, &*queue, Metrics::new()).await;
    assert_eq!(ob.relay_once(&*producer, 4).await.unwrap(), 2);
    let sent = read(&*queue, &topic, &[&subject], 2).await;
    assert_eq!(sent[0]["id"], "order.held:old-1");
    assert_eq!(sent[0]["time"], "2023-11-14T22:13:20.001Z");
    assert_eq!(sent[0]["data"], json!({ "n": 1 }));
    assert_eq!(sent[0]["source"], "/promo/test");
    assert_eq!(sent[1]["id"], "order.held:new");
    let page = ob.page(Position::default(), 10).await.unwrap();
    let ids: Vec<_> = page.iter().map(|(_, e)| e["id"].clone()).collect();
    assert_eq!(
        ids,
        ["order.held:old-0", "order.held:old-1", "order.held:new"]
    );
}

#[tokio::test]
async fn rows_from_before_packing_go_out_on_sqlite() {
    on_sqlite("outbox_upgrade", upgraded).await;
}

#[tokio::test]
async fn rows_from_before_packing_go_out_on_mariadb() {
    on_mariadb("outbox_upgrade", upgraded).await;
}

/// A copy migration that fails part-way (here: after it dropped the old
/// table) leaves the embedded database as it was, since SQLite runs each
/// migration and its record in one transaction; the next start applies it.
#[tokio::test]
async fn a_failed_sqlite_copy_migration_changes_nothing() {
    let (db, _dir) = testing::fresh_sqlite("outbox_failed_migration").await;
    db.migrate(&BEFORE_PACKING).await.unwrap();
    sqlx::query(
        "INSERT INTO outbox (event_id, type, subject, time, data) \
         VALUES ('order.held:o', 'dev.promo.order.held', 's', 1, '{}')",
    )
    .execute(db.pool())
    .await
    .unwrap();
    let broken: &'static str = Box::leak(
        format!(
            "{}SELECT nothing FROM no_such_table;\n",
            outbox::SQLITE_PACKED
        )
        .into(),
    );
    let failing = Migrations {
        mysql: &[],
        sqlite: Box::leak(Box::new([
            BEFORE_PACKING.sqlite[0],
            Migration {
                version: 2,
                name: "outbox_packed",
                sql: broken,
            },
        ])),
    };
    assert!(db.migrate(&failing).await.is_err());
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name LIKE 'outbox%' ORDER BY name",
    )
    .fetch_all(db.pool())
    .await
    .unwrap();
    assert_eq!(tables, ["outbox", "outbox_relay"], "no half-copied table");
    let columns: Vec<String> = sqlx::query_scalar("SELECT name FROM pragma_table_info('outbox')")
        .fetch_all(db.pool())
        .await
        .unwrap();
    assert!(
        !columns.contains(&"events".to_string()),
        "the old shape: {columns:?}"
    );
    let versions: Vec<i64> = sqlx::query_scalar("SELECT version FROM schema_migrations")
        .fetch_all(db.pool())
        .await
        .unwrap();
    assert_eq!(versions, [1]);
    let old: Vec<String> = sqlx::query_scalar("SELECT event_id FROM outbox")
        .fetch_all(db.pool())
        .await
        .unwrap();
    assert_eq!(old, ["order.held:o"], "the old row, in the old table");

    assert_eq!(
        db.migrate(&MIGRATIONS).await.unwrap(),
        MIGRATIONS.sqlite.len() - 1
    );
    assert_eq!(outbox_ids(&db).await, ["order.held:o"]);
}
