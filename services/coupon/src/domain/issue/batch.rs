//! Deciding many issue requests of one campaign in one transaction — the V3
//! consumer's batches and V2's group commit share this. Under the campaign's
//! row lock (taken by the caller) each request is checked in order against
//! the user's coupons and the quota left; then the coupons go in with
//! multi-row inserts and the issued count moves once, through the same
//! conditional update as a single issue.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use promo_platform::ports::Dialect;
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
    let users: Vec<&str> = wanted.iter().map(|w| w.user_id).collect();
    let mut held: HashMap<String, i64> =
        store::count_users_coupons(tx, dialect, &c.id, &users).await?;
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
    let rows: Vec<NewCoupon> = answers
        .iter()
        .zip(wanted)
        .filter_map(|(a, w)| Some((a.as_ref().ok()?, w)))
        .zip(&seqs)
        .map(|((coupon, w), seq)| NewCoupon {
            coupon,
            seq: *seq,
            request_id: w.request_id,
        })
        .collect();
    store::insert_coupons(tx, &rows).await?;
    if !rows.is_empty() && !store::add_issued(tx, &c.id, rows.len() as i64).await? {
        // Cannot happen under the row lock; refuse the batch rather than oversell.
        return Err(CouponError::SoldOut);
    }
    Ok(answers)
}
