//! The transactional outbox: every state change a downstream system cares
//! about is written as a row of `outbox` in the same database transaction
//! as the change ([`record`]), and a relay publishes the rows as CloudEvents
//! 1.0 (structured JSON) to the events topic.
//!
//! - **At least once.** The relay sends a batch, waits for the broker's
//!   acknowledgements, and only then marks the rows published. A relay that
//!   dies in between sends the same rows again: the same event ids, which a
//!   consumer deduplicates on.
//! - **One relay at a time per database.** Replicas take a lease in
//!   `outbox_relay` (a conditional update) before relaying, so they do not
//!   publish the same rows side by side. A dead relay's lease runs out and
//!   another replica takes over.
//! - **Order.** Rows go out in the order of `seq`, each keyed by its
//!   subject, so one subject's events stay on one partition in order.
//! - **The feed** ([`Outbox::page`]) lists published events in the order
//!   they were published: by `published_at` (strictly increasing from one
//!   batch to the next) and `seq`, so a reader that pages with the cursor
//!   never misses a row committed late.
//! - Published rows are deleted after the retention; unpublished ones never.

use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::Duration,
};

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::Value;
use sqlx::{AnyConnection, Row};
use tokio_util::sync::CancellationToken;

use crate::{
    metrics::Metrics,
    ports::{queue::Record, Database, Producer, Queue, QueueError},
    time::{from_ms, now_ms, to_ms},
};

/// Default of `--events-topic`.
pub const TOPIC: &str = "promo.events";
/// Partitions the events topic is created with.
pub const PARTITIONS: i32 = 8;
/// Default of `--events-retention-hours`: published rows kept this long.
pub const RETENTION_HOURS: u64 = 7 * 24;
/// The headers of every published event: the CloudEvents Kafka protocol
/// binding's mark of structured mode (the whole event is the JSON value).
pub const CLOUDEVENTS_HEADERS: &[(&str, &str)] = &[(
    "content-type",
    "application/cloudevents+json; charset=UTF-8",
)];
/// Events the embedded queue keeps on the events topic (the newest; the
/// feed reads the outbox, and no other process can read that queue).
pub const EMBEDDED_KEEP: usize = 10_000;
/// Most rows one relay step publishes.
pub const BATCH: usize = 500;
/// How long a relay's lease lasts without renewal.
pub const LEASE: Duration = Duration::from_secs(10);
/// Pause between relay steps that found nothing to publish.
pub const IDLE: Duration = Duration::from_millis(100);

/// The outbox tables (MySQL 8 / MariaDB). `data` is VARCHAR, not TEXT:
/// sqlx reads MySQL TEXT as BLOB. Event data are small JSON documents
/// built from bounded ids and numbers.
pub const MYSQL_TABLES: &str = "\
CREATE TABLE IF NOT EXISTS outbox (
  seq              BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
  event_id         VARCHAR(191) NOT NULL,
  type             VARCHAR(64) NOT NULL,
  subject          VARCHAR(191) NOT NULL,
  time             BIGINT NOT NULL,
  data             VARCHAR(8000) NOT NULL,
  published_at     BIGINT NULL,
  UNIQUE KEY ux_outbox_event (event_id),
  KEY ix_outbox_published (published_at, seq)
) ENGINE=InnoDB;
CREATE TABLE IF NOT EXISTS outbox_relay (
  id               INT NOT NULL PRIMARY KEY,
  owner            VARCHAR(64) NOT NULL,
  lease_until      BIGINT NOT NULL
) ENGINE=InnoDB;
";

/// The outbox tables (SQLite).
pub const SQLITE_TABLES: &str = "\
CREATE TABLE IF NOT EXISTS outbox (
  seq              INTEGER PRIMARY KEY AUTOINCREMENT,
  event_id         TEXT NOT NULL UNIQUE,
  type             TEXT NOT NULL,
  subject          TEXT NOT NULL,
  time             INTEGER NOT NULL,
  data             TEXT NOT NULL,
  published_at     INTEGER NULL
);
CREATE INDEX IF NOT EXISTS ix_outbox_published ON outbox (published_at, seq);
CREATE TABLE IF NOT EXISTS outbox_relay (
  id               INTEGER NOT NULL PRIMARY KEY,
  owner            TEXT NOT NULL,
  lease_until      INTEGER NOT NULL
);
";

/// One state change, as the service records it.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    /// The CloudEvent id: fixed by the change (e.g. `order.held:<orderId>`),
    /// so the same change always carries the same id.
    pub id: String,
    /// `dev.promo.<entity>.<happened>`.
    pub kind: &'static str,
    /// The campaign, sale or user the change belongs to; also the message key.
    pub subject: String,
    pub time: DateTime<Utc>,
    pub data: Value,
}

impl Change {
    /// A change of `kind` to `entity_id` (its id is `<kind without the
    /// dev.promo. prefix>:<entity_id>`), now.
    pub fn new(kind: &'static str, entity_id: &str, subject: &str, data: Value) -> Self {
        let short = kind.strip_prefix("dev.promo.").unwrap_or(kind);
        Change {
            id: format!("{short}:{entity_id}"),
            kind,
            subject: subject.to_string(),
            time: Utc::now(),
            data,
        }
    }
}

/// Whether [`record`] writes anything: `--events off` turns it off for the
/// whole process (on by default).
static RECORDING: AtomicBool = AtomicBool::new(true);

/// Turns recording on or off for this process (`--events`).
pub fn set_recording(on: bool) {
    RECORDING.store(on, Ordering::Relaxed);
}

/// Writes `changes` to the outbox inside the caller's transaction (nothing
/// when recording is off).
pub async fn record(tx: &mut AnyConnection, changes: &[Change]) -> Result<(), sqlx::Error> {
    if !RECORDING.load(Ordering::Relaxed) {
        return Ok(());
    }
    for chunk in changes.chunks(200) {
        let values = vec!["(?, ?, ?, ?, ?)"; chunk.len()].join(", ");
        let sql =
            format!("INSERT INTO outbox (event_id, type, subject, time, data) VALUES {values}");
        let mut q = sqlx::query(&sql);
        for c in chunk {
            q = q
                .bind(c.id.clone())
                .bind(c.kind)
                .bind(c.subject.clone())
                .bind(to_ms(c.time))
                .bind(c.data.to_string());
        }
        q.execute(&mut *tx).await?;
    }
    Ok(())
}

#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    #[error("outbox: {0}")]
    Sql(#[from] sqlx::Error),
    #[error("events topic: {0}")]
    Queue(#[from] QueueError),
    #[error("stored event data is not JSON: {0}")]
    Data(#[from] serde_json::Error),
}

/// Where a reader of the feed stands in one service's outbox: after the
/// row published at `published_at` with `seq`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Position {
    pub published_at: i64,
    pub seq: i64,
}

/// One service's outbox and its relay.
pub struct Outbox {
    db: Database,
    service: &'static str,
    topic: String,
    retention: Duration,
    metrics: Arc<Metrics>,
    /// This process, as the holder of the relay lease.
    owner: String,
    /// Until when this process holds the lease (epoch ms; 0: not held).
    held_until: std::sync::atomic::AtomicI64,
}

/// A stored row.
struct Stored {
    seq: i64,
    published_at: Option<i64>,
    /// The CloudEvent, as JSON text.
    event: String,
    subject: String,
}

impl Outbox {
    /// The outbox of `service` in `db`, publishing to the events topic
    /// and keeping published rows as long as the backends' flags say.
    pub fn from_args(
        db: Database,
        service: &'static str,
        args: &crate::config::BackendArgs,
        metrics: Arc<Metrics>,
    ) -> Arc<Self> {
        Self::new(
            db,
            service,
            &args.events_topic,
            Duration::from_secs(args.events_retention_hours * 3600),
            metrics,
        )
    }

    pub fn new(
        db: Database,
        service: &'static str,
        topic: &str,
        retention: Duration,
        metrics: Arc<Metrics>,
    ) -> Arc<Self> {
        Arc::new(Outbox {
            db,
            service,
            topic: topic.to_string(),
            retention,
            metrics,
            owner: uuid::Uuid::new_v4().simple().to_string(),
            held_until: std::sync::atomic::AtomicI64::new(0),
        })
    }

    pub fn service(&self) -> &'static str {
        self.service
    }

    /// The stored row as a CloudEvent in structured JSON. The text is put
    /// together around the stored `data`, which is already JSON (written by
    /// [`record`] from a value), instead of parsing and printing it again:
    /// the relay does this for every event.
    fn event(&self, row: &sqlx::any::AnyRow) -> Result<Stored, OutboxError> {
        let time: i64 = row.try_get("time")?;
        let data: String = row.try_get("data")?;
        let subject: String = row.try_get("subject")?;
        let text = |v: &str| serde_json::to_string(v);
        let event = format!(
            "{{\"specversion\":\"1.0\",\"id\":{},\"source\":\"/promo/{}\",\"type\":{},\"subject\":{},\
             \"time\":\"{}\",\"datacontenttype\":\"application/json\",\"data\":{data}}}",
            text(&row.try_get::<String, _>("event_id")?)?,
            self.service,
            text(&row.try_get::<String, _>("type")?)?,
            text(&subject)?,
            from_ms(time).to_rfc3339_opts(SecondsFormat::Millis, true),
        );
        Ok(Stored {
            seq: row.try_get("seq")?,
            published_at: row.try_get("published_at")?,
            event,
            subject,
        })
    }

    /// Takes or renews the relay lease; whether this process holds it.
    /// Renewed once less than half of it is left.
    async fn lease(&self) -> Result<bool, OutboxError> {
        use std::sync::atomic::Ordering;
        let pool = self.db.pool();
        let now = now_ms();
        let half = LEASE.as_millis() as i64 / 2;
        if self.held_until.load(Ordering::Relaxed) - now > half {
            return Ok(true);
        }
        sqlx::query(&format!(
            "{} INTO outbox_relay (id, owner, lease_until) VALUES (1, '', 0)",
            self.db.dialect().insert_ignore()
        ))
        .execute(pool)
        .await?;
        let taken = sqlx::query(
            "UPDATE outbox_relay SET owner = ?, lease_until = ? \
             WHERE id = 1 AND (owner = ? OR lease_until < ?)",
        )
        .bind(&self.owner)
        .bind(now + LEASE.as_millis() as i64)
        .bind(&self.owner)
        .bind(now)
        .execute(pool)
        .await?;
        let held = taken.rows_affected() == 1;
        let until = if held {
            now + LEASE.as_millis() as i64
        } else {
            0
        };
        self.held_until.store(until, Ordering::Relaxed);
        Ok(held)
    }

    /// The oldest unpublished rows, at most `limit`.
    async fn unpublished(&self, limit: usize) -> Result<Vec<Stored>, OutboxError> {
        let rows = sqlx::query(&format!(
            "SELECT seq, event_id, type, subject, time, data, published_at FROM outbox \
             WHERE published_at IS NULL ORDER BY seq LIMIT {limit}"
        ))
        .fetch_all(self.db.pool())
        .await?;
        rows.iter().map(|r| self.event(r)).collect()
    }

    /// Sends `rows` as CloudEvents and waits for the broker; the leading
    /// rows it acknowledged, in order (a failure stops there, so a later
    /// row of a subject never goes out before an earlier one).
    async fn publish(
        &self,
        producer: &dyn Producer,
        partitions: i32,
        rows: &[Stored],
    ) -> (usize, Option<QueueError>) {
        let records = rows
            .iter()
            .map(|r| Record {
                partition: promo_contracts::partition_of(&r.subject, 0, partitions.max(1) as u32),
                key: r.subject.clone(),
                payload: r.event.clone().into_bytes(),
                headers: CLOUDEVENTS_HEADERS,
            })
            .collect();
        let answers = producer.send_many(records).await;
        let acked = answers.iter().take_while(|a| a.is_ok()).count();
        (acked, answers.into_iter().find_map(Result::err))
    }

    /// Marks rows published, all with one `published_at` later than any
    /// before; rows another relay marked first keep theirs.
    async fn mark(&self, rows: &[Stored]) -> Result<(), OutboxError> {
        let mut tx = self.db.pool().begin().await?;
        let last: Option<i64> = sqlx::query_scalar("SELECT MAX(published_at) FROM outbox")
            .fetch_one(&mut *tx)
            .await?;
        let at = now_ms().max(last.unwrap_or(0) + 1);
        for chunk in rows.chunks(400) {
            let marks = vec!["?"; chunk.len()].join(", ");
            let sql = format!(
                "UPDATE outbox SET published_at = ? WHERE published_at IS NULL AND seq IN ({marks})"
            );
            let mut q = sqlx::query(&sql).bind(at);
            for r in chunk {
                q = q.bind(r.seq);
            }
            q.execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// One relay step: with the lease, publishes up to [`BATCH`] rows and
    /// marks those the broker acknowledged. Returns how many it published.
    pub async fn relay_once(
        &self,
        producer: &dyn Producer,
        partitions: i32,
    ) -> Result<usize, OutboxError> {
        if !self.lease().await? {
            return Ok(0);
        }
        let rows = self.unpublished(BATCH).await?;
        let (acked, failed) = self.publish(producer, partitions, &rows).await;
        self.mark(&rows[..acked]).await?;
        self.metrics
            .events_published
            .with_label_values(&[self.service])
            .inc_by(acked as u64);
        match failed {
            Some(e) => Err(e.into()),
            None => Ok(acked),
        }
    }

    /// [`Outbox::publish`] without marking: what a relay that dies right
    /// after the broker's acknowledgement leaves behind (tests).
    pub async fn publish_unmarked(
        &self,
        producer: &dyn Producer,
        partitions: i32,
    ) -> Result<usize, OutboxError> {
        let rows = self.unpublished(BATCH).await?;
        match self.publish(producer, partitions, &rows).await {
            (_, Some(e)) => Err(e.into()),
            (acked, None) => Ok(acked),
        }
    }

    /// Deletes published rows older than the retention.
    pub async fn purge(&self) -> Result<u64, OutboxError> {
        let cutoff = now_ms() - self.retention.as_millis() as i64;
        let done =
            sqlx::query("DELETE FROM outbox WHERE published_at IS NOT NULL AND published_at < ?")
                .bind(cutoff)
                .execute(self.db.pool())
                .await?;
        Ok(done.rows_affected())
    }

    /// Sets the backlog and oldest-unpublished gauges.
    pub async fn measure(&self) -> Result<(), OutboxError> {
        let row = sqlx::query(
            "SELECT COUNT(*) AS n, MIN(time) AS oldest FROM outbox WHERE published_at IS NULL",
        )
        .fetch_one(self.db.pool())
        .await?;
        let n: i64 = row.try_get("n")?;
        let oldest: Option<i64> = row.try_get("oldest")?;
        self.metrics
            .outbox_backlog
            .with_label_values(&[self.service])
            .set(n);
        let age = oldest.map_or(0.0, |t| (now_ms() - t).max(0) as f64 / 1000.0);
        self.metrics
            .outbox_oldest
            .with_label_values(&[self.service])
            .set(age);
        Ok(())
    }

    /// Published events after `after`, oldest first, at most `limit`, each
    /// with its position.
    pub async fn page(
        &self,
        after: Position,
        limit: usize,
    ) -> Result<Vec<(Position, Value)>, OutboxError> {
        let rows = sqlx::query(&format!(
            "SELECT seq, event_id, type, subject, time, data, published_at FROM outbox \
             WHERE published_at IS NOT NULL AND (published_at > ? OR (published_at = ? AND seq > ?)) \
             ORDER BY published_at, seq LIMIT {limit}"
        ))
        .bind(after.published_at)
        .bind(after.published_at)
        .bind(after.seq)
        .fetch_all(self.db.pool())
        .await?;
        rows.iter()
            .map(|r| {
                let s = self.event(r)?;
                let at = Position {
                    published_at: s.published_at.unwrap_or_default(),
                    seq: s.seq,
                };
                Ok((at, serde_json::from_str(&s.event)?))
            })
            .collect()
    }

    /// Runs the relay until `shutdown`: creates the topic, relays while
    /// there is something to publish, purges and measures now and then.
    pub fn spawn(self: &Arc<Self>, queue: Arc<dyn Queue>, shutdown: CancellationToken) {
        let outbox = self.clone();
        tokio::spawn(async move {
            let producer = loop {
                let ready = async {
                    queue
                        .ensure_retained_topic(&outbox.topic, PARTITIONS, EMBEDDED_KEEP)
                        .await?;
                    queue.producer(&outbox.topic)
                };
                match ready.await {
                    Ok(p) => break p,
                    Err(e) => {
                        tracing::warn!(error = %e, topic = %outbox.topic, "events topic not ready; retrying");
                        tokio::select! {
                            _ = shutdown.cancelled() => return,
                            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                        }
                    }
                }
            };
            let mut last_chores = tokio::time::Instant::now() - Duration::from_secs(60);
            while !shutdown.is_cancelled() {
                let pause = match outbox.relay_once(&*producer, PARTITIONS).await {
                    Ok(n) if n == BATCH => Duration::ZERO,
                    Ok(_) => IDLE,
                    Err(e) => {
                        tracing::warn!(error = %e, service = outbox.service, "event relay step failed; retrying");
                        Duration::from_secs(1)
                    }
                };
                if last_chores.elapsed() >= Duration::from_secs(5) {
                    last_chores = tokio::time::Instant::now();
                    if let Err(e) = outbox.measure().await {
                        tracing::debug!(error = %e, "outbox gauges not refreshed");
                    }
                    if let Err(e) = outbox.purge().await {
                        tracing::warn!(error = %e, "outbox purge failed");
                    }
                }
                tokio::select! {
                    _ = shutdown.cancelled() => {}
                    _ = tokio::time::sleep(pause) => {}
                }
            }
        });
    }
}
