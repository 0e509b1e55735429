//! The transactional outbox: every state change a downstream system cares
//! about is written to `outbox` in the same database transaction as the
//! change ([`record`]), and a relay publishes it as a CloudEvent 1.0
//! (structured JSON) to the events topic, one message per event.
//!
//! - **Packed rows.** One row holds the events one [`record`] call makes for
//!   one subject, up to [`ROW_EVENTS`] of them: a V2 batch or a consumer
//!   batch of 200 coupons is one row, not 200. The row's `events` holds each
//!   event's JSON text on its own line, complete but for `specversion` and
//!   `source`, which the relay puts in front. Rows written before the
//!   packing migration ([`MYSQL_PACKED`]) hold one event in
//!   `event_id`/`type`/`data` instead; they go out the same way.
//! - **At least once.** The relay sends a batch, waits for the broker's
//!   acknowledgements, and only then marks the rows published (a row only
//!   once every event in it was acknowledged). A relay that dies in between
//!   sends the same rows again: the same event ids, which a consumer
//!   deduplicates on.
//! - **One relay at a time per database.** Replicas take a lease in
//!   `outbox_relay` (a conditional update) before relaying, so they do not
//!   publish the same rows side by side. A dead relay's lease runs out and
//!   another replica takes over.
//! - **Order.** Rows go out in the order of `seq`, a row's events in the
//!   order they were recorded, each keyed by its subject, so one subject's
//!   events stay on one partition in order.
//! - **The feed** ([`Outbox::page`]) lists published events in the order
//!   they were published: by `published_at` (strictly increasing from one
//!   batch to the next), `seq` and the event's place in its row, so a
//!   reader that pages with the cursor never misses a row committed late.
//! - Published rows are deleted after the retention; unpublished ones
//!   never, and on SQLite neither the newest row (see `SQLITE_PUBLISHED_INDEX`).

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
    ports::{queue::Record, sql::Dialect, Database, Producer, Queue, QueueError},
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
/// Most events one outbox row holds.
pub const ROW_EVENTS: usize = 200;
/// Events one relay step publishes: whole rows, up to this many (a single
/// row is taken whatever its size).
pub const BATCH: usize = 2_000;
/// Most rows one relay step looks at.
const STEP_ROWS: usize = 500;
/// How long a relay's lease lasts without renewal.
pub const LEASE: Duration = Duration::from_secs(10);
/// Pause between relay steps that found nothing to publish.
pub const IDLE: Duration = Duration::from_millis(100);

/// The outbox tables as migration 5 made them (MySQL 8 / MariaDB): one
/// event per row. `data` is VARCHAR, not TEXT: sqlx reads MySQL TEXT as
/// BLOB. The packing migration [`MYSQL_PACKED`] follows.
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

/// The outbox tables as migration 5 made them (SQLite); [`SQLITE_PACKED`]
/// follows.
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

/// The packing migration (MySQL 8 / MariaDB): packed rows. A row holds `n` events
/// in `events` (their JSON texts, one per line; stored as bytes, which sqlx
/// reads back alike on both dialects); the one-event columns stay for rows
/// written before. Event ids are unique by how they are made (from the
/// changed entity's id), so the UNIQUE index goes; the relay's index covers
/// `n`, so it sizes a step without reading the events.
pub const MYSQL_PACKED: &str = "\
ALTER TABLE outbox
  DROP INDEX ux_outbox_event,
  DROP INDEX ix_outbox_published,
  MODIFY event_id VARCHAR(191) NULL,
  MODIFY type VARCHAR(64) NULL,
  MODIFY data VARCHAR(8000) NULL,
  ADD COLUMN n BIGINT NOT NULL DEFAULT 1,
  ADD COLUMN events MEDIUMBLOB NULL,
  ADD KEY ix_outbox_relay (published_at, seq, n);
";

/// The packing migration (SQLite): as [`MYSQL_PACKED`]. SQLite cannot drop a UNIQUE
/// column constraint, so the table is copied into the new shape (the
/// migration runs in one transaction on SQLite).
pub const SQLITE_PACKED: &str = "\
CREATE TABLE outbox_packed (
  seq              INTEGER PRIMARY KEY AUTOINCREMENT,
  subject          TEXT NOT NULL,
  time             INTEGER NOT NULL,
  n                INTEGER NOT NULL DEFAULT 1,
  events           BLOB NULL,
  event_id         TEXT NULL,
  type             TEXT NULL,
  data             TEXT NULL,
  published_at     INTEGER NULL
);
INSERT INTO outbox_packed (seq, subject, time, event_id, type, data, published_at)
  SELECT seq, subject, time, event_id, type, data, published_at FROM outbox;
DROP TABLE outbox;
ALTER TABLE outbox_packed RENAME TO outbox;
CREATE INDEX ix_outbox_relay ON outbox (published_at, seq, n);
";

/// The outbox's rowid migration (SQLite only; it follows [`SQLITE_PACKED`]):
/// `seq` becomes a plain `INTEGER PRIMARY KEY`, without `AUTOINCREMENT`,
/// which made every insert also update `sqlite_sequence`: one more page
/// written with each change's commit (measured: about a quarter of what the
/// outbox insert costs a V1 transaction on the embedded database). New rows
/// still take a `seq` above every row in the table, so rows go out in
/// commit order as before (SQLite runs one write transaction at a time).
/// What `AUTOINCREMENT` added, never handing out the number of a deleted
/// newest row, does not matter here: only published rows are purged, and
/// the feed orders by `published_at` before `seq`, so a row that took such a
/// number is published, and listed, after every row that had it before.
/// (Since [`SQLITE_PUBLISHED_INDEX`] the purge keeps the newest row, so a
/// number is no longer handed out twice.)
pub const SQLITE_ROWID: &str = "\
CREATE TABLE outbox_rowid (
  seq              INTEGER PRIMARY KEY,
  subject          TEXT NOT NULL,
  time             INTEGER NOT NULL,
  n                INTEGER NOT NULL DEFAULT 1,
  events           BLOB NULL,
  event_id         TEXT NULL,
  type             TEXT NULL,
  data             TEXT NULL,
  published_at     INTEGER NULL
);
INSERT INTO outbox_rowid (seq, subject, time, n, events, event_id, type, data, published_at)
  SELECT seq, subject, time, n, events, event_id, type, data, published_at FROM outbox;
DROP TABLE outbox;
ALTER TABLE outbox_rowid RENAME TO outbox;
CREATE INDEX ix_outbox_relay ON outbox (published_at, seq, n);
";

/// The mark-in-place migration (MySQL 8 / MariaDB; it follows
/// [`MYSQL_PACKED`]): the outbox table's rows in InnoDB's REDUNDANT format,
/// which keeps a NULL `published_at` as eight reserved bytes. In the
/// COMPACT and DYNAMIC formats a NULL column takes no room, so the relay's
/// mark (NULL → the time) made every record longer, which InnoDB cannot do
/// in place. Measured here: 2,807 bytes of redo log per row marked before,
/// 144 after, and MariaDB's CPU for the mark 23 → 11.5 µs per row
/// (bench/outbox.md). The statements and what NULL means stay as they
/// were, so replicas of an earlier release can run beside this one. SQLite
/// rewrites a changed row whatever its size: nothing to do there.
pub const MYSQL_MARK_IN_PLACE: &str = "\
ALTER TABLE outbox ROW_FORMAT=REDUNDANT;
";

/// The published-only index migration (SQLite; it follows [`SQLITE_ROWID`]):
/// the relay's index keeps only published rows (a partial index), so a
/// change's commit no longer writes an index page for its unpublished row:
/// each commit writes every page it changed whole into the WAL, and that
/// page was a fifth of what the outbox added to an embedded V1 transaction
/// (`bench/sqlite_outbox_replay.py`: 45.4 → 41.0 KB written and 75.7 →
/// 70.2 µs per transaction, medians of 3). The feed, the purge and the
/// mark's `MAX(published_at)` read published rows and still use it; the
/// relay finds unpublished rows by `seq` from where it last marked
/// ([`Outbox`]), which holds on SQLite because its one writer connection
/// commits rows in `seq` order and the purge never deletes the newest row
/// (so `seq` never starts again lower).
pub const SQLITE_PUBLISHED_INDEX: &str = "\
DROP INDEX IF EXISTS ix_outbox_relay;
CREATE INDEX IF NOT EXISTS ix_outbox_published ON outbox (published_at, seq, n)
  WHERE published_at IS NOT NULL;
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

impl Change {
    /// The event as stored: its CloudEvent JSON text without `specversion`
    /// and `source` (the relay puts them in front; see [`Outbox`]).
    fn stored(&self, out: &mut String) {
        write_event(
            out,
            &self.id,
            self.kind,
            &self.subject,
            self.time,
            &self.data,
        );
    }
}

/// Appends one event's JSON text, all but `specversion` and `source`.
fn write_event(
    out: &mut String,
    id: &str,
    kind: &str,
    subject: &str,
    time: DateTime<Utc>,
    data: &dyn std::fmt::Display,
) {
    use std::fmt::Write;
    let text = |v: &str| serde_json::to_string(v).expect("a string serializes");
    let _ = write!(
        out,
        "{{\"id\":{},\"type\":{},\"subject\":{},\"time\":\"{}\",\
         \"datacontenttype\":\"application/json\",\"data\":{data}}}",
        text(id),
        text(kind),
        text(subject),
        time.to_rfc3339_opts(SecondsFormat::Millis, true),
    );
}

/// A query on the `Any` driver, as [`record_then`] hands it to its caller
/// to bind.
pub type AnyQuery<'q> = sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>;

/// The outbox rows `changes` make: (subject, earliest time, events, their
/// texts), one per subject and [`ROW_EVENTS`] events, in first-seen order.
fn packed(changes: &[Change]) -> Vec<(&str, i64, usize, String)> {
    let mut rows: Vec<(&str, i64, usize, String)> = Vec::new();
    let mut open: std::collections::HashMap<&str, usize> = Default::default();
    for c in changes {
        let at = match open.get(c.subject.as_str()) {
            Some(&i) if rows[i].2 < ROW_EVENTS => i,
            _ => {
                rows.push((&c.subject, to_ms(c.time), 0, String::new()));
                open.insert(&c.subject, rows.len() - 1);
                rows.len() - 1
            }
        };
        let row = &mut rows[at];
        if row.2 > 0 {
            row.3.push('\n');
        }
        c.stored(&mut row.3);
        row.1 = row.1.min(to_ms(c.time));
        row.2 += 1;
    }
    rows
}

/// At most this many rows go in one outbox `INSERT`.
const INSERT_ROWS: usize = 100;

/// The `INSERT` of `rows` outbox rows.
fn insert_sql(rows: usize) -> String {
    let values = vec!["(?, ?, ?, ?)"; rows].join(", ");
    format!("INSERT INTO outbox (subject, time, n, events) VALUES {values}")
}

/// Binds the rows of [`insert_sql`].
fn bind_rows<'q>(mut q: AnyQuery<'q>, rows: &[(&str, i64, usize, String)]) -> AnyQuery<'q> {
    for (subject, time, n, events) in rows {
        q = q
            .bind(subject.to_string())
            .bind(*time)
            .bind(*n as i64)
            .bind(events.as_bytes().to_vec());
    }
    q
}

/// Writes `changes` to the outbox inside the caller's transaction (nothing
/// when recording is off): one packed row per subject and [`ROW_EVENTS`]
/// events, each subject's events in the order given.
pub async fn record(tx: &mut AnyConnection, changes: &[Change]) -> Result<(), sqlx::Error> {
    insert_rows(tx, &packed_if_recording(changes)).await
}

/// The rows [`packed`] makes of `changes`; none when recording is off.
fn packed_if_recording(changes: &[Change]) -> Vec<(&str, i64, usize, String)> {
    if RECORDING.load(Ordering::Relaxed) {
        packed(changes)
    } else {
        Vec::new()
    }
}

/// Inserts outbox rows, [`INSERT_ROWS`] per statement.
async fn insert_rows(
    tx: &mut AnyConnection,
    rows: &[(&str, i64, usize, String)],
) -> Result<(), sqlx::Error> {
    for chunk in rows.chunks(INSERT_ROWS) {
        bind_rows(sqlx::query(&insert_sql(chunk.len())), chunk)
            .execute(&mut *tx)
            .await?;
    }
    Ok(())
}

/// [`record`], then the statement `then` with the arguments `bind` gives
/// it, in the caller's transaction.
///
/// On SQLite, when the outbox rows fit one `INSERT`, both go to the
/// database in one call (sqlx-sqlite binds the arguments to the statements
/// in order): embedded, every call passes through the one writer
/// connection's worker thread while the transaction holds it, so a change
/// with its event costs one pass, as it would without events. Elsewhere the
/// two statements run one after the other. `then` must be a single
/// statement with positional `?` arguments.
pub async fn record_then<F>(
    tx: &mut AnyConnection,
    changes: &[Change],
    then: &str,
    bind: F,
) -> Result<(), sqlx::Error>
where
    F: for<'q> FnOnce(AnyQuery<'q>) -> AnyQuery<'q>,
{
    let rows = packed_if_recording(changes);
    let sqlite = tx.backend_name().eq_ignore_ascii_case("sqlite");
    if sqlite && !rows.is_empty() && rows.len() <= INSERT_ROWS {
        let sql = format!("{}; {then}", insert_sql(rows.len()));
        bind(bind_rows(sqlx::query(&sql), &rows))
            .execute(&mut *tx)
            .await?;
        return Ok(());
    }
    insert_rows(tx, &rows).await?;
    bind(sqlx::query(then)).execute(&mut *tx).await?;
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
    #[error("outbox row {0} is malformed")]
    Malformed(i64),
}

/// Where a reader of the feed stands in one service's outbox: after event
/// `index` (from 0) of the row published at `published_at` with `seq`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Position {
    pub published_at: i64,
    pub seq: i64,
    pub index: i64,
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
    /// SQLite: every row up to this `seq` is published (-1: not read yet).
    /// Its one writer connection commits rows in `seq` order and the relay
    /// marks them in that order, so the unpublished rows are the ones above
    /// it. Unused on MySQL, where a lower `seq` can commit later
    /// ([`Outbox::relayed`] answers 0 there and this stays -1).
    relayed: std::sync::atomic::AtomicI64,
}

/// A stored row, its events as CloudEvent texts.
struct Stored {
    seq: i64,
    published_at: Option<i64>,
    subject: String,
    events: Vec<String>,
}

/// The columns [`Outbox::stored`] reads.
const COLUMNS: &str = "seq, subject, time, events, event_id, type, data, published_at";

/// How many of `rows` (seq, events) a step takes: whole rows, at least one,
/// until `want` events (after skipping `skip` of the first row's) are in.
fn rows_for(rows: &[(i64, i64)], skip: i64, want: usize) -> usize {
    let mut events = -skip;
    let mut take = 0;
    for (_, n) in rows {
        if take > 0 && events >= want as i64 {
            break;
        }
        take += 1;
        events += n;
    }
    take
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
            relayed: std::sync::atomic::AtomicI64::new(-1),
        })
    }

    pub fn service(&self) -> &'static str {
        self.service
    }

    /// A stored row with its events as CloudEvents in structured JSON:
    /// `specversion` and `source` (this service) in front of each stored
    /// text, which is already JSON (written by [`record`]), instead of
    /// parsing and printing it again: the relay does this for every event.
    fn stored(&self, row: &sqlx::any::AnyRow) -> Result<Stored, OutboxError> {
        let seq: i64 = row.try_get("seq")?;
        let subject: String = row.try_get("subject")?;
        let head = format!(
            "{{\"specversion\":\"1.0\",\"source\":\"/promo/{}\",",
            self.service
        );
        let complete = |body: &str| {
            let body = body.strip_prefix('{').ok_or(OutboxError::Malformed(seq))?;
            Ok::<_, OutboxError>(format!("{head}{body}"))
        };
        let events = match row.try_get::<Option<Vec<u8>>, _>("events")? {
            Some(packed) => {
                let text = String::from_utf8(packed).map_err(|_| OutboxError::Malformed(seq))?;
                text.split('\n').map(complete).collect::<Result<_, _>>()?
            }
            None => {
                // A row written before the packing migration: one event in columns.
                let data: String = row.try_get("data")?;
                let mut body = String::new();
                write_event(
                    &mut body,
                    &row.try_get::<String, _>("event_id")?,
                    &row.try_get::<String, _>("type")?,
                    &subject,
                    from_ms(row.try_get("time")?),
                    &data,
                );
                vec![complete(&body)?]
            }
        };
        Ok(Stored {
            seq,
            published_at: row.try_get("published_at")?,
            subject,
            events,
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

    /// The `seq` every unpublished row is above: on SQLite the last row
    /// marked (read once from the published rows' index, then kept as this
    /// relay marks); 0 on MySQL.
    async fn relayed(&self) -> Result<i64, OutboxError> {
        if self.db.dialect() != Dialect::Sqlite {
            return Ok(0);
        }
        let known = self.relayed.load(Ordering::Relaxed);
        if known >= 0 {
            return Ok(known);
        }
        let last: Option<i64> = sqlx::query_scalar(
            "SELECT seq FROM outbox WHERE published_at IS NOT NULL \
             ORDER BY published_at DESC, seq DESC LIMIT 1",
        )
        .fetch_optional(self.db.reader())
        .await?;
        let last = last.unwrap_or(0);
        self.relayed.fetch_max(last, Ordering::Relaxed);
        Ok(last)
    }

    /// The oldest unpublished rows: whole rows up to [`BATCH`] events, at
    /// most [`STEP_ROWS`]. The rows' sizes come first (on MySQL from the
    /// relay's index), so only the rows taken are read.
    async fn unpublished(&self) -> Result<Vec<Stored>, OutboxError> {
        let sizes: Vec<(i64, i64)> = sqlx::query_as(&format!(
            "SELECT seq, n FROM outbox WHERE published_at IS NULL AND seq > ? \
             ORDER BY seq LIMIT {STEP_ROWS}"
        ))
        .bind(self.relayed().await?)
        .fetch_all(self.db.reader())
        .await?;
        let take = rows_for(&sizes, 0, BATCH);
        if take == 0 {
            return Ok(Vec::new());
        }
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM outbox WHERE published_at IS NULL AND seq >= ? AND seq <= ? \
             ORDER BY seq LIMIT {take}"
        ))
        .bind(sizes[0].0)
        .bind(sizes[take - 1].0)
        .fetch_all(self.db.reader())
        .await?;
        rows.iter().map(|r| self.stored(r)).collect()
    }

    /// Sends the rows' events as CloudEvents and waits for the broker; the
    /// leading rows whose every event it acknowledged (a failure stops
    /// there, so a later event of a subject never counts as out before an
    /// earlier one), and how many events those hold.
    async fn publish(
        &self,
        producer: &dyn Producer,
        partitions: i32,
        rows: Vec<Stored>,
    ) -> (Vec<i64>, usize, Option<QueueError>) {
        let sizes: Vec<(i64, usize)> = rows.iter().map(|r| (r.seq, r.events.len())).collect();
        let records = rows
            .into_iter()
            .flat_map(|r| {
                let partition =
                    promo_contracts::partition_of(&r.subject, 0, partitions.max(1) as u32);
                let subject = r.subject;
                r.events.into_iter().map(move |e| Record {
                    partition,
                    key: subject.clone(),
                    payload: e.into_bytes(),
                    headers: CLOUDEVENTS_HEADERS,
                })
            })
            .collect();
        let answers = producer.send_many(records).await;
        let mut acked = answers.iter().take_while(|a| a.is_ok()).count();
        let mut done = Vec::new();
        let mut events = 0;
        for (seq, n) in sizes {
            if acked < n {
                break;
            }
            acked -= n;
            events += n;
            done.push(seq);
        }
        (done, events, answers.into_iter().find_map(Result::err))
    }

    /// Marks rows published, all with one `published_at` later than any
    /// before; rows another relay marked first keep theirs.
    async fn mark(&self, seqs: &[i64]) -> Result<(), OutboxError> {
        if seqs.is_empty() {
            return Ok(());
        }
        let mut tx = self.db.pool().begin().await?;
        let last: Option<i64> = sqlx::query_scalar(
            "SELECT MAX(published_at) FROM outbox WHERE published_at IS NOT NULL",
        )
        .fetch_one(&mut *tx)
        .await?;
        let at = now_ms().max(last.unwrap_or(0) + 1);
        for chunk in seqs.chunks(400) {
            let marks = vec!["?"; chunk.len()].join(", ");
            let sql = format!(
                "UPDATE outbox SET published_at = ? WHERE published_at IS NULL AND seq IN ({marks})"
            );
            let mut q = sqlx::query(&sql).bind(at);
            for seq in chunk {
                q = q.bind(*seq);
            }
            q.execute(&mut *tx).await?;
        }
        tx.commit().await?;
        if let Some(last) = seqs.last() {
            // Kept only once known: a relay that has not read it yet reads
            // it from the table.
            let _ = self
                .relayed
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |r| {
                    (r >= 0).then_some(r.max(*last))
                });
        }
        Ok(())
    }

    /// One relay step: with the lease, publishes the events of the oldest
    /// unpublished rows (up to [`BATCH`]) and marks the rows the broker
    /// acknowledged. Returns how many events it published and whether it
    /// took a full step (so more may be waiting).
    async fn step(
        &self,
        producer: &dyn Producer,
        partitions: i32,
    ) -> Result<(usize, bool), OutboxError> {
        if !self.lease().await? {
            return Ok((0, false));
        }
        let rows = self.unpublished().await?;
        let (count, total) = (
            rows.len(),
            rows.iter().map(|r| r.events.len()).sum::<usize>(),
        );
        let full = count == STEP_ROWS || total >= BATCH;
        let (done, events, failed) = self.publish(producer, partitions, rows).await;
        self.mark(&done).await?;
        self.metrics
            .events_published
            .with_label_values(&[self.service])
            .inc_by(events as u64);
        match failed {
            Some(e) => Err(e.into()),
            None => Ok((events, full)),
        }
    }

    /// One relay step ([`Outbox::step`]); how many events it published.
    pub async fn relay_once(
        &self,
        producer: &dyn Producer,
        partitions: i32,
    ) -> Result<usize, OutboxError> {
        Ok(self.step(producer, partitions).await?.0)
    }

    /// [`Outbox::publish`] without marking: what a relay that dies right
    /// after the broker's acknowledgement leaves behind (tests). Returns
    /// how many events the broker acknowledged.
    pub async fn publish_unmarked(
        &self,
        producer: &dyn Producer,
        partitions: i32,
    ) -> Result<usize, OutboxError> {
        let rows = self.unpublished().await?;
        match self.publish(producer, partitions, rows).await {
            (_, _, Some(e)) => Err(e.into()),
            (_, events, None) => Ok(events),
        }
    }

    /// Deletes published rows older than the retention (on SQLite all but
    /// the newest row); how many rows.
    pub async fn purge(&self) -> Result<u64, OutboxError> {
        let cutoff = now_ms() - self.retention.as_millis() as i64;
        // SQLite gives a new row the highest `seq` plus one: keeping the
        // newest row keeps `seq` from starting again below rows the relay
        // already marked (see `relayed`). MySQL cannot name the table it
        // deletes from in a subquery, and needs no such row.
        let newest = match self.db.dialect() {
            Dialect::Sqlite => " AND seq < (SELECT MAX(seq) FROM outbox)",
            Dialect::MySql => "",
        };
        let done = sqlx::query(&format!(
            "DELETE FROM outbox WHERE published_at IS NOT NULL AND published_at < ?{newest}"
        ))
        .bind(cutoff)
        .execute(self.db.pool())
        .await?;
        Ok(done.rows_affected())
    }

    /// Sets the backlog (events) and oldest-unpublished gauges.
    pub async fn measure(&self) -> Result<(), OutboxError> {
        // CAST: SUM is DECIMAL on MySQL; SIGNED gives SQLite's NUMERIC.
        let row = sqlx::query(
            "SELECT CAST(COALESCE(SUM(n), 0) AS SIGNED) AS n, MIN(time) AS oldest \
             FROM outbox WHERE published_at IS NULL AND seq > ?",
        )
        .bind(self.relayed().await?)
        .fetch_one(self.db.reader())
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
    /// with its position. The rows' sizes are read first, so only the rows
    /// the page needs are read.
    pub async fn page(
        &self,
        after: Position,
        limit: usize,
    ) -> Result<Vec<(Position, Value)>, OutboxError> {
        const AFTER: &str = "WHERE published_at IS NOT NULL \
             AND (published_at > ? OR (published_at = ? AND seq >= ?)) ORDER BY published_at, seq";
        let sizes: Vec<(i64, i64)> = sqlx::query_as(&format!(
            "SELECT seq, n FROM outbox {AFTER} LIMIT {}",
            limit + 1
        ))
        .bind(after.published_at)
        .bind(after.published_at)
        .bind(after.seq)
        .fetch_all(self.db.reader())
        .await?;
        // The first row may be the one the reader stopped in.
        let skip = match sizes.first() {
            Some((seq, _)) if *seq == after.seq => after.index + 1,
            _ => 0,
        };
        let take = rows_for(&sizes, skip, limit);
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM outbox {AFTER} LIMIT {take}"
        ))
        .bind(after.published_at)
        .bind(after.published_at)
        .bind(after.seq)
        .fetch_all(self.db.reader())
        .await?;
        let mut out = Vec::with_capacity(limit);
        for r in &rows {
            let s = self.stored(r)?;
            for (i, e) in s.events.iter().enumerate() {
                let at = Position {
                    published_at: s.published_at.unwrap_or_default(),
                    seq: s.seq,
                    index: i as i64,
                };
                if at > after && out.len() < limit {
                    out.push((at, serde_json::from_str(e)?));
                }
            }
        }
        Ok(out)
    }

    /// Every event id in the outbox, and whether its row is marked
    /// published (tests and fault experiments).
    pub async fn ids(&self) -> Result<Vec<(String, bool)>, OutboxError> {
        let rows = sqlx::query(&format!("SELECT {COLUMNS} FROM outbox ORDER BY seq"))
            .fetch_all(self.db.pool())
            .await?;
        let mut out = Vec::new();
        for r in &rows {
            let s = self.stored(r)?;
            for e in &s.events {
                let event: Value = serde_json::from_str(e)?;
                let id = event["id"].as_str().unwrap_or_default().to_string();
                out.push((id, s.published_at.is_some()));
            }
        }
        Ok(out)
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
                let pause = match outbox.step(&*producer, PARTITIONS).await {
                    Ok((_, true)) => Duration::ZERO,
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
