//! The counters port in process (the embedded default): the same pools and
//! tickets behind one mutex, each operation one critical section.

use std::{
    collections::{BTreeSet, HashMap},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use async_trait::async_trait;

use super::{
    random_token, Admission, Arrival, Ask, Counters, CountersError, LockToken, Outgoing, Released,
};

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
    generation: String,
    /// Units of the transfers in flight (holder "").
    transit: i64,
}

impl Pool {
    fn fly(&mut self, ticket: &str, at: Instant, holder: &str, units: i64) {
        self.land(ticket);
        self.in_flight
            .insert(ticket.to_string(), (at, holder.to_string(), units));
        self.in_flight_order.insert((at, ticket.to_string()));
        self.in_flight_units += units;
        if holder.is_empty() {
            self.transit += units;
        }
    }

    /// Forgets an in-flight ticket; its holder and units when it was there.
    fn land(&mut self, ticket: &str) -> Option<(String, i64)> {
        let (at, holder, units) = self.in_flight.remove(ticket)?;
        self.in_flight_order.remove(&(at, ticket.to_string()));
        self.in_flight_units -= units;
        if holder.is_empty() {
            self.transit -= units;
        }
        Some((holder, units))
    }

    /// `units` back to the pool and off `holder`'s count (a transfer's
    /// units are held by nobody: holder "").
    fn give_back(&mut self, holder: &str, units: i64) {
        self.remaining += units;
        if holder.is_empty() {
            return;
        }
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
    /// Transfers received into a pool (true) or cancelled (false), by
    /// (pool, transfer), until their expiry.
    transfers: HashMap<(String, String), (bool, Instant)>,
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
    /// One admission step ([`Counters::admit`]) under the lock.
    fn admit(
        &mut self,
        pool: &str,
        holder: &str,
        units: i64,
        limit: i64,
        ticket: Option<(&str, Duration)>,
        now: Instant,
    ) -> Admission {
        let Some(p) = self.pools.get_mut(pool) else {
            return Admission::Missing;
        };
        if ticket.is_some_and(|(t, _)| p.in_flight.contains_key(t)) {
            return Admission::InFlight;
        }
        let held = p.holders.get(holder).copied().unwrap_or(0);
        if held + units > limit {
            return Admission::LimitReached;
        }
        if p.remaining < units {
            return Admission::SoldOut;
        }
        p.remaining -= units;
        *p.holders.entry(holder.to_string()).or_default() += units;
        let remaining = p.remaining;
        if let Some((t, ttl)) = ticket {
            p.fly(t, now, holder, units);
            self.expire_tickets(now);
            self.mark_ticket(t, now + ttl);
        }
        Admission::Admitted { remaining }
    }

    fn mark_ticket(&mut self, ticket: &str, expiry: Instant) {
        self.clear_ticket(ticket);
        self.tickets.insert(ticket.to_string(), expiry);
        self.ticket_order.insert((expiry, ticket.to_string()));
    }

    /// The remembered outcome of a transfer into `pool`, forgetting expired ones.
    fn transfer_mark(&mut self, pool: &str, transfer: &str, now: Instant) -> Option<bool> {
        let key = (pool.to_string(), transfer.to_string());
        match self.transfers.get(&key) {
            Some((received, until)) if *until > now => Some(*received),
            Some(_) => {
                self.transfers.remove(&key);
                None
            }
            None => None,
        }
    }

    /// Remembers a transfer's outcome; every so often drops the expired.
    fn mark_transfer(&mut self, pool: &str, transfer: &str, received: bool, until: Instant) {
        let now = Instant::now();
        if self.transfers.len() >= 1024 && self.transfers.len().is_power_of_two() {
            self.transfers.retain(|_, (_, t)| *t > now);
        }
        self.transfers
            .insert((pool.to_string(), transfer.to_string()), (received, until));
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
    fn round_trip(&self) -> bool {
        false
    }

    async fn admit(
        &self,
        pool: &str,
        holder: &str,
        units: i64,
        limit: i64,
        ticket: Option<(&str, Duration)>,
    ) -> Result<Admission, CountersError> {
        let mut s = self.lock();
        Ok(s.admit(pool, holder, units, limit, ticket, Instant::now()))
    }

    async fn admit_many(
        &self,
        pool: &str,
        asks: &[Ask<'_>],
        ticket_ttl: Duration,
    ) -> Result<Vec<Admission>, CountersError> {
        let mut s = self.lock();
        let now = Instant::now();
        Ok(asks
            .iter()
            .map(|a| {
                let ticket = Some((a.ticket, ticket_ttl));
                s.admit(pool, a.holder, a.units, a.limit, ticket, now)
            })
            .collect())
    }

    async fn release(&self, pool: &str, holder: &str, units: i64) -> Result<(), CountersError> {
        let mut s = self.lock();
        if let Some(p) = s.pools.get_mut(pool) {
            p.give_back(holder, units);
        }
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
        let mut s = self.lock();
        let now = Instant::now();
        if !s.pools.contains_key(pool) {
            return Ok(Released::Missing);
        }
        // Beside the transfers' marks, under a prefix no transfer id has.
        let mark = format!("released:{key}");
        if s.transfer_mark(pool, &mark, now).is_some() {
            return Ok(Released::Before);
        }
        s.mark_transfer(pool, &mark, true, now + ttl);
        if let Some(p) = s.pools.get_mut(pool) {
            p.give_back(holder, units);
        }
        Ok(Released::Now)
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
        generation: &str,
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
                generation: generation.to_string(),
                ..Pool::default()
            },
        );
        Ok(true)
    }

    async fn take_out(
        &self,
        from: &str,
        transfer: &str,
        units: i64,
    ) -> Result<Outgoing, CountersError> {
        let mut s = self.lock();
        let Some(p) = s.pools.get_mut(from) else {
            return Ok(Outgoing {
                units: 0,
                generation: String::new(),
                moving: 0,
            });
        };
        if p.remaining <= 0 {
            return Ok(Outgoing {
                units: 0,
                generation: String::new(),
                moving: p.transit,
            });
        }
        let k = p.remaining.min(units.max((p.remaining + 1) / 2));
        p.remaining -= k;
        p.fly(transfer, Instant::now(), "", k);
        Ok(Outgoing {
            units: k,
            generation: p.generation.clone(),
            moving: p.transit,
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
        let mut s = self.lock();
        let now = Instant::now();
        match s.transfer_mark(to, transfer, now) {
            Some(true) => return Ok(Arrival::Received),
            Some(false) => return Ok(Arrival::Cancelled),
            None => {}
        }
        let Some(p) = s.pools.get_mut(to).filter(|p| p.generation == generation) else {
            return Ok(Arrival::Refused);
        };
        p.remaining += units;
        s.mark_transfer(to, transfer, true, now + ttl);
        Ok(Arrival::Received)
    }

    async fn cancel_in(
        &self,
        to: &str,
        transfer: &str,
        ttl: Duration,
    ) -> Result<bool, CountersError> {
        let mut s = self.lock();
        let now = Instant::now();
        if s.transfer_mark(to, transfer, now) == Some(true) {
            return Ok(true);
        }
        s.mark_transfer(to, transfer, false, now + ttl);
        Ok(false)
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
