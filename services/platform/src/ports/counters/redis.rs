//! The counters port on Redis — one server or a Redis Cluster: one hash per
//! pool, every read-and-write one Lua step (the scripts are in `lua/`),
//! commands bounded by a timeout.
//!
//! Cluster-safe by construction: every key a script names belongs to one
//! pool and carries the pool in a hash tag (`pool:{coupon:c-1}`,
//! `inflight:{coupon:c-1}`, …), so a script runs on one slot. Ticket keys
//! (`ticket:<id>`) are read by id alone, so they live in their own slots
//! and are written by single-key commands beside the scripts, in an order
//! that keeps every crash harmless (see [`RedisCounters::admit`] and
//! [`RedisCounters::release_ticket`]). The exceptions are on a single
//! server (not a cluster), where slots do not matter: the admission
//! scripts also set the admitted tickets' pending marks
//! ([`RedisCounters::admit`], [`RedisCounters::admit_many`]), and the
//! consumer's clearing script removes them ([`RedisCounters::clear_tickets`]).

use std::{sync::Arc, time::Duration};

use async_trait::async_trait;
use futures::future::try_join_all;
use redis::{
    aio::{ConnectionLike, ConnectionManager},
    cluster_async::ClusterConnection,
    Cmd, Pipeline, RedisFuture, Script, Value,
};

use super::{
    random_token, Admission, Arrival, Ask, Counters, CountersError, LockToken, Outgoing, Released,
    GENERATION, IN_FLIGHT, REMAINING, TRANSIT,
};

const ADMIT_LUA: &str = include_str!("lua/admit.lua");

// KEYS: pool, in-flight zset, in-flight hash.
// ARGV: REMAINING, IN_FLIGHT, then holder, units, limit, ticket per admission.
const ADMIT_MANY_LUA: &str = include_str!("lua/admit_many.lua");

// KEYS: pool, in-flight zset, in-flight hash. ARGV: ticket, REMAINING, IN_FLIGHT, TRANSIT.
const RELEASE_TICKET_LUA: &str = include_str!("lua/release_ticket.lua");

// KEYS: pool, in-flight zset, in-flight hash, then (on a single server
// only) the tickets' pending-mark keys. ARGV: IN_FLIGHT, TRANSIT, tickets...
const CLEAR_LUA: &str = include_str!("lua/clear.lua");

// KEYS: in-flight zset. ARGV: age in ms, limit.
const OLDER_LUA: &str = include_str!("lua/older.lua");

const RELEASE_LUA: &str = include_str!("lua/release.lua");

// KEYS[1] = pool, KEYS[2] = staging hash already holding the holder counts,
// KEYS[3], KEYS[4] = the pool's in-flight zset and hash (a new pool starts
// with nothing in flight: it is seeded from the database after a fence).
const SEED_LUA: &str = include_str!("lua/seed.lua");

const ADJUST_LUA: &str = include_str!("lua/adjust.lua");

// KEYS: pool, in-flight zset, in-flight hash.
// ARGV: REMAINING, transfer, units, IN_FLIGHT, GENERATION, TRANSIT.
const TAKE_OUT_LUA: &str = include_str!("lua/take_out.lua");

// KEYS: pool, the transfer's mark (in the pool's slot).
// ARGV: REMAINING, units, generation, mark TTL in ms, GENERATION.
const TAKE_IN_LUA: &str = include_str!("lua/take_in.lua");

// KEYS: the transfer's mark. ARGV: mark TTL in ms.
const CANCEL_IN_LUA: &str = include_str!("lua/cancel_in.lua");

const UNLOCK_LUA: &str = include_str!("lua/unlock.lua");

/// How long one Redis command may take by default, reconnecting included,
/// before it fails with [`CountersError::Timeout`]: admission then answers
/// 503 at once instead of hanging while Redis is away (`--redis-timeout-ms`).
pub const COMMAND_TIMEOUT: Duration = Duration::from_millis(500);

/// Why a bounded Redis call failed; each port turns it into its own error.
pub(crate) enum Unanswered {
    Redis(redis::RedisError),
    Timeout(Duration),
}

impl From<Unanswered> for CountersError {
    fn from(u: Unanswered) -> Self {
        match u {
            Unanswered::Redis(e) => CountersError::Redis(e),
            Unanswered::Timeout(d) => CountersError::Timeout(d),
        }
    }
}

/// Runs one Redis call with a deadline.
pub(crate) async fn bounded<T>(
    timeout: Duration,
    call: impl std::future::Future<Output = redis::RedisResult<T>>,
) -> Result<T, Unanswered> {
    match tokio::time::timeout(timeout, call).await {
        Ok(r) => r.map_err(Unanswered::Redis),
        Err(_) => Err(Unanswered::Timeout(timeout)),
    }
}

/// A connection to one Redis server (reconnecting) or to a Redis Cluster
/// (routing each command to its slot's master, following MOVED/ASK).
#[derive(Clone)]
pub enum RedisConnection {
    Server(ConnectionManager),
    Cluster(ClusterConnection),
}

impl ConnectionLike for RedisConnection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            RedisConnection::Server(c) => c.req_packed_command(cmd),
            RedisConnection::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            RedisConnection::Server(c) => c.req_packed_commands(cmd, offset, count),
            RedisConnection::Cluster(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            RedisConnection::Server(c) => c.get_db(),
            RedisConnection::Cluster(c) => c.get_db(),
        }
    }
}

/// Redis implementation: one multiplexed connection (reconnecting) or a
/// cluster connection, scripts loaded once and run by SHA (`redis::Script`
/// reloads them after a restart or on a node that has not seen them).
#[derive(Clone)]
pub struct RedisCounters {
    conn: RedisConnection,
    prefix: String,
    timeout: Duration,
    admit: Arc<Script>,
    admit_many: Arc<Script>,
    release: Arc<Script>,
    release_ticket: Arc<Script>,
    clear: Arc<Script>,
    older: Arc<Script>,
    seed: Arc<Script>,
    adjust: Arc<Script>,
    unlock: Arc<Script>,
    take_out: Arc<Script>,
    take_in: Arc<Script>,
    cancel_in: Arc<Script>,
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
        Ok(Self::on(RedisConnection::Server(conn), prefix, timeout))
    }

    /// Connects to the Redis Cluster that `nodes` (`host:port`, any of its
    /// masters) belong to; keys under `prefix`, commands bounded by `timeout`.
    pub async fn connect_cluster(
        nodes: &[String],
        prefix: &str,
        timeout: Duration,
    ) -> Result<Self, CountersError> {
        let urls: Vec<String> = nodes
            .iter()
            .map(|n| {
                if n.contains("://") {
                    n.clone()
                } else {
                    format!("redis://{n}")
                }
            })
            .collect();
        let failed = |source| CountersError::Connect {
            url: nodes.join(","),
            source,
        };
        let client = redis::cluster::ClusterClientBuilder::new(urls)
            .connection_timeout(timeout)
            .response_timeout(timeout)
            .retries(2)
            .min_retry_wait(10)
            .max_retry_wait(200)
            .build()
            .map_err(failed)?;
        let conn = client.get_async_connection().await.map_err(failed)?;
        Ok(Self::on(RedisConnection::Cluster(conn), prefix, timeout))
    }

    fn on(conn: RedisConnection, prefix: &str, timeout: Duration) -> Self {
        Self {
            conn,
            prefix: prefix.to_string(),
            timeout,
            admit: Arc::new(Script::new(ADMIT_LUA)),
            admit_many: Arc::new(Script::new(ADMIT_MANY_LUA)),
            release: Arc::new(Script::new(RELEASE_LUA)),
            release_ticket: Arc::new(Script::new(RELEASE_TICKET_LUA)),
            clear: Arc::new(Script::new(CLEAR_LUA)),
            older: Arc::new(Script::new(OLDER_LUA)),
            seed: Arc::new(Script::new(SEED_LUA)),
            adjust: Arc::new(Script::new(ADJUST_LUA)),
            unlock: Arc::new(Script::new(UNLOCK_LUA)),
            take_out: Arc::new(Script::new(TAKE_OUT_LUA)),
            take_in: Arc::new(Script::new(TAKE_IN_LUA)),
            cancel_in: Arc::new(Script::new(CANCEL_IN_LUA)),
        }
    }

    /// Whether this is a Redis Cluster connection.
    pub fn is_cluster(&self) -> bool {
        matches!(self.conn, RedisConnection::Cluster(_))
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

    /// The mark of a transfer into `pool`, in the pool's slot.
    fn transfer_mark(&self, pool: &str, transfer: &str) -> String {
        format!("{}xfer:{{{pool}}}:{transfer}", self.prefix)
    }

    /// The mark of a [`Counters::release_once`] into `pool`, in the pool's slot.
    fn release_mark(&self, pool: &str, key: &str) -> String {
        format!("{}released:{{{pool}}}:{key}", self.prefix)
    }

    fn ticket_key(&self, ticket: &str) -> String {
        format!("{}ticket:{ticket}", self.prefix)
    }

    fn lock_key(&self, key: &str) -> String {
        format!("{}lock:{key}", self.prefix)
    }

    /// The connection (the cache shares it; tests simulate data loss on it).
    pub fn connection(&self) -> RedisConnection {
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

impl RedisCounters {
    /// Marks `ticket` pending for `ttl`.
    async fn set_ticket(
        &self,
        conn: &mut RedisConnection,
        ticket: &str,
        ttl: Duration,
    ) -> Result<(), CountersError> {
        bounded(
            self.timeout,
            redis::cmd("SET")
                .arg(self.ticket_key(ticket))
                .arg("1")
                .arg("PX")
                .arg(millis(ttl))
                .exec_async(conn),
        )
        .await?;
        Ok(())
    }
}

/// A lifetime in whole milliseconds, at least 1 (`PX 0` is an error).
fn millis(ttl: Duration) -> u64 {
    ttl.as_millis().max(1) as u64
}

/// The answer an admission script gives as `{code, remaining}`.
fn admission(code: i64, remaining: i64) -> Admission {
    match code {
        0 => Admission::Admitted { remaining },
        1 => Admission::LimitReached,
        2 => Admission::SoldOut,
        4 => Admission::InFlight,
        _ => Admission::Missing,
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
        let (flag, id) = match ticket {
            Some((t, _)) => ("1", t),
            None => ("0", ""),
        };
        let (zset, hash) = self.in_flight_keys(pool);
        let mut step = self.admit.key(self.pool_key(pool));
        step.key(zset).key(hash);
        // On one server the step marks the ticket pending itself (as
        // `admit_many` does); on a cluster the mark follows it.
        let mark_ttl = match ticket {
            Some((t, ttl)) if !self.is_cluster() => {
                step.key(self.ticket_key(t));
                millis(ttl)
            }
            _ => 0,
        };
        step.arg(REMAINING)
            .arg(holder_field(holder))
            .arg(units)
            .arg(limit)
            .arg(flag)
            .arg(id)
            .arg(holder)
            .arg(IN_FLIGHT)
            .arg(mark_ttl);
        let (code, left): (i64, i64) = bounded(self.timeout, step.invoke_async(&mut conn)).await?;
        let answer = admission(code, left);
        // On a cluster the pending mark comes after the step: it is read by
        // id alone, so it lives in its own slot. A crash between the two
        // leaves the ticket in flight and unmarked — never acknowledged (the
        // event is sent after this), and given back by the audit.
        if let (Admission::Admitted { .. }, Some((t, ttl)), 0) = (answer, ticket, mark_ttl) {
            self.set_ticket(&mut conn, t, ttl).await?;
        }
        Ok(answer)
    }

    async fn admit_many(
        &self,
        pool: &str,
        asks: &[Ask<'_>],
        ticket_ttl: Duration,
    ) -> Result<Vec<Admission>, CountersError> {
        if asks.is_empty() {
            return Ok(Vec::new());
        }
        let mut conn = self.conn.clone();
        let (zset, hash) = self.in_flight_keys(pool);
        let mut step = self.admit_many.key(self.pool_key(pool));
        step.key(zset).key(hash);
        // On one server the step marks its admitted tickets pending itself
        // (their keys are in other slots, which only a cluster minds): one
        // round trip instead of two, and no window between the two.
        let marks_in_step = !self.is_cluster();
        if marks_in_step {
            for a in asks {
                step.key(self.ticket_key(a.ticket));
            }
        }
        let mark_ttl = if marks_in_step { millis(ticket_ttl) } else { 0 };
        step.arg(REMAINING).arg(IN_FLIGHT).arg(mark_ttl);
        for a in asks {
            step.arg(a.holder).arg(a.units).arg(a.limit).arg(a.ticket);
        }
        let flat: Vec<i64> = bounded(self.timeout, step.invoke_async(&mut conn)).await?;
        if flat.len() == 1 {
            return Ok(vec![Admission::Missing; asks.len()]);
        }
        let answers: Vec<Admission> = flat
            .chunks_exact(2)
            .map(|pair| admission(pair[0], pair[1]))
            .collect();
        if marks_in_step {
            return Ok(answers);
        }
        // On a cluster the pending marks follow the step, as in `admit`: a
        // crash between leaves the tickets in flight, unmarked and
        // unacknowledged.
        let admitted: Vec<&str> = asks
            .iter()
            .zip(&answers)
            .filter(|(_, a)| matches!(a, Admission::Admitted { .. }))
            .map(|(ask, _)| ask.ticket)
            .collect();
        self.mark_pending(&admitted, ticket_ttl).await?;
        Ok(answers)
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

    async fn release_once(
        &self,
        pool: &str,
        holder: &str,
        units: i64,
        key: &str,
        ttl: Duration,
    ) -> Result<Released, CountersError> {
        let mut conn = self.conn.clone();
        let done: i64 = bounded(
            self.timeout,
            self.release
                .key(self.pool_key(pool))
                .key(self.release_mark(pool, key))
                .arg(REMAINING)
                .arg(holder_field(holder))
                .arg(units)
                .arg(millis(ttl))
                .invoke_async(&mut conn),
        )
        .await?;
        Ok(match done {
            0 => Released::Missing,
            1 => Released::Now,
            _ => Released::Before,
        })
    }

    async fn release_ticket(&self, pool: &str, ticket: &str) -> Result<bool, CountersError> {
        let mut conn = self.conn.clone();
        let (zset, hash) = self.in_flight_keys(pool);
        // The pending mark goes first: a crash before the step leaves the
        // ticket in flight (the next audit gives it back) and reads 404 —
        // right for a request that was never acknowledged.
        bounded(
            self.timeout,
            redis::cmd("UNLINK")
                .arg(self.ticket_key(ticket))
                .exec_async(&mut conn),
        )
        .await?;
        let done: i64 = bounded(
            self.timeout,
            self.release_ticket
                .key(self.pool_key(pool))
                .key(zset)
                .key(hash)
                .arg(ticket)
                .arg(REMAINING)
                .arg(IN_FLIGHT)
                .arg(TRANSIT)
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
        .map_err(CountersError::from)
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
        generation: &str,
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
                .arg(GENERATION)
                .arg(generation)
                .invoke_async(&mut conn),
        )
        .await?;
        Ok(created == 1)
    }

    async fn take_out(
        &self,
        from: &str,
        transfer: &str,
        units: i64,
    ) -> Result<Outgoing, CountersError> {
        let mut conn = self.conn.clone();
        let (zset, hash) = self.in_flight_keys(from);
        let (units, generation, moving): (i64, String, i64) = bounded(
            self.timeout,
            self.take_out
                .key(self.pool_key(from))
                .key(zset)
                .key(hash)
                .arg(REMAINING)
                .arg(transfer)
                .arg(units)
                .arg(IN_FLIGHT)
                .arg(GENERATION)
                .arg(TRANSIT)
                .invoke_async(&mut conn),
        )
        .await?;
        Ok(Outgoing {
            units,
            generation,
            moving,
        })
    }

    async fn take_in(
        &self,
        to: &str,
        transfer: &str,
        units: i64,
        generation: &str,
        ttl: Duration,
    ) -> Result<Arrival, CountersError> {
        let mut conn = self.conn.clone();
        let code: i64 = bounded(
            self.timeout,
            self.take_in
                .key(self.pool_key(to))
                .key(self.transfer_mark(to, transfer))
                .arg(REMAINING)
                .arg(units)
                .arg(generation)
                .arg(millis(ttl))
                .arg(GENERATION)
                .invoke_async(&mut conn),
        )
        .await?;
        Ok(match code {
            1 => Arrival::Received,
            2 => Arrival::Cancelled,
            _ => Arrival::Refused,
        })
    }

    async fn cancel_in(
        &self,
        to: &str,
        transfer: &str,
        ttl: Duration,
    ) -> Result<bool, CountersError> {
        let mut conn = self.conn.clone();
        let received: i64 = bounded(
            self.timeout,
            self.cancel_in
                .key(self.transfer_mark(to, transfer))
                .arg(millis(ttl))
                .invoke_async(&mut conn),
        )
        .await?;
        Ok(received == 1)
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
        // One command per ticket (their keys are in different slots), all
        // in flight at once on the multiplexed connection.
        for chunk in tickets.chunks(1000) {
            try_join_all(chunk.iter().map(|t| {
                let mut conn = self.conn.clone();
                async move { self.set_ticket(&mut conn, t, ttl).await }
            }))
            .await?;
        }
        Ok(())
    }

    async fn clear_tickets(&self, pool: &str, tickets: &[&str]) -> Result<(), CountersError> {
        let mut conn = self.conn.clone();
        let (zset, hash) = self.in_flight_keys(pool);
        // On one server the script also removes the pending marks; on a
        // cluster they are in other slots and go one command each after it.
        let marks_in_step = !self.is_cluster();
        for chunk in tickets.chunks(1000) {
            let mut clear = self.clear.key(self.pool_key(pool));
            clear.key(&zset).key(&hash);
            if marks_in_step {
                for t in chunk {
                    clear.key(self.ticket_key(t));
                }
            }
            clear.arg(IN_FLIGHT).arg(TRANSIT);
            for t in chunk {
                clear.arg(*t);
            }
            let _: i64 = bounded(self.timeout, clear.invoke_async(&mut conn)).await?;
            if marks_in_step {
                continue;
            }
            try_join_all(chunk.iter().map(|t| {
                let mut conn = self.conn.clone();
                let key = self.ticket_key(t);
                async move {
                    bounded(
                        self.timeout,
                        redis::cmd("UNLINK").arg(key).exec_async(&mut conn),
                    )
                    .await
                }
            }))
            .await?;
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
                .arg(millis(ttl))
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
