//! SQL store port: MySQL/MariaDB in production, SQLite embedded.
//!
//! Both run behind sqlx's `Any` driver, so a service writes its queries once
//! (`?` placeholders, BIGINT epoch-millisecond times, no driver-only types) and
//! asks [`Dialect`] for the few clauses that differ. Each service keeps one
//! migration folder per dialect under `migrations/<service>/<dialect>/`.

use std::{str::FromStr, time::Duration};

use sqlx::{
    any::{AnyConnectOptions, AnyPoolOptions},
    AnyPool, ConnectOptions, Connection, Executor,
};
use url::Url;

#[derive(Debug, thiserror::Error)]
pub enum SqlError {
    #[error("invalid database URL {url:?}: {reason}")]
    Url { url: String, reason: String },
    #[error("cannot connect to {url}: {source}")]
    Connect {
        url: String,
        #[source]
        source: sqlx::Error,
    },
    #[error("migration {version} ({name}) failed: {source}")]
    Migration {
        version: i64,
        name: &'static str,
        #[source]
        source: sqlx::Error,
    },
    #[error(transparent)]
    Query(#[from] sqlx::Error),
}

impl SqlError {
    /// True when the database refused a row because a UNIQUE/PRIMARY KEY already holds it.
    pub fn is_unique_violation(&self) -> bool {
        matches!(self, SqlError::Query(e) if is_unique_violation(e))
    }

    /// The `reason` label of a consumer batch this error failed.
    pub fn persist_reason(&self) -> &'static str {
        if self.is_lock_conflict() {
            "lock_conflict"
        } else {
            "database"
        }
    }
}

/// Errors after which a whole transaction may simply run again: it was
/// rolled back because of contention, not because of what it asked.
pub trait LockConflict {
    fn is_lock_conflict(&self) -> bool;
}

impl LockConflict for SqlError {
    fn is_lock_conflict(&self) -> bool {
        matches!(self, SqlError::Query(e) if is_lock_conflict(e))
    }
}

/// MySQL chose the transaction as a deadlock victim (1213) or it waited too
/// long for a lock (1205); SQLite found the database busy. All roll back
/// completely.
pub fn is_lock_conflict(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(d) => {
            let m = d.message();
            m.contains("Deadlock found")
                || m.contains("Lock wait timeout")
                || m.contains("database is locked")
        }
        _ => false,
    }
}

/// Runs a transaction again, at most `attempts` times in all, while it fails
/// with a lock conflict; each retry waits a random, growing pause so that
/// the transactions that collided do not collide again in lockstep.
pub async fn with_conflict_retry<T, E, F, Fut>(attempts: u32, mut f: F) -> Result<T, E>
where
    E: LockConflict,
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
{
    let mut attempt = 1;
    loop {
        match f().await {
            Err(e) if attempt < attempts && e.is_lock_conflict() => {
                let cap_ms = 2u64 << attempt.min(6);
                let pause = rand::random_range(1..=cap_ms);
                tracing::debug!(
                    attempt,
                    pause_ms = pause,
                    "transaction hit a lock conflict; retrying"
                );
                tokio::time::sleep(std::time::Duration::from_millis(pause)).await;
                attempt += 1;
            }
            other => return other,
        }
    }
}

/// True when `e` is a UNIQUE or PRIMARY KEY violation, on either dialect.
pub fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.is_unique_violation())
}

/// The two SQL dialects the services run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    MySql,
    Sqlite,
}

impl Dialect {
    /// Row lock for `SELECT … FOR UPDATE`. SQLite has no row locks; its
    /// single writer connection (see [`Database::connect`]) serialises
    /// transactions instead, which gives the same guarantee.
    pub fn for_update(self) -> &'static str {
        match self {
            Dialect::MySql => " FOR UPDATE",
            Dialect::Sqlite => "",
        }
    }

    /// [`Dialect::for_update`] that skips the rows other transactions have
    /// locked instead of waiting for them (MySQL 8, MariaDB 10.6+).
    pub fn for_update_skip_locked(self) -> &'static str {
        match self {
            Dialect::MySql => " FOR UPDATE SKIP LOCKED",
            Dialect::Sqlite => "",
        }
    }

    /// `INSERT` that skips rows whose key already exists.
    pub fn insert_ignore(self) -> &'static str {
        match self {
            Dialect::MySql => "INSERT IGNORE",
            Dialect::Sqlite => "INSERT OR IGNORE",
        }
    }

    /// `(a, b) IN (…)` over `pairs` pairs of placeholders, bound a then b for
    /// each pair. Read one key's rows this way rather than with
    /// `a = ? AND b IN (…)`: for that form MariaDB's prepared-statement plan
    /// may be a `ref` scan over *every* row of `a` (the whole campaign or sale,
    /// growing with every batch), filtering b per row; with both columns in each
    /// tuple the only plan is one index lookup per pair.
    pub fn pairs_in(self, a: &str, b: &str, pairs: usize) -> String {
        let tuples = vec!["(?, ?)"; pairs].join(", ");
        match self {
            Dialect::MySql => format!("({a}, {b}) IN ({tuples})"),
            // SQLite takes a row value's IN list only as a subquery.
            Dialect::Sqlite => format!("({a}, {b}) IN (VALUES {tuples})"),
        }
    }

    /// The clause that turns `INSERT … VALUES` into an upsert: a row whose
    /// key (`key`, the columns of a unique key) exists gets `column` from the
    /// inserted values instead.
    pub fn on_conflict_set(self, key: &str, column: &str) -> String {
        match self {
            Dialect::MySql => format!(" ON DUPLICATE KEY UPDATE {column} = VALUES({column})"),
            Dialect::Sqlite => {
                format!(" ON CONFLICT ({key}) DO UPDATE SET {column} = excluded.{column}")
            }
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Dialect::MySql => "mysql",
            Dialect::Sqlite => "sqlite",
        }
    }
}

/// One embedded migration file.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    pub version: i64,
    pub name: &'static str,
    pub sql: &'static str,
}

/// A service's migrations, one list per dialect (files embedded at build time).
#[derive(Debug, Clone, Copy)]
pub struct Migrations {
    pub mysql: &'static [Migration],
    pub sqlite: &'static [Migration],
}

/// A connection pool plus the dialect it speaks.
#[derive(Clone, Debug)]
pub struct Database {
    pool: AnyPool,
    /// Reads that need not see the caller's own open transaction; see
    /// [`Database::reader`].
    reader: AnyPool,
    dialect: Dialect,
}

impl Database {
    /// Connects to `url` (`mysql://…/db` or `sqlite://path`). A MySQL
    /// database named in the URL is created when missing; a SQLite file and
    /// its folder likewise.
    pub async fn connect(url: &str, max_connections: u32) -> Result<Self, SqlError> {
        Self::connect_with_sync(url, max_connections, false).await
    }

    /// [`Database::connect`]; a SQLite database commits with
    /// `synchronous = FULL` when `full_sync` (a commit is on the disk before
    /// it returns: survives power loss), else `NORMAL` (a commit reaches the
    /// operating system: survives the process being killed).
    pub async fn connect_with_sync(
        url: &str,
        max_connections: u32,
        full_sync: bool,
    ) -> Result<Self, SqlError> {
        sqlx::any::install_default_drivers();
        let parsed = Url::parse(url).map_err(|e| SqlError::Url {
            url: redact(url),
            reason: e.to_string(),
        })?;
        let dialect = match parsed.scheme() {
            "mysql" | "mariadb" => Dialect::MySql,
            "sqlite" => Dialect::Sqlite,
            other => {
                return Err(SqlError::Url {
                    url: redact(url),
                    reason: format!("unsupported scheme {other:?}; use mysql:// or sqlite://"),
                })
            }
        };
        let url = if parsed.scheme() == "mariadb" {
            url.replacen("mariadb://", "mysql://", 1)
        } else {
            url.to_string()
        };
        match dialect {
            Dialect::MySql => create_mysql_database(&url).await?,
            Dialect::Sqlite => create_sqlite_parent(&url)?,
        }
        let options = AnyConnectOptions::from_str(&url)
            .map_err(|e| SqlError::Url {
                url: redact(&url),
                reason: e.to_string(),
            })?
            .log_statements(tracing::log::LevelFilter::Trace)
            .log_slow_statements(tracing::log::LevelFilter::Warn, Duration::from_secs(1));
        // SQLite allows one writer; with several connections a deferred
        // transaction that upgrades to a write fails with SQLITE_BUSY instead
        // of waiting. One connection serialises transactions, which is also
        // what makes `FOR UPDATE`-free row locking correct there.
        let max = match dialect {
            Dialect::MySql => max_connections.max(1),
            Dialect::Sqlite => 1,
        };
        let pool = AnyPoolOptions::new()
            .max_connections(max)
            .acquire_timeout(Duration::from_secs(10))
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if dialect == Dialect::Sqlite {
                        conn.execute("PRAGMA journal_mode = WAL").await?;
                        conn.execute(if full_sync {
                            "PRAGMA synchronous = FULL"
                        } else {
                            "PRAGMA synchronous = NORMAL"
                        })
                        .await?;
                        conn.execute("PRAGMA busy_timeout = 5000").await?;
                        // A batch insert's statement journal stays in memory,
                        // a batch's pages fit the cache (64 MiB) instead of
                        // spilling mid-transaction, and the WAL is copied back
                        // every 16k pages instead of 1k, so a hot page is
                        // written back once per checkpoint, not sixteen times:
                        // all three were file writes in the V3 consumer's profile.
                        conn.execute("PRAGMA temp_store = MEMORY").await?;
                        conn.execute("PRAGMA cache_size = -65536").await?;
                        conn.execute("PRAGMA wal_autocheckpoint = 16384").await?;
                    }
                    Ok(())
                })
            })
            .connect_with(options.clone())
            .await
            .map_err(|source| SqlError::Connect {
                url: redact(&url),
                source,
            })?;
        let reader = match dialect {
            Dialect::MySql => pool.clone(),
            // A read-only connection of its own, opened on first use: in WAL
            // mode it reads the last commit while the writer works.
            Dialect::Sqlite => AnyPoolOptions::new()
                .max_connections(1)
                .acquire_timeout(Duration::from_secs(10))
                .after_connect(|conn, _| {
                    Box::pin(async move {
                        conn.execute("PRAGMA busy_timeout = 5000").await?;
                        conn.execute("PRAGMA query_only = ON").await?;
                        Ok(())
                    })
                })
                .connect_lazy_with(options),
        };
        Ok(Self {
            pool,
            reader,
            dialect,
        })
    }

    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// A pool for background reads of committed rows (the event relay,
    /// the event feed). On MySQL it is [`Database::pool`]. On SQLite, whose
    /// one writer connection serialises everything that goes through
    /// [`Database::pool`], it is a second, read-only connection: such reads
    /// see the latest commit and no longer wait behind, or hold up, the
    /// writer's transactions.
    pub fn reader(&self) -> &AnyPool {
        &self.reader
    }

    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    /// Applies the migrations not yet recorded in `schema_migrations`, in
    /// version order, and returns how many ran. Safe to call at every start:
    /// on MySQL a named lock keeps concurrent starters from racing.
    pub async fn migrate(&self, migrations: &Migrations) -> Result<usize, SqlError> {
        let list = match self.dialect {
            Dialect::MySql => migrations.mysql,
            Dialect::Sqlite => migrations.sqlite,
        };
        let mut conn = self.pool.acquire().await?;
        if self.dialect == Dialect::MySql {
            sqlx::query("SELECT GET_LOCK('promo_migrate', 60)")
                .execute(&mut *conn)
                .await?;
        }
        let result = async {
            conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations (\
                 version BIGINT PRIMARY KEY, name VARCHAR(255) NOT NULL, applied_at BIGINT NOT NULL)",
            )
            .await?;
            let mut applied = 0;
            for m in list {
                let done: Option<i64> =
                    sqlx::query_scalar("SELECT version FROM schema_migrations WHERE version = ?")
                        .bind(m.version)
                        .fetch_optional(&mut *conn)
                        .await?;
                if done.is_some() {
                    continue;
                }
                // SQLite runs DDL in transactions: a migration and its
                // record land together or not at all. MySQL commits each
                // DDL statement by itself.
                if self.dialect == Dialect::Sqlite {
                    let mut tx = conn.begin().await?;
                    apply(&mut tx, m).await?;
                    tx.commit().await?;
                } else {
                    apply(&mut conn, m).await?;
                }
                tracing::info!(version = m.version, name = m.name, "migration applied");
                applied += 1;
            }
            Ok::<_, SqlError>(applied)
        }
        .await;
        if self.dialect == Dialect::MySql {
            let _ = sqlx::query("SELECT RELEASE_LOCK('promo_migrate')")
                .execute(&mut *conn)
                .await;
        }
        result
    }

    /// Round trip to the database, for `/readyz`.
    pub async fn ping(&self) -> Result<(), SqlError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    pub async fn close(&self) {
        self.pool.close().await;
        self.reader.close().await
    }
}

/// Runs one migration's statements and records it.
async fn apply(conn: &mut sqlx::AnyConnection, m: &Migration) -> Result<(), SqlError> {
    for statement in split_statements(m.sql) {
        conn.execute(statement)
            .await
            .map_err(|source| SqlError::Migration {
                version: m.version,
                name: m.name,
                source,
            })?;
    }
    sqlx::query("INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)")
        .bind(m.version)
        .bind(m.name)
        .bind(crate::time::now_ms())
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Splits a migration file into statements at `;` line ends. Migration files
/// keep one statement per `;`-terminated block and no `;` inside literals.
fn split_statements(sql: &str) -> impl Iterator<Item = &str> {
    sql.split(";\n")
        .map(|s| s.trim().trim_end_matches(';').trim())
        .filter(|s| {
            !s.is_empty()
                && s.lines()
                    .any(|l| !l.trim().is_empty() && !l.trim_start().starts_with("--"))
        })
}

async fn create_mysql_database(url: &str) -> Result<(), SqlError> {
    let mut parsed = Url::parse(url).map_err(|e| SqlError::Url {
        url: redact(url),
        reason: e.to_string(),
    })?;
    let name = parsed.path().trim_start_matches('/').to_string();
    if name.is_empty() {
        return Err(SqlError::Url {
            url: redact(url),
            reason: "the URL names no database (mysql://user@host:3306/<database>)".into(),
        });
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        return Err(SqlError::Url {
            url: redact(url),
            reason: format!("database name {name:?} may hold only letters, digits, '_' and '-'"),
        });
    }
    parsed.set_path("");
    let server = parsed.to_string();
    let mut conn = sqlx::AnyConnection::connect(&server)
        .await
        .map_err(|source| SqlError::Connect {
            url: redact(&server),
            source,
        })?;
    conn.execute(
        format!("CREATE DATABASE IF NOT EXISTS `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_bin")
            .as_str(),
    )
    .await?;
    conn.close().await?;
    Ok(())
}

fn create_sqlite_parent(url: &str) -> Result<(), SqlError> {
    let path = url
        .trim_start_matches("sqlite://")
        .trim_start_matches("sqlite:");
    let path = path.split('?').next().unwrap_or_default();
    if path.is_empty() || path == ":memory:" {
        return Ok(());
    }
    if let Some(parent) = std::path::Path::new(path).parent() {
        if !parent.as_os_str().is_empty() {
            std::fs::create_dir_all(parent).map_err(|e| SqlError::Url {
                url: url.to_string(),
                reason: format!("cannot create folder {}: {e}", parent.display()),
            })?;
        }
    }
    Ok(())
}

/// The URL with its password replaced, for error messages and logs.
pub fn redact(url: &str) -> String {
    match Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        _ => url.to_string(),
    }
}

/// The `mysql://` URL of database `name` on the server at `server_url`
/// (whatever database the server URL named is replaced).
pub fn mysql_database_url(server_url: &str, name: &str) -> Result<String, SqlError> {
    let mut u = Url::parse(server_url).map_err(|e| SqlError::Url {
        url: redact(server_url),
        reason: e.to_string(),
    })?;
    u.set_path(&format!("/{name}"));
    Ok(u.to_string())
}

/// The `sqlite://` URL of file `<dir>/<name>.db`, created on first connect.
pub fn sqlite_file_url(dir: &std::path::Path, name: &str) -> String {
    format!("sqlite://{}/{name}.db?mode=rwc", dir.display())
}

/// Marks a point in the open transaction of `tx` that [`rollback_to`] can
/// return to (MySQL/MariaDB and SQLite alike), keeping what came before.
pub async fn savepoint(tx: &mut sqlx::AnyConnection, name: &str) -> Result<(), sqlx::Error> {
    sqlx::query(&format!("SAVEPOINT {name}"))
        .execute(&mut *tx)
        .await
        .map(drop)
}

/// Undoes what `tx` wrote since [`savepoint`] `name`; the transaction
/// stays open.
pub async fn rollback_to(tx: &mut sqlx::AnyConnection, name: &str) -> Result<(), sqlx::Error> {
    sqlx::query(&format!("ROLLBACK TO SAVEPOINT {name}"))
        .execute(&mut *tx)
        .await
        .map(drop)
}

/// `items` in chunks of at most `max` (a power of two), each padded with
/// copies of its last item to a power of two. For look-ups, where a repeated
/// key changes no answer: a statement built per chunk then has one of a few
/// texts, so the connection's prepared statements are reused instead of
/// preparing a new text for every batch size.
pub fn lookup_chunks<T: Copy>(items: &[T], max: usize) -> impl Iterator<Item = Vec<T>> + '_ {
    debug_assert!(max.is_power_of_two());
    items.chunks(max).map(|chunk| {
        let mut padded = chunk.to_vec();
        padded.resize(chunk.len().next_power_of_two(), chunk[chunk.len() - 1]);
        padded
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_statements_and_skips_comments() {
        let sql =
            "-- head\nCREATE TABLE a (x INT);\n\n-- only a comment;\nCREATE INDEX i ON a (x);\n";
        let parts: Vec<_> = split_statements(sql).collect();
        assert_eq!(parts.len(), 2, "{parts:?}");
        assert!(parts[0].ends_with("CREATE TABLE a (x INT)"));
        assert_eq!(parts[1], "CREATE INDEX i ON a (x)");
    }

    #[test]
    fn lookup_chunks_pad_to_powers_of_two() {
        let items: Vec<u32> = (0..11).collect();
        let chunks: Vec<Vec<u32>> = lookup_chunks(&items, 8).collect();
        assert_eq!(chunks[0], (0..8).collect::<Vec<_>>());
        assert_eq!(chunks[1], vec![8, 9, 10, 10]);
        assert_eq!(lookup_chunks(&[7u32], 8).collect::<Vec<_>>(), vec![vec![7]]);
        assert_eq!(lookup_chunks::<u32>(&[], 8).count(), 0);
    }

    #[test]
    fn upsert_clause_per_dialect() {
        assert_eq!(
            Dialect::MySql.on_conflict_set("a, b", "n"),
            " ON DUPLICATE KEY UPDATE n = VALUES(n)"
        );
        assert_eq!(
            Dialect::Sqlite.on_conflict_set("a, b", "n"),
            " ON CONFLICT (a, b) DO UPDATE SET n = excluded.n"
        );
    }

    #[test]
    fn pairs_in_per_dialect() {
        assert_eq!(
            Dialect::MySql.pairs_in("a", "b", 2),
            "(a, b) IN ((?, ?), (?, ?))"
        );
        assert_eq!(
            Dialect::Sqlite.pairs_in("a", "b", 1),
            "(a, b) IN (VALUES (?, ?))"
        );
    }

    #[test]
    fn redacts_passwords() {
        assert_eq!(
            redact("mysql://root:secret@db:3306/x"),
            "mysql://root:***@db:3306/x"
        );
        assert_eq!(redact("mysql://root@db/x"), "mysql://root@db/x");
    }

    #[test]
    fn builds_database_urls() {
        assert_eq!(
            mysql_database_url("mysql://root@127.0.0.1:3306", "promo_coupon").unwrap(),
            "mysql://root@127.0.0.1:3306/promo_coupon"
        );
        assert_eq!(
            mysql_database_url("mysql://root@127.0.0.1:3306/other", "c").unwrap(),
            "mysql://root@127.0.0.1:3306/c"
        );
    }
}
