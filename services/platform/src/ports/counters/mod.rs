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

mod memory;
mod redis;

use std::time::Duration;

use async_trait::async_trait;

pub use self::memory::MemoryCounters;
pub(crate) use self::redis::{bounded, Unanswered};
pub use self::redis::{RedisConnection, RedisCounters, COMMAND_TIMEOUT};

/// Field of the pool hash that holds the remaining units. Holder fields are
/// prefixed with `u:` so no user id can collide with it.
const REMAINING: &str = "~remaining";
/// Field of the pool hash that holds the units of the tickets in flight.
const IN_FLIGHT: &str = "~inflight";
/// Field of the pool hash that holds the generation it was seeded with.
const GENERATION: &str = "~generation";
/// Field of the pool hash that holds the units of its transfers in flight
/// (taken out, not yet settled).
const TRANSIT: &str = "~transit";

#[derive(Debug, thiserror::Error)]
pub enum CountersError {
    #[error("redis: {0}")]
    Redis(#[from] ::redis::RedisError),
    #[error("redis did not answer within {0:?}")]
    Timeout(Duration),
    #[error("cannot connect to redis at {url}: {source}")]
    Connect {
        url: String,
        #[source]
        source: ::redis::RedisError,
    },
    /// One failure of a step taken for several callers at once
    /// ([`Counters::admit_many`]), given to each of them.
    #[error(transparent)]
    Shared(std::sync::Arc<CountersError>),
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
    /// The ticket asked for is already in flight (an earlier run of the same
    /// request took its units): nothing was taken.
    InFlight,
}

/// What [`Counters::release_once`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Released {
    /// The units are back in the pool now.
    Now,
    /// They were given back before under the same key; nothing changed.
    Before,
    /// The pool is missing; nothing changed (nor remembered).
    Missing,
}

/// One ticketed admission of a batch ([`Counters::admit_many`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ask<'a> {
    pub holder: &'a str,
    pub units: i64,
    pub limit: i64,
    pub ticket: &'a str,
}

/// Units a transfer took out of a pool ([`Counters::take_out`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    /// Units taken (0: the pool had none, or is missing).
    pub units: i64,
    /// The generation the pool was seeded with: a pool seeded again since
    /// (a rebuild) will not receive these units.
    pub generation: String,
    /// Units of this pool's transfers still on their way (these included):
    /// with none taken, a pool that still has some moving is not sold out.
    pub moving: i64,
}

/// What became of a transfer's units at the receiving pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arrival {
    /// Added to the pool (now or before: receiving is idempotent).
    Received,
    /// The audit cancelled the transfer first; nothing was added.
    Cancelled,
    /// The pool is missing or of another generation; nothing was added.
    Refused,
}

/// Proof of holding a lock; only its holder can release it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockToken {
    pub key: String,
    pub token: String,
}

#[async_trait]
pub trait Counters: Send + Sync {
    /// One atomic admission step: pool present, `ticket` (when given) not
    /// already in flight, `holder`'s units + `units` ≤ `limit`, `units` ≤
    /// remaining; then take the units and, when `ticket` is given, record it
    /// *in flight* in the pool (admitted now, for `holder`, `units`) until it
    /// is cleared ([`Counters::clear_tickets`]) or given back
    /// ([`Counters::release_ticket`]), and mark it pending for `ticket_ttl`
    /// (within the step, except on a Redis Cluster, where the mark lives in
    /// another slot and is set just after it).
    async fn admit(
        &self,
        pool: &str,
        holder: &str,
        units: i64,
        limit: i64,
        ticket: Option<(&str, Duration)>,
    ) -> Result<Admission, CountersError>;

    /// Many ticketed admissions in one pool as one atomic step (one Redis
    /// script call): each answered, in order, exactly as [`Counters::admit`]
    /// would answer it had they come one after another (a ticket twice in
    /// one batch: the second is [`Admission::InFlight`]); every admitted
    /// ticket is marked pending for `ticket_ttl` (within the step, except
    /// on a Redis Cluster, where the marks live in other slots and are set
    /// just after it). A missing pool answers [`Admission::Missing`] to all.
    async fn admit_many(
        &self,
        pool: &str,
        asks: &[Ask<'_>],
        ticket_ttl: Duration,
    ) -> Result<Vec<Admission>, CountersError>;

    /// Gives `units` back to the pool and to `holder` (a cancel, or a
    /// synchronous order the database refused). No-op when the pool is missing.
    async fn release(&self, pool: &str, holder: &str, units: i64) -> Result<(), CountersError>;

    /// [`Counters::release`] at most once per `key` within `ttl` (an
    /// order's units, given back by whoever gets there first after a
    /// crash): the key is remembered in the same step.
    async fn release_once(
        &self,
        pool: &str,
        holder: &str,
        units: i64,
        key: &str,
        ttl: Duration,
    ) -> Result<Released, CountersError>;

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

    /// Creates the pool with `remaining` units, the given holder counts and
    /// `generation` (a rebuild gives all of a promotion's buckets a new one;
    /// a first seed ""), unless it already exists. Returns whether it created it.
    async fn seed(
        &self,
        pool: &str,
        remaining: i64,
        holders: &[(String, i64)],
        generation: &str,
    ) -> Result<bool, CountersError>;

    /// The first step of moving units between two buckets' pools (each step
    /// atomic on one pool, so on one Redis Cluster slot): takes `units` —
    /// or more, up to half of what `from` has, so that a bucket that keeps
    /// running out asks seldom; all it has when that is fewer — out of
    /// `from` and records them in flight there under ticket `transfer`,
    /// held by nobody. Then
    /// [`Counters::take_in`] adds them to the receiving pool and
    /// [`Counters::clear_tickets`] forgets the ticket; if the mover dies in
    /// between, the audit settles the transfer with
    /// [`Counters::cancel_in`]: units received stay, units not received go
    /// back to `from` ([`Counters::release_ticket`]) — never both.
    async fn take_out(
        &self,
        from: &str,
        transfer: &str,
        units: i64,
    ) -> Result<Outgoing, CountersError>;

    /// Adds transfer `transfer`'s `units` to pool `to` unless the transfer
    /// was cancelled or `to` is missing or not of `generation`; remembers
    /// the outcome for `ttl` (longer than any transfer can stay unsettled).
    async fn take_in(
        &self,
        to: &str,
        transfer: &str,
        units: i64,
        generation: &str,
        ttl: Duration,
    ) -> Result<Arrival, CountersError>;

    /// For the audit: whether `to` received `transfer`; when it did not,
    /// marks it cancelled (for `ttl`) in the same step, so that a late
    /// [`Counters::take_in`] adds nothing.
    async fn cancel_in(
        &self,
        to: &str,
        transfer: &str,
        ttl: Duration,
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

    /// Whether each step is a network round trip (Redis), so that one step
    /// for many admissions saves more than it costs ([`crate::coalesce`]).
    fn round_trip(&self) -> bool {
        true
    }
}

fn random_token() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}
