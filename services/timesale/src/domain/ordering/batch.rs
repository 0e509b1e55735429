//! Deciding many orders of one sale in one transaction — the V3 consumer's
//! batches and V2's group commit share this. Under the sale's row lock
//! (taken by the caller; see `decide_unlocked` for the consumer's first
//! try without it) each order is checked in order: the user's units
//! against the per-user limit, the quantity against the stock left, no
//! partial fills. Then the users' units and the sold count move with one
//! statement each; the caller stores the orders it wants kept.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use promo_platform::ports::{sql, Dialect};
use sqlx::AnyConnection;

use crate::{
    domain::{Order, Sale, Strategy, TimesaleError},
    store,
};

/// One order of a batch.
pub(crate) struct Wanted<'a> {
    pub order_id: String,
    pub user_id: &'a str,
    pub quantity: i64,
    /// When the order was admitted: its creation time.
    pub at: DateTime<Utc>,
}

/// Decides `wanted`, in order, for `sale` whose row the caller has locked in
/// `tx`; moves units and stock. One decided order (confirmed or rejected
/// with its reason) per wanted one, in the same order.
pub(crate) async fn decide(
    tx: &mut AnyConnection,
    dialect: Dialect,
    sale: &Sale,
    wanted: &[Wanted<'_>],
    strategy: Strategy,
) -> Result<Vec<Order>, TimesaleError> {
    let held = store::user_units(tx, dialect, &sale.id, &users(wanted)).await?;
    let plan = plan(sale, &held, wanted);
    if !write(tx, dialect, sale, &held, &plan).await? {
        // Cannot happen under the row lock; refuse the batch rather than oversell.
        return Err(TimesaleError::SoldOut(plan.taken));
    }
    Ok(orders(sale, wanted, &plan, strategy))
}

/// [`decide`] without the sale's row lock, for the V3 consumer, whose
/// partitions' transactions of one sale then overlap instead of queueing
/// for the row from their first statement: the sold count moves in the
/// conditional update at the end (the row is locked from there to the
/// commit only). Confirms every order or nothing: `None`, with nothing
/// written, when any would be refused from what this transaction read (a
/// cancel may have returned stock since) or when the stock is gone by the
/// time the count moves — the caller then locks the row and decides again.
/// The users' units are read with a locking read (`FOR UPDATE` on MySQL):
/// a user's orders are normally on one partition, but after a change of
/// the topic's partition count two transactions can hold orders of one
/// user, and then the second waits for the first's rows (or, for a user
/// with no row yet, deadlocks on the gap and is retried) instead of
/// planning from the same units; a redelivered order collides on its id.
/// Tested: `a_users_orders_on_two_partitions_stay_within_the_limit`.
pub(crate) async fn decide_unlocked(
    tx: &mut AnyConnection,
    dialect: Dialect,
    sale: &Sale,
    wanted: &[Wanted<'_>],
    strategy: Strategy,
) -> Result<Option<Vec<Order>>, TimesaleError> {
    let held = store::user_units(tx, dialect, &sale.id, &users(wanted)).await?;
    let plan = plan(sale, &held, wanted);
    if plan.outcomes.iter().any(Result::is_err) {
        return Ok(None);
    }
    sql::savepoint(tx, "unlocked").await?;
    if write(tx, dialect, sale, &held, &plan).await? {
        return Ok(Some(orders(sale, wanted, &plan, strategy)));
    }
    sql::rollback_to(tx, "unlocked").await?;
    Ok(None)
}

fn users<'a>(wanted: &[Wanted<'a>]) -> Vec<&'a str> {
    wanted.iter().map(|w| w.user_id).collect()
}

/// What a batch decided: each order's outcome, the users' units after it
/// and the units taken from the stock.
struct Plan<'a> {
    outcomes: Vec<Result<(), &'static str>>,
    units: HashMap<&'a str, i64>,
    taken: i64,
}

fn plan<'a>(sale: &Sale, held: &HashMap<String, i64>, wanted: &[Wanted<'a>]) -> Plan<'a> {
    let mut units: HashMap<&str, i64> = HashMap::new();
    let mut available = sale.spec.stock - sale.sold;
    let mut taken = 0;
    let mut outcomes = Vec::with_capacity(wanted.len());
    for w in wanted {
        let h = units
            .entry(w.user_id)
            .or_insert_with(|| held.get(w.user_id).copied().unwrap_or(0));
        outcomes.push(
            if w.quantity < 1 || *h + w.quantity > sale.spec.per_user_limit {
                Err("limit_exceeded")
            } else if available < w.quantity {
                Err("sold_out")
            } else {
                *h += w.quantity;
                available -= w.quantity;
                taken += w.quantity;
                Ok(())
            },
        );
    }
    Plan {
        outcomes,
        units,
        taken,
    }
}

/// Writes the users' changed units and takes the stock, if the stock still
/// allows it; returns whether it did.
async fn write(
    tx: &mut AnyConnection,
    dialect: Dialect,
    sale: &Sale,
    held: &HashMap<String, i64>,
    plan: &Plan<'_>,
) -> Result<bool, TimesaleError> {
    let changed: HashMap<&str, i64> = plan
        .units
        .iter()
        .filter(|(u, n)| held.get(**u).copied().unwrap_or(0) != **n)
        .map(|(u, n)| (*u, *n))
        .collect();
    store::set_user_units(tx, dialect, &sale.id, &changed).await?;
    let held = sale.held_part(plan.taken);
    Ok(plan.taken == 0 || store::take_stock(tx, &sale.id, plan.taken, held).await?)
}

fn orders(sale: &Sale, wanted: &[Wanted<'_>], plan: &Plan<'_>, strategy: Strategy) -> Vec<Order> {
    wanted
        .iter()
        .zip(&plan.outcomes)
        .map(|(w, outcome)| {
            Order::decided(
                w.order_id.clone(),
                sale,
                w.user_id,
                w.quantity,
                strategy,
                *outcome,
                w.at,
            )
        })
        .collect()
}
