//! All SQL of the point service, written once for both dialects.

use promo_platform::{
    ports::{
        sql::{is_unique_violation, Migrations},
        Dialect, Migration,
    },
    time::{from_ms, now_ms},
};
use sqlx::{any::AnyRow, AnyConnection, AnyPool, Row};

use crate::domain::{Entry, Kind};

pub const MIGRATIONS: Migrations = Migrations {
    mysql: &[
        Migration {
            version: 1,
            name: "init",
            sql: include_str!("../../../migrations/point/mysql/0001_init.sql"),
        },
        Migration {
            version: 2,
            name: "outbox",
            sql: promo_platform::outbox::MYSQL_TABLES,
        },
        Migration {
            version: 3,
            name: "outbox_packed",
            sql: promo_platform::outbox::MYSQL_PACKED,
        },
        Migration {
            version: 4,
            name: "outbox_mark_in_place",
            sql: promo_platform::outbox::MYSQL_MARK_IN_PLACE,
        },
    ],
    sqlite: &[
        Migration {
            version: 1,
            name: "init",
            sql: include_str!("../../../migrations/point/sqlite/0001_init.sql"),
        },
        Migration {
            version: 2,
            name: "outbox",
            sql: promo_platform::outbox::SQLITE_TABLES,
        },
        Migration {
            version: 3,
            name: "outbox_packed",
            sql: promo_platform::outbox::SQLITE_PACKED,
        },
        Migration {
            version: 4,
            name: "outbox_rowid",
            sql: promo_platform::outbox::SQLITE_ROWID,
        },
        Migration {
            version: 5,
            name: "outbox_published_index",
            sql: promo_platform::outbox::SQLITE_PUBLISHED_INDEX,
        },
    ],
};

/// An account's balance and the version its next write must find.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Account {
    pub balance: i64,
    pub version: i64,
}

/// Earned points still held: what is left of one EARN.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lot {
    pub lot_id: String,
    pub remaining: i64,
    pub expires_at: Option<i64>,
}

pub async fn ensure_account(
    tx: &mut AnyConnection,
    dialect: Dialect,
    user: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(&format!(
        "{} INTO accounts (user_id, balance, version, updated_at) VALUES (?, 0, 0, ?)",
        dialect.insert_ignore()
    ))
    .bind(user)
    .bind(now_ms())
    .execute(&mut *tx)
    .await?;
    Ok(())
}

pub async fn read_account(conn: &mut AnyConnection, user: &str) -> Result<Account, sqlx::Error> {
    let row = sqlx::query("SELECT balance, version FROM accounts WHERE user_id = ?")
        .bind(user)
        .fetch_optional(&mut *conn)
        .await?;
    Ok(match row {
        Some(r) => Account {
            balance: r.try_get("balance")?,
            version: r.try_get("version")?,
        },
        None => Account::default(),
    })
}

/// The optimistic write: succeeds only if nobody changed the account since
/// it was read at `expected_version`.
pub async fn update_account(
    tx: &mut AnyConnection,
    user: &str,
    balance: i64,
    expected_version: i64,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE accounts SET balance = ?, version = version + 1, updated_at = ? WHERE user_id = ? AND version = ?",
    )
    .bind(balance)
    .bind(now_ms())
    .bind(user)
    .bind(expected_version)
    .execute(&mut *tx)
    .await?;
    Ok(done.rows_affected() == 1)
}

const ENTRY_COLUMNS: &str =
    "seq, entry_id, user_id, kind, amount, balance_after, reason, order_id, expires_at, refund_of, created_at";

fn entry_from_row(r: &AnyRow) -> Result<Entry, sqlx::Error> {
    let kind: String = r.try_get("kind")?;
    Ok(Entry {
        seq: r.try_get("seq")?,
        entry_id: r.try_get("entry_id")?,
        user_id: r.try_get("user_id")?,
        kind: Kind::parse(&kind)
            .ok_or_else(|| sqlx::Error::Decode(format!("unknown entry kind {kind:?}").into()))?,
        amount: r.try_get("amount")?,
        balance_after: r.try_get("balance_after")?,
        reason: r.try_get("reason")?,
        order_id: r.try_get("order_id")?,
        expires_at: r.try_get::<Option<i64>, _>("expires_at")?.map(from_ms),
        refund_of: r.try_get("refund_of")?,
        created_at: from_ms(r.try_get("created_at")?),
    })
}

/// Appends one ledger entry (its `seq` is assigned by the database) with
/// its event (`dev.promo.points.earned|used|refunded|expired`) in the outbox.
pub async fn append(
    tx: &mut AnyConnection,
    e: &Entry,
    lot_id: Option<&str>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO ledger (entry_id, user_id, kind, amount, balance_after, reason, order_id, \
         expires_at, refund_of, lot_id, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(&e.entry_id)
    .bind(&e.user_id)
    .bind(e.kind.as_str())
    .bind(e.amount)
    .bind(e.balance_after)
    .bind(&e.reason)
    .bind(e.order_id.clone())
    .bind(e.expires_at.map(|t| t.timestamp_millis()))
    .bind(e.refund_of.clone())
    .bind(lot_id.map(str::to_string))
    .bind(e.created_at.timestamp_millis())
    .execute(&mut *tx)
    .await?;
    promo_platform::outbox::record(tx, &[e.event()]).await
}

pub async fn get_entry(
    conn: &mut AnyConnection,
    entry_id: &str,
) -> Result<Option<Entry>, sqlx::Error> {
    sqlx::query(&format!(
        "SELECT {ENTRY_COLUMNS} FROM ledger WHERE entry_id = ?"
    ))
    .bind(entry_id)
    .fetch_optional(&mut *conn)
    .await?
    .map(|r| entry_from_row(&r))
    .transpose()
}

/// Whether a USE has been refunded (`refund_of` is unique: at most once).
pub async fn refunded(conn: &mut AnyConnection, use_entry_id: &str) -> Result<bool, sqlx::Error> {
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM ledger WHERE refund_of = ?")
        .bind(use_entry_id)
        .fetch_one(&mut *conn)
        .await?;
    Ok(n > 0)
}

/// A user's entries, newest first, strictly before `before_seq`.
pub async fn history(
    pool: &AnyPool,
    user: &str,
    before_seq: Option<i64>,
    limit: i64,
) -> Result<Vec<Entry>, sqlx::Error> {
    sqlx::query(&format!(
        "SELECT {ENTRY_COLUMNS} FROM ledger WHERE user_id = ? AND seq < ? ORDER BY seq DESC LIMIT ?"
    ))
    .bind(user)
    .bind(before_seq.unwrap_or(i64::MAX))
    .bind(limit)
    .fetch_all(pool)
    .await?
    .iter()
    .map(entry_from_row)
    .collect()
}

pub async fn insert_lot(
    tx: &mut AnyConnection,
    lot_id: &str,
    user: &str,
    amount: i64,
    expires_at: Option<i64>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO lots (lot_id, user_id, amount, remaining, expires_at) VALUES (?, ?, ?, ?, ?)",
    )
    .bind(lot_id)
    .bind(user)
    .bind(amount)
    .bind(amount)
    .bind(expires_at)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

fn lot_from_row(r: &AnyRow) -> Result<Lot, sqlx::Error> {
    Ok(Lot {
        lot_id: r.try_get("lot_id")?,
        remaining: r.try_get("remaining")?,
        expires_at: r.try_get("expires_at")?,
    })
}

async fn lots_where(
    conn: &mut AnyConnection,
    user: &str,
    now: i64,
    condition: &str,
) -> Result<Vec<Lot>, sqlx::Error> {
    sqlx::query(&format!(
        "SELECT lot_id, remaining, expires_at FROM lots WHERE user_id = ? AND remaining > 0 AND {condition}"
    ))
    .bind(user)
    .bind(now)
    .fetch_all(&mut *conn)
    .await?
    .iter()
    .map(lot_from_row)
    .collect()
}

/// Lots still spendable at `now`, in the order uses consume them: the
/// soonest-expiring first, never-expiring last, older first on ties.
pub async fn spendable_lots(
    conn: &mut AnyConnection,
    user: &str,
    now: i64,
) -> Result<Vec<Lot>, sqlx::Error> {
    let condition = "(expires_at IS NULL OR expires_at > ?) \
        ORDER BY CASE WHEN expires_at IS NULL THEN 1 ELSE 0 END, expires_at, lot_id";
    lots_where(conn, user, now, condition).await
}

/// Lots with points left whose expiry has come.
pub async fn due_lots(
    conn: &mut AnyConnection,
    user: &str,
    now: i64,
) -> Result<Vec<Lot>, sqlx::Error> {
    lots_where(
        conn,
        user,
        now,
        "expires_at <= ? ORDER BY expires_at, lot_id",
    )
    .await
}

/// Adds `delta` (negative to take) to a lot, never below zero or above its amount.
pub async fn move_lot(
    tx: &mut AnyConnection,
    lot_id: &str,
    delta: i64,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE lots SET remaining = remaining + ? WHERE lot_id = ? \
         AND remaining + ? >= 0 AND remaining + ? <= amount",
    )
    .bind(delta)
    .bind(lot_id)
    .bind(delta)
    .bind(delta)
    .execute(&mut *tx)
    .await?;
    Ok(done.rows_affected() == 1)
}

pub async fn record_lot_use(
    tx: &mut AnyConnection,
    use_id: &str,
    lot_id: &str,
    amount: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query("INSERT INTO lot_uses (use_entry_id, lot_id, amount) VALUES (?, ?, ?)")
        .bind(use_id)
        .bind(lot_id)
        .bind(amount)
        .execute(&mut *tx)
        .await?;
    Ok(())
}

pub async fn lot_uses(
    conn: &mut AnyConnection,
    use_id: &str,
) -> Result<Vec<(String, i64)>, sqlx::Error> {
    let rows =
        sqlx::query("SELECT lot_id, amount FROM lot_uses WHERE use_entry_id = ? ORDER BY lot_id")
            .bind(use_id)
            .fetch_all(&mut *conn)
            .await?;
    rows.iter()
        .map(|r| Ok((r.try_get("lot_id")?, r.try_get("amount")?)))
        .collect()
}

/// Spendable lots expiring before `until`: (remaining, expiresAt), soonest first.
pub async fn expiring(
    conn: &mut AnyConnection,
    user: &str,
    now: i64,
    until: i64,
) -> Result<Vec<(i64, i64)>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT remaining, expires_at FROM lots WHERE user_id = ? AND remaining > 0 \
         AND expires_at > ? AND expires_at <= ? ORDER BY expires_at, lot_id",
    )
    .bind(user)
    .bind(now)
    .bind(until)
    .fetch_all(&mut *conn)
    .await?;
    rows.iter()
        .map(|r| Ok((r.try_get("remaining")?, r.try_get("expires_at")?)))
        .collect()
}

/// The next expiry among a user's spendable lots (bounds a cached view's life).
pub async fn next_expiry(
    conn: &mut AnyConnection,
    user: &str,
    now: i64,
) -> Result<Option<i64>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT MIN(expires_at) FROM lots WHERE user_id = ? AND remaining > 0 AND expires_at > ?",
    )
    .bind(user)
    .bind(now)
    .fetch_one(&mut *conn)
    .await
}

/// Whether a user has points whose expiry has come but are not expired yet.
pub async fn has_due(pool: &AnyPool, user: &str, now: i64) -> Result<bool, sqlx::Error> {
    let n: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM lots WHERE user_id = ? AND remaining > 0 AND expires_at <= ?",
    )
    .bind(user)
    .bind(now)
    .fetch_one(pool)
    .await?;
    Ok(n > 0)
}

/// Users with points to expire (the sweep).
pub async fn users_with_due_lots(
    pool: &AnyPool,
    now: i64,
    limit: i64,
) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT DISTINCT user_id FROM lots WHERE remaining > 0 AND expires_at <= ? LIMIT ?",
    )
    .bind(now)
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// Claims an Idempotency-Key for this transaction's answer. False when the
/// key already holds an answer (on MySQL a concurrent claim waits here for
/// the first transaction to end).
pub async fn claim_key(
    tx: &mut AnyConnection,
    user: &str,
    key: &str,
    hash: &str,
) -> Result<bool, sqlx::Error> {
    let inserted = sqlx::query(
        "INSERT INTO idempotency_keys (user_id, idem_key, request_hash, status, body, created_at) \
         VALUES (?, ?, ?, 0, '', ?)",
    )
    .bind(user)
    .bind(key)
    .bind(hash)
    .bind(now_ms())
    .execute(&mut *tx)
    .await;
    match inserted {
        Ok(_) => Ok(true),
        Err(e) if is_unique_violation(&e) => Ok(false),
        Err(e) => Err(e),
    }
}

/// The stored answer of a key: (request hash, HTTP status, body).
pub async fn read_key(
    pool: &AnyPool,
    user: &str,
    key: &str,
) -> Result<Option<(String, i64, String)>, sqlx::Error> {
    let row = sqlx::query(
        "SELECT request_hash, status, body FROM idempotency_keys WHERE user_id = ? AND idem_key = ?",
    )
    .bind(user)
    .bind(key)
    .fetch_optional(pool)
    .await?;
    row.map(|r| {
        Ok((
            r.try_get("request_hash")?,
            r.try_get("status")?,
            r.try_get("body")?,
        ))
    })
    .transpose()
}

pub async fn finish_key(
    tx: &mut AnyConnection,
    user: &str,
    key: &str,
    status: i64,
    body: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE idempotency_keys SET status = ?, body = ? WHERE user_id = ? AND idem_key = ?",
    )
    .bind(status)
    .bind(body)
    .bind(user)
    .bind(key)
    .execute(&mut *tx)
    .await?;
    Ok(())
}
