//! Deciding many issue requests of one campaign in one transaction — the V3
//! consumer's batches and V2's group commit share this. Under the campaign's
//! row lock (taken by the caller) each request is checked in order against
//! the user's coupons and the quota left; then the coupons go in with
//! multi-row inserts and the issued count moves once, through the same
//! conditional update as a single issue.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use promo_platform::ports::{sql, Dialect};
use sqlx::AnyConnection;

use crate::{
    domain::{Campaign, Coupon, CouponError},
    store::{self, NewCoupon},
};

/// One request of a batch.
pub(crate) struct Wanted<'a> {
    pub user_id: &'a str,
    /// The request id stored with the coupon: V3's, or an idempotency
    /// key's effect id (V2); none for a V2 request without a key.
    pub request_id: Option<&'a str>,
    /// When the request was admitted: the coupon's issue time.
    pub at: DateTime<Utc>,
}

/// Why a request of a batch got no coupon.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refused {
    /// The user holds this many coupons, the per-user limit.
    AlreadyIssued(i64),
    SoldOut,
}

impl Refused {
    /// The reason stored with a V3 request.
    pub fn reason(self) -> &'static str {
        match self {
            Refused::AlreadyIssued(_) => "already_issued",
            Refused::SoldOut => "sold_out",
        }
    }
}

impl From<Refused> for CouponError {
    fn from(r: Refused) -> Self {
        match r {
            Refused::AlreadyIssued(n) => CouponError::AlreadyIssued(n),
            Refused::SoldOut => CouponError::SoldOut,
        }
    }
}

/// Decides `wanted`, in order, for campaign `c` whose row the caller has
/// locked in `tx`, and writes the coupons and the issued count. One answer
/// per request, in the same order.
pub(crate) async fn decide(
    tx: &mut AnyConnection,
    dialect: Dialect,
    c: &Campaign,
    wanted: &[Wanted<'_>],
) -> Result<Vec<Result<Coupon, Refused>>, CouponError> {
    let held = store::count_users_coupons(tx, dialect, &c.id, &users(wanted)).await?;
    let (answers, seqs) = plan(c, held, wanted);
    if !write(tx, dialect, c, &answers, wanted, &seqs).await? {
        // Cannot happen under the row lock; refuse the batch rather than oversell.
        return Err(CouponError::SoldOut);
    }
    Ok(answers)
}

/// [`decide`] without the campaign's row lock, for the V3 consumer, whose
/// partitions' transactions of one campaign then overlap instead of
/// queueing for the row from their first statement: the issued count moves
/// in the conditional update at the end (the row is locked from there to
/// the commit only). Issues every request or nothing: `None`, with nothing
/// written, when any would be refused from what this transaction read or
/// when the quota is gone by the time the count moves (another partition's
/// transaction took it) — the caller then locks the row and decides again.
/// A user's coupons counted here cannot be outdated by another consumer:
/// each user's events are on one partition, and two transactions that
/// still raced on one user would collide on the UNIQUE (campaign, user,
/// seq) key, failing the batch, which is retried.
pub(crate) async fn decide_unlocked(
    tx: &mut AnyConnection,
    dialect: Dialect,
    c: &Campaign,
    wanted: &[Wanted<'_>],
) -> Result<Option<Vec<Result<Coupon, Refused>>>, CouponError> {
    let held = store::count_users_coupons(tx, dialect, &c.id, &users(wanted)).await?;
    let (answers, seqs) = plan(c, held, wanted);
    if answers.iter().any(Result::is_err) {
        return Ok(None);
    }
    sql::savepoint(tx, "unlocked").await?;
    if write(tx, dialect, c, &answers, wanted, &seqs).await? {
        return Ok(Some(answers));
    }
    sql::rollback_to(tx, "unlocked").await?;
    Ok(None)
}

fn users<'a>(wanted: &[Wanted<'a>]) -> Vec<&'a str> {
    wanted.iter().map(|w| w.user_id).collect()
}

/// The answer to each of `wanted`, in order, given the coupons each user
/// holds and the campaign's count as read; and the issued coupons' `seq`.
fn plan(
    c: &Campaign,
    mut held: HashMap<String, i64>,
    wanted: &[Wanted<'_>],
) -> (Vec<Result<Coupon, Refused>>, Vec<i64>) {
    let mut available = c.spec.quota - c.issued;
    let mut answers = Vec::with_capacity(wanted.len());
    let mut seqs = Vec::new();
    for w in wanted {
        let h = held.entry(w.user_id.to_string()).or_insert(0);
        answers.push(if *h >= c.spec.per_user_limit {
            Err(Refused::AlreadyIssued(*h))
        } else if available <= 0 {
            Err(Refused::SoldOut)
        } else {
            *h += 1;
            available -= 1;
            seqs.push(*h);
            Ok(Coupon::issue(c, w.user_id, w.at))
        });
    }
    (answers, seqs)
}

/// Inserts the issued coupons and moves the count, if the quota still
/// allows it; returns whether it did.
async fn write(
    tx: &mut AnyConnection,
    dialect: Dialect,
    c: &Campaign,
    answers: &[Result<Coupon, Refused>],
    wanted: &[Wanted<'_>],
    seqs: &[i64],
) -> Result<bool, CouponError> {
    let rows: Vec<NewCoupon> = answers
        .iter()
        .zip(wanted)
        .filter_map(|(a, w)| Some((a.as_ref().ok()?, w)))
        .zip(seqs)
        .map(|((coupon, w), seq)| NewCoupon {
            coupon,
            seq: *seq,
            request_id: w.request_id,
        })
        .collect();
    store::insert_coupons(tx, &rows).await?;
    Ok(rows.is_empty() || store::add_issued(tx, dialect, &c.id, rows.len() as i64).await?)
}
