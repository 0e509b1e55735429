//! A promotion's buckets: its quota split over several counters pools so
//! that one hot campaign is not one Redis key on one thread.
//!
//! A user belongs to bucket `xxh3_64(userId) mod buckets`
//! ([`promo_contracts::bucket_of`]) and is admitted in that bucket's pool
//! only, so per-user limits stay exact. The quota is split evenly at the
//! start; a bucket that runs out takes units from the others
//! ([`refill`]): each step of a transfer is atomic on one pool (one Redis
//! Cluster slot), and the steps are ordered so that a process dying between
//! them loses nothing for longer than the audit takes
//! ([`crate::admission::audit`] settles the transfer: units the receiving
//! bucket got stay there, the others go back — never both).

use std::time::Duration;

use promo_contracts::{bucket_key, bucket_of, partition_of, pool_name};

use crate::ports::{counters::CountersError, Admission, Arrival, Counters};

/// Where a promotion's counters live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout<'a> {
    pub service: &'a str,
    pub id: &'a str,
    pub buckets: u32,
}

impl<'a> Layout<'a> {
    pub fn new(service: &'a str, id: &'a str, buckets: u32) -> Self {
        Self {
            service,
            id,
            buckets: buckets.max(1),
        }
    }

    /// The bucket's key: V3 events of its users and its fences carry it
    /// as their message key.
    pub fn key(&self, bucket: u32) -> String {
        bucket_key(self.id, bucket, self.buckets)
    }

    /// The topic partition of the bucket's events and fences, on a topic
    /// of `partitions` ([`promo_contracts::partition_of`]).
    pub fn partition(&self, bucket: u32, partitions: u32) -> i32 {
        partition_of(self.id, bucket, partitions)
    }

    /// The bucket's counters pool.
    pub fn pool(&self, bucket: u32) -> String {
        pool_name(self.service, &self.key(bucket))
    }

    /// The bucket `holder` belongs to.
    pub fn home(&self, holder: &str) -> u32 {
        bucket_of(holder, self.buckets)
    }

    /// Every bucket's pool, bucket 0 first.
    pub fn pools(&self) -> Vec<String> {
        (0..self.buckets).map(|b| self.pool(b)).collect()
    }

    /// One lock name for the whole promotion (rebuilds take all buckets).
    pub fn lock_name(&self, what: &str) -> String {
        format!("{what}:{}", pool_name(self.service, self.id))
    }
}

/// Tickets of transfers start with this; then the receiving bucket, `:`,
/// and a unique id. Request ids never do (they are UUIDs).
pub const TRANSFER: &str = "xfer:";

/// How long a receiving pool remembers a transfer's outcome — longer than
/// any transfer can stay unsettled (the audit settles it within a minute
/// while a consumer runs; a day covers a long outage).
pub const TRANSFER_MARK_TTL: Duration = Duration::from_secs(24 * 3600);

/// The receiving bucket of a transfer ticket, or `None` for a request.
pub fn transfer_target(ticket: &str) -> Option<u32> {
    ticket
        .strip_prefix(TRANSFER)?
        .split(':')
        .next()?
        .parse()
        .ok()
}

fn transfer_ticket(to: u32) -> String {
    format!("{TRANSFER}{to}:{}", uuid::Uuid::now_v7().simple())
}

/// What one [`refill`] pass found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refill {
    /// Units that arrived in the bucket.
    pub arrived: i64,
    /// Whether a donor that gave nothing had units of its own transfers
    /// still on their way (they will land in some bucket: not sold out).
    pub moving: bool,
}

/// Moves units into bucket `to` from the other buckets until at least
/// `need` arrived or every other bucket was asked once (the next bucket
/// first, round the ring, so refills spread over donors).
///
/// Each transfer: [`Counters::take_out`] on the donor (units in flight
/// there under a transfer ticket), [`Counters::take_in`] on `to`, then the
/// ticket is cleared on the donor — or given back to it when `to` refused
/// (missing, rebuilt since, or the audit cancelled the transfer). An error
/// between the steps leaves the ticket in flight for the audit.
pub async fn refill(
    counters: &dyn Counters,
    layout: &Layout<'_>,
    to: u32,
    need: i64,
) -> Result<Refill, CountersError> {
    let mut found = Refill {
        arrived: 0,
        moving: false,
    };
    let receiver = layout.pool(to);
    for step in 1..layout.buckets {
        if found.arrived >= need {
            break;
        }
        let donor = layout.pool((to + step) % layout.buckets);
        let ticket = transfer_ticket(to);
        let out = counters
            .take_out(&donor, &ticket, need - found.arrived)
            .await?;
        if out.units == 0 {
            found.moving |= out.moving > 0;
            continue;
        }
        let arrival = counters
            .take_in(
                &receiver,
                &ticket,
                out.units,
                &out.generation,
                TRANSFER_MARK_TTL,
            )
            .await?;
        if arrival == Arrival::Received {
            found.arrived += out.units;
            counters.clear_tickets(&donor, &[&ticket]).await?;
        } else {
            counters.release_ticket(&donor, &ticket).await?;
        }
    }
    Ok(found)
}

/// Most rounds (admission, refill) one admission makes before answering
/// sold out anyway: each round either brings units that concurrent
/// admissions took first, or waits for units on their way ([`MOVING_PAUSE`]).
pub const REFILL_ROUNDS: u32 = 64;

/// How long an admission first waits before looking again when every other
/// bucket was empty but some had units on their way; each further wait
/// doubles, up to 16 times this (many requests would otherwise keep
/// asking every bucket while the units travel).
pub const MOVING_PAUSE: Duration = Duration::from_millis(1);

/// How long this process takes a promotion whose every bucket was found
/// empty as sold out without asking the buckets again ([`Refills`]).
pub const DRY_FOR: Duration = Duration::from_millis(10);

/// Locks that let one admission per bucket and process refill at a time.
const REFILL_LOCKS: usize = 64;

/// What this process knows of its refills, so that a storm near or after
/// a sell-out does not multiply counters steps:
///
/// - one refill per bucket at a time (a bucket's requests that find it
///   short queue behind the one refilling it, then look at their bucket
///   again before refilling themselves) — locks by hash of the pool, a
///   fixed 64 of them;
/// - promotions found sold out in every bucket lately: for [`DRY_FOR`]
///   after, a request that does not fit its own bucket is answered sold
///   out without asking the others. The price: a unit given back (a
///   cancel, the audit) may wait up to [`DRY_FOR`] before a request from
///   another bucket finds it — one in the unit's own bucket finds it at
///   once. One entry per promotion that sold out (ids come from the admin
///   API, not from buyers), dropped when stale.
pub struct Refills {
    locks: Vec<tokio::sync::Mutex<()>>,
    dry_until: std::sync::Mutex<std::collections::HashMap<String, std::time::Instant>>,
}

impl Default for Refills {
    fn default() -> Self {
        Self {
            locks: (0..REFILL_LOCKS)
                .map(|_| tokio::sync::Mutex::new(()))
                .collect(),
            dry_until: Default::default(),
        }
    }
}

impl Refills {
    fn lock_for(&self, pool: &str) -> &tokio::sync::Mutex<()> {
        &self.locks[bucket_of(pool, REFILL_LOCKS as u32) as usize]
    }

    fn is_dry(&self, promotion: &str) -> bool {
        let until = self.dry_until.lock().unwrap_or_else(|p| p.into_inner());
        until
            .get(promotion)
            .is_some_and(|t| *t > std::time::Instant::now())
    }

    fn note_dry(&self, promotion: &str) {
        let now = std::time::Instant::now();
        let mut until = self.dry_until.lock().unwrap_or_else(|p| p.into_inner());
        until.retain(|_, t| *t > now);
        until.insert(promotion.to_string(), now + DRY_FOR);
    }
}

/// One admission in `holder`'s bucket ([`Counters::admit`], with `ticket`
/// when given), refilling the bucket from the others ([`refill`]) and
/// trying again while it has too few units. Answers
/// [`Admission::SoldOut`] when two refills in a row found no unit in any
/// other bucket and none on its way (a unit moving between buckets while
/// one pass looks at them in turn can slip past one pass; past two in a
/// row it would have to move twice), or after [`REFILL_ROUNDS`] rounds —
/// or, within [`DRY_FOR`] of such an answer in this process, when the
/// holder's own bucket has too few ([`Refills`]). Returns the answer and
/// the pool of `holder`'s bucket.
pub async fn take(
    counters: &dyn Counters,
    layout: &Layout<'_>,
    holder: &str,
    units: i64,
    limit: i64,
    ticket: Option<(&str, Duration)>,
    refills: &Refills,
) -> Result<(Admission, String), CountersError> {
    let pool = layout.pool(layout.home(holder));
    let first = counters.admit(&pool, holder, units, limit, ticket).await?;
    take_after(
        counters, layout, holder, units, limit, ticket, refills, first,
    )
    .await
}

/// [`take`] when the first admission step in `holder`'s bucket already
/// answered `first` (a coalesced step, [`crate::coalesce`]): goes on from
/// there without asking that bucket again.
#[allow(clippy::too_many_arguments)]
pub async fn take_after(
    counters: &dyn Counters,
    layout: &Layout<'_>,
    holder: &str,
    units: i64,
    limit: i64,
    ticket: Option<(&str, Duration)>,
    refills: &Refills,
    first: Admission,
) -> Result<(Admission, String), CountersError> {
    let bucket = layout.home(holder);
    let pool = layout.pool(bucket);
    let (mut rounds, mut quiet, mut pause) = (1, 0, MOVING_PAUSE);
    let mut answer = first;
    loop {
        if answer != Admission::SoldOut
            || layout.buckets == 1
            || rounds > REFILL_ROUNDS
            || refills.is_dry(layout.id)
        {
            return Ok((answer, pool));
        }
        let found = {
            let _only_refill_of_this_bucket = refills.lock_for(&pool).lock().await;
            // The refill queued before this one may have brought enough.
            answer = counters.admit(&pool, holder, units, limit, ticket).await?;
            rounds += 1;
            if answer != Admission::SoldOut {
                return Ok((answer, pool));
            }
            refill(counters, layout, bucket, units).await?
        };
        if found.arrived > 0 {
            quiet = 0;
        } else if found.moving {
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(MOVING_PAUSE * 16);
        } else {
            quiet += 1;
            if quiet == 2 {
                refills.note_dry(layout.id);
                return Ok((answer, pool));
            }
        }
        answer = counters.admit(&pool, holder, units, limit, ticket).await?;
        rounds += 1;
    }
}

/// Settles a transfer the audit found unsettled in `donor`'s pool: if the
/// receiving bucket got it, forgets it; otherwise cancels it there (a late
/// arrival is then refused) and gives the units back to `donor`. Returns
/// whether units went back.
pub async fn settle(
    counters: &dyn Counters,
    layout: &Layout<'_>,
    donor: &str,
    ticket: &str,
) -> Result<bool, CountersError> {
    let Some(to) = transfer_target(ticket).filter(|b| *b < layout.buckets) else {
        // A ticket of an earlier layout: nothing can receive it any more.
        return counters.release_ticket(donor, ticket).await;
    };
    if counters
        .cancel_in(&layout.pool(to), ticket, TRANSFER_MARK_TTL)
        .await?
    {
        counters.clear_tickets(donor, &[ticket]).await?;
        Ok(false)
    } else {
        counters.release_ticket(donor, ticket).await
    }
}

/// A bucket count read from a database, checked (1..=256).
#[cfg(feature = "service")]
pub fn stored_count(stored: i64) -> Result<u32, sqlx::Error> {
    u32::try_from(stored)
        .ok()
        .filter(|b| (1..=promo_contracts::MAX_BUCKETS).contains(b))
        .ok_or_else(|| sqlx::Error::Decode(format!("bucket count {stored} out of range").into()))
}

/// Checks a bucket count from an admin body or a Promotion.
pub fn check_count(buckets: u32) -> Result<(), String> {
    if (1..=promo_contracts::MAX_BUCKETS).contains(&buckets) {
        Ok(())
    } else {
        Err(format!(
            "buckets must be between 1 and {}",
            promo_contracts::MAX_BUCKETS
        ))
    }
}

/// The default bucket count of an admin body or a Promotion (serde).
pub fn one() -> u32 {
    1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_names() {
        let one = Layout::new("coupon", "c", 1);
        assert_eq!(one.pools(), vec!["coupon:c"]);
        assert_eq!(one.key(0), "c");
        let four = Layout::new("coupon", "c", 4);
        assert_eq!(four.pool(3), "coupon:c#3");
        assert_eq!(four.key(2), "c#2");
        assert_eq!(four.lock_name("rebuild"), "rebuild:coupon:c");
    }

    #[test]
    fn transfer_tickets_name_their_target() {
        let t = transfer_ticket(7);
        assert_eq!(transfer_target(&t), Some(7));
        assert_eq!(transfer_target("0190a6f2-request"), None);
    }
}
