//! Deciding many orders of one sale in one transaction — the V3 consumer's
//! batches and V2's group commit share this. Under the sale's row lock
//! (taken by the caller) each order is checked in order: the user's units
//! against the per-user limit, the quantity against the stock left, no
//! partial fills. Then the users' units and the sold count move with one
//! statement each; the caller stores the orders it wants kept.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use promo_platform::ports::Dialect;
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
    wanted: Vec<Wanted<'_>>,
    strategy: Strategy,
) -> Result<Vec<Order>, TimesaleError> {
    let users: Vec<&str> = wanted.iter().map(|w| w.user_id).collect();
    let held = store::user_units(tx, dialect, &sale.id, &users).await?;
    let mut units: HashMap<&str, i64> = HashMap::new();
    let mut available = sale.spec.stock - sale.sold;
    let mut taken = 0;
    let mut orders = Vec::with_capacity(wanted.len());
    for w in wanted {
        let h = units
            .entry(w.user_id)
            .or_insert_with(|| held.get(w.user_id).copied().unwrap_or(0));
        let outcome = if w.quantity < 1 || *h + w.quantity > sale.spec.per_user_limit {
            Err("limit_exceeded")
        } else if available < w.quantity {
            Err("sold_out")
        } else {
            *h += w.quantity;
            available -= w.quantity;
            taken += w.quantity;
            Ok(())
        };
        orders.push(Order::decided(
            w.order_id, sale, w.user_id, w.quantity, strategy, outcome, w.at,
        ));
    }
    let changed: HashMap<&str, i64> = units
        .into_iter()
        .filter(|(u, n)| held.get(*u).copied().unwrap_or(0) != *n)
        .collect();
    store::set_user_units(tx, dialect, &sale.id, &changed).await?;
    if taken > 0 && !store::take_stock(tx, &sale.id, taken).await? {
        // Cannot happen under the row lock; refuse the batch rather than oversell.
        return Err(TimesaleError::SoldOut(taken));
    }
    Ok(orders)
}
