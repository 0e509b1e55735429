//! Test support for suites that run against the real backends. The URLs
//! default to what `scripts/infra.sh up` (`just infra-up`) starts; override
//! with PROMO_TEST_MYSQL_URL, PROMO_TEST_REDIS_URL, PROMO_TEST_KAFKA_BROKERS.

use crate::ports::{Database, KafkaQueue, RedisCounters};

pub fn mysql_url() -> String {
    std::env::var("PROMO_TEST_MYSQL_URL")
        .unwrap_or_else(|_| "mysql://promo:promo@127.0.0.1:3306".into())
}

pub fn redis_url() -> String {
    std::env::var("PROMO_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

pub fn kafka_brokers() -> String {
    std::env::var("PROMO_TEST_KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".into())
}

/// A short unique suffix for database names, key prefixes and topics.
pub fn unique(label: &str) -> String {
    format!(
        "{label}_{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    )
}

const HINT: &str = "start the real backends with `just infra-up` (scripts/infra.sh up)";

/// A fresh MariaDB database (dropped when the test process ends is not
/// guaranteed; names are unique so leftovers never collide).
pub async fn fresh_mysql(label: &str) -> Database {
    let url = crate::ports::sql::mysql_database_url(&mysql_url(), &unique(label))
        .expect("valid PROMO_TEST_MYSQL_URL");
    Database::connect(&url, 16)
        .await
        .unwrap_or_else(|e| panic!("MariaDB at {}: {e}; {HINT}", mysql_url()))
}

/// A fresh SQLite database in a temporary folder that lives as long as the
/// returned guard.
pub async fn fresh_sqlite(label: &str) -> (Database, TempDir) {
    let dir = TempDir::new();
    let url = crate::ports::sql::sqlite_file_url(&dir.0, label);
    let db = Database::connect(&url, 1).await.expect("sqlite opens");
    (db, dir)
}

/// Redis counters under a unique key prefix.
pub async fn fresh_redis(label: &str) -> RedisCounters {
    let prefix = format!("test:{}:", unique(label));
    RedisCounters::connect(&redis_url(), &prefix)
        .await
        .unwrap_or_else(|e| panic!("Redis at {}: {e}; {HINT}", redis_url()))
}

/// Deletes every key under the counters' prefix: what a FLUSHALL does to
/// this test, without touching tests running beside it.
pub async fn flush_redis_prefix(counters: &RedisCounters) {
    let mut conn = counters.connection();
    let pattern = format!("{}*", counters.prefix());
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(&pattern)
        .query_async(&mut conn)
        .await
        .expect("KEYS");
    if !keys.is_empty() {
        redis::cmd("DEL")
            .arg(&keys)
            .exec_async(&mut conn)
            .await
            .expect("DEL");
    }
}

pub fn kafka() -> KafkaQueue {
    KafkaQueue::new(&kafka_brokers()).expect("kafka client config")
}

/// A temporary folder removed on drop.
pub struct TempDir(pub std::path::PathBuf);

impl TempDir {
    pub fn new() -> Self {
        let p = std::env::temp_dir().join(unique("promo-test"));
        std::fs::create_dir_all(&p).expect("temp dir");
        Self(p)
    }
}

impl Default for TempDir {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
