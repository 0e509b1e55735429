//! Versioned cache port: Redis in production, in-process embedded. For
//! cache-aside reads whose fill may race a write.
//!
//! The race: a reader misses, reads version 5 from the database; a writer
//! commits version 6 and invalidates the key; the reader then fills version
//! 5 — a stale value that would survive until its TTL. Here every entry
//! carries the version it was read at, invalidation leaves a *tombstone*
//! with the writer's version, and a fill older than (or as old as) what the
//! key holds is refused. So once a write's invalidation has run, no older
//! read can put its value back.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use async_trait::async_trait;
use redis::Script;

use super::counters::{RedisCounters, Unanswered};

/// Why the cache did not answer. A cache is an optimisation: callers read
/// the database instead.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("cache: redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("cache: redis did not answer within {0:?}")]
    Timeout(Duration),
}

impl From<Unanswered> for CacheError {
    fn from(u: Unanswered) -> Self {
        match u {
            Unanswered::Redis(e) => CacheError::Redis(e),
            Unanswered::Timeout(d) => CacheError::Timeout(d),
        }
    }
}

/// What a key holds: the version it was filled or invalidated at, and the
/// value (`None` for a tombstone).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Versioned {
    pub version: i64,
    pub value: Option<String>,
}

#[async_trait]
pub trait VersionedCache: Send + Sync {
    async fn get(&self, key: &str) -> Result<Option<Versioned>, CacheError>;
    /// Stores `value` read at `version` for `ttl`, unless the key holds a
    /// newer version or a value of the same one. Returns whether it stored.
    async fn fill(
        &self,
        key: &str,
        version: i64,
        value: &str,
        ttl: Duration,
    ) -> Result<bool, CacheError>;
    /// Replaces the key by a tombstone at `version` (unless it holds a newer
    /// one), so fills read before `version` are refused for `ttl`.
    async fn invalidate(&self, key: &str, version: i64, ttl: Duration) -> Result<(), CacheError>;
}

// KEYS[1] = key; ARGV = version, payload ("v<value>" or "t"), ttl ms.
// A fill is refused by anything newer and by a value of its own version;
// a tombstone of its own version (the write it read) lets it in.
// An invalidation is refused only by something newer.
const PUT_LUA: &str = r#"
local cur = redis.call('GET', KEYS[1])
if cur then
  local v, kind = string.match(cur, '^(%-?%d+):(.)')
  v = tonumber(v)
  local new = tonumber(ARGV[1])
  if v and (v > new or (v == new and kind == 'v' and string.sub(ARGV[2], 1, 1) == 'v')) then
    return 0
  end
end
redis.call('SET', KEYS[1], ARGV[1] .. ':' .. ARGV[2], 'PX', ARGV[3])
return 1
"#;

/// The cache in Redis, on the counters' connection and key prefix.
#[derive(Clone)]
pub struct RedisCache {
    conn: super::counters::RedisConnection,
    timeout: std::time::Duration,
    prefix: String,
    put: Arc<Script>,
}

impl RedisCache {
    pub fn new(counters: &RedisCounters) -> Self {
        RedisCache {
            conn: counters.connection(),
            prefix: counters.prefix().to_string(),
            timeout: counters.timeout(),
            put: Arc::new(Script::new(PUT_LUA)),
        }
    }

    fn key(&self, key: &str) -> String {
        format!("{}cache:{key}", self.prefix)
    }

    async fn put(
        &self,
        key: &str,
        version: i64,
        payload: &str,
        ttl: Duration,
    ) -> Result<bool, CacheError> {
        let mut conn = self.conn.clone();
        let stored: i64 = super::counters::bounded(
            self.timeout,
            self.put
                .key(self.key(key))
                .arg(version)
                .arg(payload)
                .arg(ttl.as_millis().max(1) as u64)
                .invoke_async(&mut conn),
        )
        .await?;
        Ok(stored == 1)
    }
}

fn parse(raw: &str) -> Option<Versioned> {
    let (version, rest) = raw.split_once(':')?;
    let version = version.parse().ok()?;
    let value = rest.strip_prefix('v').map(str::to_string);
    Some(Versioned { version, value })
}

#[async_trait]
impl VersionedCache for RedisCache {
    async fn get(&self, key: &str) -> Result<Option<Versioned>, CacheError> {
        let mut conn = self.conn.clone();
        let raw: Option<String> = super::counters::bounded(
            self.timeout,
            redis::cmd("GET").arg(self.key(key)).query_async(&mut conn),
        )
        .await?;
        Ok(raw.as_deref().and_then(parse))
    }

    async fn fill(
        &self,
        key: &str,
        version: i64,
        value: &str,
        ttl: Duration,
    ) -> Result<bool, CacheError> {
        self.put(key, version, &format!("v{value}"), ttl).await
    }

    async fn invalidate(&self, key: &str, version: i64, ttl: Duration) -> Result<(), CacheError> {
        self.put(key, version, "t", ttl).await.map(|_| ())
    }
}

/// The cache in this process (the embedded default).
#[derive(Clone, Default)]
pub struct MemoryCache {
    entries: Arc<Mutex<HashMap<String, (Versioned, Instant)>>>,
}

impl MemoryCache {
    pub fn new() -> Self {
        Self::default()
    }

    fn put(&self, key: &str, entry: Versioned, ttl: Duration) -> bool {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        if let Some((cur, until)) = entries.get(key) {
            let same_value =
                cur.version == entry.version && cur.value.is_some() && entry.value.is_some();
            if *until > now && (cur.version > entry.version || same_value) {
                return false;
            }
        }
        entries.insert(key.to_string(), (entry, now + ttl));
        true
    }
}

#[async_trait]
impl VersionedCache for MemoryCache {
    async fn get(&self, key: &str) -> Result<Option<Versioned>, CacheError> {
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        Ok(entries
            .get(key)
            .filter(|(_, until)| *until > Instant::now())
            .map(|(v, _)| v.clone()))
    }

    async fn fill(
        &self,
        key: &str,
        version: i64,
        value: &str,
        ttl: Duration,
    ) -> Result<bool, CacheError> {
        Ok(self.put(
            key,
            Versioned {
                version,
                value: Some(value.to_string()),
            },
            ttl,
        ))
    }

    async fn invalidate(&self, key: &str, version: i64, ttl: Duration) -> Result<(), CacheError> {
        self.put(
            key,
            Versioned {
                version,
                value: None,
            },
            ttl,
        );
        Ok(())
    }
}
