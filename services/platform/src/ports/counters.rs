//! Counters + locks port: Redis in production, in-process embedded.
//!
//! A *pool* is one campaign's (or sale's) admission state: the units still
//! remaining and the units each holder (user) was admitted. It lives in one
//! Redis hash so that losing it (restart, FLUSHALL, eviction) is all or
//! nothing: admission then answers [`Admission::Missing`] and the service
//! rebuilds the pool from the database before admitting again.
//!
//! Every operation that reads and writes is one atomic step (a Lua script in
//! Redis, one critical section in memory).

use std::{
    collections::{BTreeSet, HashMap},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use async_trait::async_trait;
use redis::{aio::ConnectionManager, Script};

/// Field of the pool hash that holds the remaining units. Holder fields are
/// prefixed with `u:` so no user id can collide with it.
const REMAINING: &str = "~remaining";
/// Field of the pool hash that holds the units of the tickets in flight.
const IN_FLIGHT: &str = "~inflight";

#[derive(Debug, thiserror::Error)]
pub enum CountersError {
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("redis did not answer within {0:?}")]
    Timeout(Duration),
    #[error("cannot connect to redis at {url}: {source}")]
    Connect {
        url: String,
        #[source]
        source: redis::RedisError,
    },
}

/// The answer of one admission step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Admitted; `remaining` units are left after this one.
    Admitted { remaining: i64 },
    /// The holder would exceed their limit.
    LimitReached,
    /// Fewer units remain than were asked for (nothing was taken).
    SoldOut,
    /// The pool does not exist: never seeded, or lost. Rebuild before admitting.
    Missing,
}

/// Proof of holding a lock; only its holder can release it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockToken {
    pub key: String,
    pub token: String,
}

#[async_trait]
pub trait Counters: Send + Sync {
    /// One atomic admission step: pool present, `holder`'s units + `units` ≤
    /// `limit`, `units` ≤ remaining; then take the units and, when `ticket`
    /// is given, mark it pending for `ticket_ttl` and record it *in flight*
    /// in the pool (admitted now, for `holder`, `units`) until it is cleared
    /// ([`Counters::clear_tickets`]) or given back ([`Counters::release_ticket`]).
    async fn admit(
        &self,
        pool: &str,
        holder: &str,
        units: i64,
        limit: i64,
        ticket: Option<(&str, Duration)>,
    ) -> Result<Admission, CountersError>;

    /// Gives `units` back to the pool and to `holder` (a cancel, or a
    /// synchronous order the database refused). No-op when the pool is missing.
    async fn release(&self, pool: &str, holder: &str, units: i64) -> Result<(), CountersError>;

    /// Gives an in-flight ticket's units back to the pool and its holder and
    /// forgets the ticket, in one step — only if it is still in flight, so a
    /// ticket is given back at most once whoever tries. Returns whether it was.
    async fn release_ticket(&self, pool: &str, ticket: &str) -> Result<bool, CountersError>;

    /// Tickets of `pool` in flight for at least `age`, oldest first, at most `limit`.
    async fn in_flight_older_than(
        &self,
        pool: &str,
        age: Duration,
        limit: usize,
    ) -> Result<Vec<String>, CountersError>;

    /// Units of `pool`'s tickets in flight (0 when the pool is missing).
    async fn in_flight(&self, pool: &str) -> Result<i64, CountersError>;

    /// Creates the pool with `remaining` units and the given holder counts,
    /// unless it already exists. Returns whether it created it.
    async fn seed(
        &self,
        pool: &str,
        remaining: i64,
        holders: &[(String, i64)],
    ) -> Result<bool, CountersError>;

    /// Adds `delta` (may be negative) to the remaining units of an existing
    /// pool; returns the new value, or `None` when the pool is missing.
    async fn adjust(&self, pool: &str, delta: i64) -> Result<Option<i64>, CountersError>;

    /// Remaining units, or `None` when the pool is missing.
    async fn remaining(&self, pool: &str) -> Result<Option<i64>, CountersError>;

    /// Deletes the pool (campaign closed or moved off the queued strategy).
    async fn remove(&self, pool: &str) -> Result<(), CountersError>;

    /// Whether `ticket` is still marked pending.
    async fn ticket_pending(&self, ticket: &str) -> Result<bool, CountersError>;

    /// Marks `tickets` pending for `ttl` without admitting anything: the
    /// requests of a queue replayed after a restart, admitted before it.
    async fn mark_pending(&self, tickets: &[&str], ttl: Duration) -> Result<(), CountersError>;

    /// Unmarks tickets of `pool` whose requests the consumer has decided and
    /// stored (committed): their status is in the database now, and they
    /// are no longer in flight. Without this every admission would hold a
    /// key for the whole ticket TTL.
    async fn clear_tickets(&self, pool: &str, tickets: &[&str]) -> Result<(), CountersError>;

    /// Takes the lock `key` for `ttl` if free (SET NX PX with a random token).
    async fn try_lock(&self, key: &str, ttl: Duration) -> Result<Option<LockToken>, CountersError>;

    /// Releases the lock only if `token` still owns it; returns whether it did.
    async fn unlock(&self, token: &LockToken) -> Result<bool, CountersError>;

    /// Round trip, for `/readyz`.
    async fn ping(&self) -> Result<(), CountersError>;
}

fn random_token() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

// ---------------------------------------------------------------- Redis ----

const ADMIT_LUA: &str = r#"
local remaining = redis.call('HGET', KEYS[1], ARGV[1])
if not remaining then return {3, 0} end
local units = tonumber(ARGV[3])
local held = tonumber(redis.call('HGET', KEYS[1], ARGV[2]) or '0')
if held + units > tonumber(ARGV[4]) then return {1, tonumber(remaining)} end
if tonumber(remaining) < units then return {2, tonumber(remaining)} end
local left = redis.call('HINCRBY', KEYS[1], ARGV[1], -units)
redis.call('HINCRBY', KEYS[1], ARGV[2], units)
if ARGV[5] == '1' then
  redis.call('SET', KEYS[2], '1', 'PX', ARGV[6])
  local t = redis.call('TIME')
  redis.call('ZADD', KEYS[3], t[1] * 1000 + math.floor(t[2] / 1000), ARGV[7])
  redis.call('HSET', KEYS[4], ARGV[7], ARGV[3] .. ':' .. ARGV[8])
  redis.call('HINCRBY', KEYS[1], ARGV[9], units)
end
return {0, left}
"#;

// KEYS: pool, in-flight zset, in-flight hash, ticket key.
// ARGV: ticket, REMAINING, IN_FLIGHT.
const RELEASE_TICKET_LUA: &str = r#"
if redis.call('ZREM', KEYS[2], ARGV[1]) == 0 then return 0 end
local v = redis.call('HGET', KEYS[3], ARGV[1])
redis.call('HDEL', KEYS[3], ARGV[1])
redis.call('DEL', KEYS[4])
if not v then return 0 end
if redis.call('HEXISTS', KEYS[1], ARGV[2]) == 0 then return 0 end
local sep = string.find(v, ':', 1, true)
local units = tonumber(string.sub(v, 1, sep - 1))
local holder = 'u:' .. string.sub(v, sep + 1)
redis.call('HINCRBY', KEYS[1], ARGV[2], units)
redis.call('HINCRBY', KEYS[1], ARGV[3], -units)
local held = redis.call('HINCRBY', KEYS[1], holder, -units)
if held <= 0 then redis.call('HDEL', KEYS[1], holder) end
return 1
"#;

// KEYS: pool, in-flight zset, in-flight hash. ARGV: IN_FLIGHT, tickets...
const CLEAR_LUA: &str = r#"
local done = 0
for i = 2, #ARGV do
  if redis.call('ZREM', KEYS[2], ARGV[i]) == 1 then
    local v = redis.call('HGET', KEYS[3], ARGV[i])
    redis.call('HDEL', KEYS[3], ARGV[i])
    if v and redis.call('EXISTS', KEYS[1]) == 1 then
      local units = tonumber(string.sub(v, 1, string.find(v, ':', 1, true) - 1))
      redis.call('HINCRBY', KEYS[1], ARGV[1], -units)
    end
    done = done + 1
  end
end
return done
"#;

// KEYS: in-flight zset. ARGV: age in ms, limit.
const OLDER_LUA: &str = r#"
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
return redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[1]), 'LIMIT', 0, tonumber(ARGV[2]))
"#;

const RELEASE_LUA: &str = r#"
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then return 0 end
redis.call('HINCRBY', KEYS[1], ARGV[1], ARGV[3])
local held = redis.call('HINCRBY', KEYS[1], ARGV[2], -tonumber(ARGV[3]))
if held <= 0 then redis.call('HDEL', KEYS[1], ARGV[2]) end
return 1
"#;

// KEYS[1] = pool, KEYS[2] = staging hash already holding the holder counts,
// KEYS[3], KEYS[4] = the pool's in-flight zset and hash (a new pool starts
// with nothing in flight: it is seeded from the database after a fence).
const SEED_LUA: &str = r#"
if redis.call('EXISTS', KEYS[1]) == 1 then
  redis.call('DEL', KEYS[2])
  return 0
end
redis.call('DEL', KEYS[3], KEYS[4])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
redis.call('RENAME', KEYS[2], KEYS[1])
return 1
"#;

const ADJUST_LUA: &str = r#"
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then return false end
return redis.call('HINCRBY', KEYS[1], ARGV[1], ARGV[2])
"#;

const UNLOCK_LUA: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"#;

/// How long one Redis command may take by default, reconnecting included,
/// before it fails with [`CountersError::Timeout`]: admission then answers
/// 503 at once instead of hanging while Redis is away (`--redis-timeout-ms`).
pub const COMMAND_TIMEOUT: Duration = Duration::from_millis(500);

/// Runs one Redis call with a deadline.
pub(crate) async fn bounded<T>(
    timeout: Duration,
    call: impl std::future::Future<Output = redis::RedisResult<T>>,
) -> Result<T, CountersError> {
    match tokio::time::timeout(timeout, call).await {
        Ok(r) => Ok(r?),
        Err(_) => Err(CountersError::Timeout(timeout)),
    }
}

/// Redis implementation: one multiplexed connection (reconnecting), scripts
/// loaded once and run by SHA (`redis::Script` reloads them after a restart).
#[derive(Clone)]
pub struct RedisCounters {
    conn: ConnectionManager,
    prefix: String,
    timeout: Duration,
    admit: Arc<Script>,
    release: Arc<Script>,
    release_ticket: Arc<Script>,
    clear: Arc<Script>,
    older: Arc<Script>,
    seed: Arc<Script>,
    adjust: Arc<Script>,
    unlock: Arc<Script>,
}

impl RedisCounters {
    /// Connects to `url`; every key is put under `prefix` (e.g. `promo:`);
    /// commands time out after [`COMMAND_TIMEOUT`].
    pub async fn connect(url: &str, prefix: &str) -> Result<Self, CountersError> {
        Self::connect_with_timeout(url, prefix, COMMAND_TIMEOUT).await
    }

    /// [`RedisCounters::connect`] with commands timing out after `timeout`.
    pub async fn connect_with_timeout(
        url: &str,
        prefix: &str,
        timeout: Duration,
    ) -> Result<Self, CountersError> {
        let client = redis::Client::open(url).map_err(|source| CountersError::Connect {
            url: url.to_string(),
            source,
        })?;
        // Reconnect attempts 1 s apart at most (the defaults grow the pause
        // to a minute, and every command waits on the reconnect meanwhile).
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(timeout)
            .set_response_timeout(timeout)
            .set_factor(1)
            .set_exponent_base(2)
            .set_max_delay(1000)
            .set_number_of_retries(3);
        let conn = ConnectionManager::new_with_config(client, config)
            .await
            .map_err(|source| CountersError::Connect {
                url: url.to_string(),
                source,
            })?;
        Ok(Self {
            conn,
            prefix: prefix.to_string(),
            timeout,
            admit: Arc::new(Script::new(ADMIT_LUA)),
            release: Arc::new(Script::new(RELEASE_LUA)),
            release_ticket: Arc::new(Script::new(RELEASE_TICKET_LUA)),
            clear: Arc::new(Script::new(CLEAR_LUA)),
            older: Arc::new(Script::new(OLDER_LUA)),
            seed: Arc::new(Script::new(SEED_LUA)),
            adjust: Arc::new(Script::new(ADJUST_LUA)),
            unlock: Arc::new(Script::new(UNLOCK_LUA)),
        })
    }

    fn pool_key(&self, pool: &str) -> String {
        format!("{}pool:{{{pool}}}", self.prefix)
    }

    /// The pool's in-flight tickets by admission time, and their holder and
    /// units; in the pool's hash slot (same hash tag).
    fn in_flight_keys(&self, pool: &str) -> (String, String) {
        (
            format!("{}inflight:{{{pool}}}", self.prefix),
            format!("{}inflight-units:{{{pool}}}", self.prefix),
        )
    }

    fn ticket_key(&self, ticket: &str) -> String {
        format!("{}ticket:{ticket}", self.prefix)
    }

    fn lock_key(&self, key: &str) -> String {
        format!("{}lock:{key}", self.prefix)
    }

    /// The connection, for tests that simulate data loss.
    pub fn connection(&self) -> ConnectionManager {
        self.conn.clone()
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// How long one command may take.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }
}

fn holder_field(holder: &str) -> String {
    format!("u:{holder}")
}

#[async_trait]
impl Counters for RedisCounters {
    async fn admit(
        &self,
        pool: &str,
        holder: &str,
        units: i64,
        limit: i64,
        ticket: Option<(&str, Duration)>,
    ) -> Result<Admission, CountersError> {
        let mut conn = self.conn.clone();
        let (ticket_key, flag, ttl, id) = match ticket {
            Some((t, ttl)) => (self.ticket_key(t), "1", ttl.as_millis() as u64, t),
            None => (self.ticket_key("-"), "0", 0, ""),
        };
        let (zset, hash) = self.in_flight_keys(pool);
        let (code, left): (i64, i64) = bounded(
            self.timeout,
            self.admit
                .key(self.pool_key(pool))
                .key(ticket_key)
                .key(zset)
                .key(hash)
                .arg(REMAINING)
                .arg(holder_field(holder))
                .arg(units)
                .arg(limit)
                .arg(flag)
                .arg(ttl.max(1))
                .arg(id)
                .arg(holder)
                .arg(IN_FLIGHT)
                .invoke_async(&mut conn),
        )
        .await?;
        Ok(match code {
            0 => Admission::Admitted { remaining: left },
            1 => Admission::LimitReached,
            2 => Admission::SoldOut,
            _ => Admission::Missing,
        })
    }

    async fn release(&self, pool: &str, holder: &str, units: i64) -> Result<(), CountersError> {
        let mut conn = self.conn.clone();
        let _: i64 = bounded(
            self.timeout,
            self.release
                .key(self.pool_key(pool))
                .arg(REMAINING)
                .arg(holder_field(holder))
                .arg(units)
                .invoke_async(&mut conn),
        )
        .await?;
        Ok(())
    }

    async fn release_ticket(&self, pool: &str, ticket: &str) -> Result<bool, CountersError> {
        let mut conn = self.conn.clone();
        let (zset, hash) = self.in_flight_keys(pool);
        let done: i64 = bounded(
            self.timeout,
            self.release_ticket
                .key(self.pool_key(pool))
                .key(zset)
                .key(hash)
                .key(self.ticket_key(ticket))
                .arg(ticket)
                .arg(REMAINING)
                .arg(IN_FLIGHT)
                .invoke_async(&mut conn),
        )
        .await?;
        Ok(done == 1)
    }

    async fn in_flight_older_than(
        &self,
        pool: &str,
        age: Duration,
        limit: usize,
    ) -> Result<Vec<String>, CountersError> {
        let mut conn = self.conn.clone();
        let (zset, _) = self.in_flight_keys(pool);
        bounded(
            self.timeout,
            self.older
                .key(zset)
                .arg(age.as_millis() as u64)
                .arg(limit)
                .invoke_async(&mut conn),
        )
        .await
    }

    async fn in_flight(&self, pool: &str) -> Result<i64, CountersError> {
        let mut conn = self.conn.clone();
        let v: Option<i64> = bounded(
            self.timeout,
            redis::cmd("HGET")
                .arg(self.pool_key(pool))
                .arg(IN_FLIGHT)
                .query_async(&mut conn),
        )
        .await?;
        Ok(v.unwrap_or(0))
    }

    async fn seed(
        &self,
        pool: &str,
        remaining: i64,
        holders: &[(String, i64)],
    ) -> Result<bool, CountersError> {
        let mut conn = self.conn.clone();
        let key = self.pool_key(pool);
        // The holders go to a staging hash first (in chunks, since a big
        // campaign has many) and the pool appears in one RENAME, so a
        // half-written pool is never visible to admission.
        let staging = format!("{key}:staging:{}", random_token());
        let (zset, hash) = self.in_flight_keys(pool);
        for chunk in holders.chunks(1000) {
            let fields: Vec<(String, i64)> =
                chunk.iter().map(|(h, n)| (holder_field(h), *n)).collect();
            bounded(
                self.timeout,
                redis::cmd("HSET")
                    .arg(&staging)
                    .arg(&fields)
                    .exec_async(&mut conn),
            )
            .await?;
        }
        let created: i64 = bounded(
            self.timeout,
            self.seed
                .key(&key)
                .key(&staging)
                .key(zset)
                .key(hash)
                .arg(REMAINING)
                .arg(remaining)
                .invoke_async(&mut conn),
        )
        .await?;
        Ok(created == 1)
    }

    async fn adjust(&self, pool: &str, delta: i64) -> Result<Option<i64>, CountersError> {
        let mut conn = self.conn.clone();
        let v: Option<i64> = bounded(
            self.timeout,
            self.adjust
                .key(self.pool_key(pool))
                .arg(REMAINING)
                .arg(delta)
                .invoke_async(&mut conn),
        )
        .await?;
        Ok(v)
    }

    async fn remaining(&self, pool: &str) -> Result<Option<i64>, CountersError> {
        let mut conn = self.conn.clone();
        let v: Option<i64> = bounded(
            self.timeout,
            redis::cmd("HGET")
                .arg(self.pool_key(pool))
                .arg(REMAINING)
                .query_async(&mut conn),
        )
        .await?;
        Ok(v)
    }

    async fn remove(&self, pool: &str) -> Result<(), CountersError> {
        let mut conn = self.conn.clone();
        let (zset, hash) = self.in_flight_keys(pool);
        bounded(
            self.timeout,
            redis::cmd("DEL")
                .arg(self.pool_key(pool))
                .arg(zset)
                .arg(hash)
                .exec_async(&mut conn),
        )
        .await?;
        Ok(())
    }

    async fn ticket_pending(&self, ticket: &str) -> Result<bool, CountersError> {
        let mut conn = self.conn.clone();
        let n: i64 = bounded(
            self.timeout,
            redis::cmd("EXISTS")
                .arg(self.ticket_key(ticket))
                .query_async(&mut conn),
        )
        .await?;
        Ok(n == 1)
    }

    async fn mark_pending(&self, tickets: &[&str], ttl: Duration) -> Result<(), CountersError> {
        let mut conn = self.conn.clone();
        for chunk in tickets.chunks(1000) {
            let mut pipe = redis::pipe();
            for t in chunk {
                pipe.cmd("SET")
                    .arg(self.ticket_key(t))
                    .arg("1")
                    .arg("PX")
                    .arg(ttl.as_millis().max(1) as u64)
                    .ignore();
            }
            bounded(self.timeout, pipe.exec_async(&mut conn)).await?;
        }
        Ok(())
    }

    async fn clear_tickets(&self, pool: &str, tickets: &[&str]) -> Result<(), CountersError> {
        let mut conn = self.conn.clone();
        let (zset, hash) = self.in_flight_keys(pool);
        for chunk in tickets.chunks(1000) {
            let mut clear = self.clear.key(self.pool_key(pool));
            clear.key(&zset).key(&hash).arg(IN_FLIGHT);
            for t in chunk {
                clear.arg(*t);
            }
            let _: i64 = bounded(self.timeout, clear.invoke_async(&mut conn)).await?;
            let mut unlink = redis::cmd("UNLINK");
            for t in chunk {
                unlink.arg(self.ticket_key(t));
            }
            bounded(self.timeout, unlink.exec_async(&mut conn)).await?;
        }
        Ok(())
    }

    async fn try_lock(&self, key: &str, ttl: Duration) -> Result<Option<LockToken>, CountersError> {
        let mut conn = self.conn.clone();
        let token = random_token();
        let key = self.lock_key(key);
        let ok: Option<String> = bounded(
            self.timeout,
            redis::cmd("SET")
                .arg(&key)
                .arg(&token)
                .arg("NX")
                .arg("PX")
                .arg(ttl.as_millis().max(1) as u64)
                .query_async(&mut conn),
        )
        .await?;
        Ok(ok.map(|_| LockToken { key, token }))
    }

    async fn unlock(&self, token: &LockToken) -> Result<bool, CountersError> {
        let mut conn = self.conn.clone();
        let n: i64 = bounded(
            self.timeout,
            self.unlock
                .key(&token.key)
                .arg(&token.token)
                .invoke_async(&mut conn),
        )
        .await?;
        Ok(n == 1)
    }

    async fn ping(&self) -> Result<(), CountersError> {
        let mut conn = self.conn.clone();
        let _: String = bounded(self.timeout, redis::cmd("PING").query_async(&mut conn)).await?;
        Ok(())
    }
}

// --------------------------------------------------------------- memory ----

#[derive(Default)]
struct Pool {
    remaining: i64,
    holders: HashMap<String, i64>,
    /// Tickets in flight: when admitted, for whom, how many units.
    in_flight: HashMap<String, (Instant, String, i64)>,
    /// The same tickets by admission time, so the audit's look at the
    /// oldest ones does not scan every ticket under the one lock.
    in_flight_order: BTreeSet<(Instant, String)>,
    in_flight_units: i64,
}

impl Pool {
    fn fly(&mut self, ticket: &str, at: Instant, holder: &str, units: i64) {
        self.land(ticket);
        self.in_flight
            .insert(ticket.to_string(), (at, holder.to_string(), units));
        self.in_flight_order.insert((at, ticket.to_string()));
        self.in_flight_units += units;
    }

    /// Forgets an in-flight ticket; its holder and units when it was there.
    fn land(&mut self, ticket: &str) -> Option<(String, i64)> {
        let (at, holder, units) = self.in_flight.remove(ticket)?;
        self.in_flight_order.remove(&(at, ticket.to_string()));
        self.in_flight_units -= units;
        Some((holder, units))
    }

    /// `units` back to the pool and off `holder`'s count.
    fn give_back(&mut self, holder: &str, units: i64) {
        self.remaining += units;
        let held = self.holders.entry(holder.to_string()).or_default();
        *held -= units;
        if *held <= 0 {
            self.holders.remove(holder);
        }
    }
}

#[derive(Default)]
struct State {
    pools: HashMap<String, Pool>,
    tickets: HashMap<String, Instant>,
    /// The same tickets by expiry, for expiring them oldest first without a
    /// scan (a full scan per admission made V3 quadratic) and clearing them
    /// in O(log n).
    ticket_order: BTreeSet<(Instant, String)>,
    locks: HashMap<String, (String, Instant)>,
}

impl State {
    /// Drops the tickets whose time has passed, oldest first.
    fn expire_tickets(&mut self, now: Instant) {
        while self
            .ticket_order
            .first()
            .is_some_and(|(exp, _)| *exp <= now)
        {
            if let Some((_, t)) = self.ticket_order.pop_first() {
                self.tickets.remove(&t);
            }
        }
    }

    /// Marks `ticket` pending until `expiry` (a mark again moves it).
    fn mark_ticket(&mut self, ticket: &str, expiry: Instant) {
        self.clear_ticket(ticket);
        self.tickets.insert(ticket.to_string(), expiry);
        self.ticket_order.insert((expiry, ticket.to_string()));
    }

    fn clear_ticket(&mut self, ticket: &str) {
        if let Some(exp) = self.tickets.remove(ticket) {
            self.ticket_order.remove(&(exp, ticket.to_string()));
        }
    }
}

/// In-process implementation with the same semantics: one mutex makes every
/// operation atomic, as one Lua script is in Redis.
#[derive(Clone, Default)]
pub struct MemoryCounters {
    state: Arc<Mutex<State>>,
}

impl MemoryCounters {
    pub fn new() -> Self {
        Self::default()
    }

    /// Forgets everything, as a Redis FLUSHALL would (for tests and drills).
    pub fn clear(&self) {
        *self.lock() = State::default();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding this lock cannot leave a pool half-updated
        // (every critical section is a few plain assignments), so a poisoned
        // mutex is safe to keep using.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[async_trait]
impl Counters for MemoryCounters {
    async fn admit(
        &self,
        pool: &str,
        holder: &str,
        units: i64,
        limit: i64,
        ticket: Option<(&str, Duration)>,
    ) -> Result<Admission, CountersError> {
        let mut s = self.lock();
        let Some(p) = s.pools.get_mut(pool) else {
            return Ok(Admission::Missing);
        };
        let held = p.holders.get(holder).copied().unwrap_or(0);
        if held + units > limit {
            return Ok(Admission::LimitReached);
        }
        if p.remaining < units {
            return Ok(Admission::SoldOut);
        }
        p.remaining -= units;
        *p.holders.entry(holder.to_string()).or_default() += units;
        let remaining = p.remaining;
        if let Some((t, ttl)) = ticket {
            let now = Instant::now();
            p.fly(t, now, holder, units);
            s.expire_tickets(now);
            s.mark_ticket(t, now + ttl);
        }
        Ok(Admission::Admitted { remaining })
    }

    async fn release(&self, pool: &str, holder: &str, units: i64) -> Result<(), CountersError> {
        let mut s = self.lock();
        if let Some(p) = s.pools.get_mut(pool) {
            p.give_back(holder, units);
        }
        Ok(())
    }

    async fn release_ticket(&self, pool: &str, ticket: &str) -> Result<bool, CountersError> {
        let mut s = self.lock();
        let Some(p) = s.pools.get_mut(pool) else {
            return Ok(false);
        };
        let Some((holder, units)) = p.land(ticket) else {
            return Ok(false);
        };
        p.give_back(&holder, units);
        s.clear_ticket(ticket);
        Ok(true)
    }

    async fn in_flight_older_than(
        &self,
        pool: &str,
        age: Duration,
        limit: usize,
    ) -> Result<Vec<String>, CountersError> {
        let s = self.lock();
        let Some(p) = s.pools.get(pool) else {
            return Ok(Vec::new());
        };
        let now = Instant::now();
        Ok(p.in_flight_order
            .iter()
            .take_while(|(at, _)| now.duration_since(*at) >= age)
            .take(limit)
            .map(|(_, t)| t.clone())
            .collect())
    }

    async fn in_flight(&self, pool: &str) -> Result<i64, CountersError> {
        Ok(self.lock().pools.get(pool).map_or(0, |p| p.in_flight_units))
    }

    async fn seed(
        &self,
        pool: &str,
        remaining: i64,
        holders: &[(String, i64)],
    ) -> Result<bool, CountersError> {
        let mut s = self.lock();
        if s.pools.contains_key(pool) {
            return Ok(false);
        }
        s.pools.insert(
            pool.to_string(),
            Pool {
                remaining,
                holders: holders.iter().cloned().collect(),
                ..Pool::default()
            },
        );
        Ok(true)
    }

    async fn adjust(&self, pool: &str, delta: i64) -> Result<Option<i64>, CountersError> {
        let mut s = self.lock();
        Ok(s.pools.get_mut(pool).map(|p| {
            p.remaining += delta;
            p.remaining
        }))
    }

    async fn remaining(&self, pool: &str) -> Result<Option<i64>, CountersError> {
        Ok(self.lock().pools.get(pool).map(|p| p.remaining))
    }

    async fn remove(&self, pool: &str) -> Result<(), CountersError> {
        self.lock().pools.remove(pool);
        Ok(())
    }

    async fn ticket_pending(&self, ticket: &str) -> Result<bool, CountersError> {
        let s = self.lock();
        Ok(s.tickets
            .get(ticket)
            .is_some_and(|exp| *exp > Instant::now()))
    }

    async fn mark_pending(&self, tickets: &[&str], ttl: Duration) -> Result<(), CountersError> {
        let mut s = self.lock();
        let expiry = Instant::now() + ttl;
        for t in tickets {
            s.mark_ticket(t, expiry);
        }
        Ok(())
    }

    async fn clear_tickets(&self, pool: &str, tickets: &[&str]) -> Result<(), CountersError> {
        let mut s = self.lock();
        if let Some(p) = s.pools.get_mut(pool) {
            for t in tickets {
                p.land(t);
            }
        }
        for t in tickets {
            s.clear_ticket(t);
        }
        Ok(())
    }

    async fn try_lock(&self, key: &str, ttl: Duration) -> Result<Option<LockToken>, CountersError> {
        let mut s = self.lock();
        let now = Instant::now();
        if let Some((_, exp)) = s.locks.get(key) {
            if *exp > now {
                return Ok(None);
            }
        }
        let token = random_token();
        s.locks.insert(key.to_string(), (token.clone(), now + ttl));
        Ok(Some(LockToken {
            key: key.to_string(),
            token,
        }))
    }

    async fn unlock(&self, token: &LockToken) -> Result<bool, CountersError> {
        let mut s = self.lock();
        match s.locks.get(&token.key) {
            Some((t, _)) if *t == token.token => {
                s.locks.remove(&token.key);
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn ping(&self) -> Result<(), CountersError> {
        Ok(())
    }
}
