//! The mutations: earn, use, refund — and expiry, which every one of them
//! (and every balance read, and the periodic sweep) runs first through the
//! same function, so lazy and swept expiry cannot disagree.
//!
//! Each mutation is one transaction that appends its entries, moves the
//! lots and writes the account with **optimistic locking**: the account
//! row is read without a lock and written back `WHERE version = ?`; if
//! another mutation got there first, no row matches, everything rolls back
//! and the operation runs again (bounded, with random growing pauses); when
//! retries run out the answer is 409 `conflict`. Optimistic because an
//! account is written by its own user's requests — rarely at once — while
//! reads are frequent: no read waits on a lock, and the rare collision costs
//! a retry instead of a held row lock for every read-modify-write.
//!
//! The same transaction claims the request's Idempotency-Key and stores the
//! answer with it: a replay finds the key and returns that answer, writing
//! nothing; a concurrent replay waits on the key's row and does the same.

use std::time::Duration;

use chrono::{DateTime, Utc};
use promo_platform::time::to_ms;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sqlx::AnyConnection;
use utoipa::ToSchema;

use super::{Entry, Kind, PointError};
use crate::{store, PointService, SERVICE};

/// Most points one operation may move (keeps sums far from overflow).
pub const MAX_POINTS: i64 = 1_000_000_000_000;

/// A mutation, as its body asked for it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "op", rename_all = "camelCase")]
pub enum Op {
    #[serde(rename_all = "camelCase")]
    Earn {
        amount: i64,
        reason: String,
        expires_at: Option<DateTime<Utc>>,
    },
    #[serde(rename_all = "camelCase")]
    Use {
        amount: i64,
        reason: String,
        order_id: Option<String>,
    },
    #[serde(rename_all = "camelCase")]
    Refund { entry_id: String },
}

impl Op {
    pub fn kind(&self) -> Kind {
        match self {
            Op::Earn { .. } => Kind::Earn,
            Op::Use { .. } => Kind::Use,
            Op::Refund { .. } => Kind::Refund,
        }
    }

    fn validate(&self, now: DateTime<Utc>) -> Result<(), PointError> {
        let bad = |m: &str| Err(PointError::Invalid(m.to_string()));
        let reason_ok = |r: &str| !r.trim().is_empty() && r.len() <= 255;
        match self {
            Op::Earn {
                amount,
                reason,
                expires_at,
            } => {
                if !(1..=MAX_POINTS).contains(amount) {
                    return bad("amount must be between 1 and 10^12");
                }
                if !reason_ok(reason) {
                    return bad("reason must be 1 to 255 bytes");
                }
                if expires_at.is_some_and(|t| t <= now) {
                    return bad("expiresAt must be in the future");
                }
            }
            Op::Use { amount, reason, .. } => {
                if !(1..=MAX_POINTS).contains(amount) {
                    return bad("amount must be between 1 and 10^12");
                }
                if !reason_ok(reason) {
                    return bad("reason must be 1 to 255 bytes");
                }
            }
            Op::Refund { entry_id } => {
                if entry_id.is_empty() || entry_id.len() > 36 {
                    return bad("entryId must be an entry id");
                }
            }
        }
        Ok(())
    }

    /// What identifies the request behind an Idempotency-Key.
    fn fingerprint(&self) -> String {
        let canonical = serde_json::to_vec(self).unwrap_or_default();
        Sha256::digest(&canonical)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }
}

/// What a mutation answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Applied {
    pub entry_id: String,
    pub balance: i64,
}

/// Runs `op` for `user` under Idempotency-Key `key`.
pub async fn apply(
    svc: &PointService,
    user: &str,
    key: &str,
    op: Op,
) -> Result<Applied, PointError> {
    op.validate(Utc::now())?;
    let hash = op.fingerprint();
    let result = with_optimistic_retry(svc, || attempt(svc, user, key, &hash, &op)).await;
    let result = match result {
        Ok((outcome, changed_to)) => {
            if let Some(version) = changed_to {
                svc.invalidate(user, version).await;
            }
            outcome
        }
        Err(e) => Err(e),
    };
    let outcome = match &result {
        Ok(_) => "ok",
        Err(e) => e.outcome(),
    };
    svc.metrics
        .ledger_operations
        .with_label_values(&[SERVICE, op.kind().label(), outcome])
        .inc();
    result
}

/// Runs `f` again while it reports [`PointError::Stale`], at most
/// `settings.attempts` times, with random growing pauses; then 409 conflict.
pub(crate) async fn with_optimistic_retry<T, F, Fut>(
    svc: &PointService,
    mut f: F,
) -> Result<T, PointError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, PointError>>,
{
    let mut attempt = 1;
    loop {
        match f().await {
            Err(PointError::Stale) if attempt < svc.settings.attempts => {
                svc.metrics
                    .optimistic_retries
                    .with_label_values(&[SERVICE])
                    .inc();
                let cap_ms = 1u64 << attempt.min(6);
                let pause = rand::random_range(0..=cap_ms * 1000);
                tokio::time::sleep(Duration::from_micros(pause)).await;
                attempt += 1;
            }
            Err(PointError::Stale) => {
                svc.metrics
                    .optimistic_conflicts
                    .with_label_values(&[SERVICE])
                    .inc();
                return Err(PointError::Conflict);
            }
            other => return other,
        }
    }
}

/// One try. `Ok((answer, Some(version)))` when the account moved to
/// `version`; the answer may itself be a stored refusal.
async fn attempt(
    svc: &PointService,
    user: &str,
    key: &str,
    hash: &str,
    op: &Op,
) -> Result<(Result<Applied, PointError>, Option<i64>), PointError> {
    let mut tx = svc.db.pool().begin().await?;
    store::ensure_account(&mut tx, svc.db.dialect(), user).await?;
    if !store::claim_key(&mut tx, user, key, hash).await? {
        drop(tx);
        return Ok((replay(svc, user, key, hash).await?, None));
    }
    let now = Utc::now();
    let account = store::read_account(&mut tx, user).await?;
    let mut balance = expire_due(&mut tx, user, account.balance, now).await?;
    let outcome = match op {
        Op::Earn {
            amount,
            reason,
            expires_at,
        } => {
            earn(
                &mut tx,
                user,
                &mut balance,
                *amount,
                reason,
                *expires_at,
                now,
            )
            .await
        }
        Op::Use {
            amount,
            reason,
            order_id,
        } => {
            spend(
                &mut tx,
                user,
                &mut balance,
                *amount,
                reason,
                order_id.as_deref(),
                now,
            )
            .await
        }
        Op::Refund { entry_id } => refund(&mut tx, user, &mut balance, entry_id, now).await,
    };
    let outcome = match outcome {
        Err(e) if e.stored().is_none() => return Err(e),
        o => o,
    };
    let changed = balance != account.balance || outcome.is_ok();
    if changed && !store::update_account(&mut tx, user, balance, account.version).await? {
        return Err(PointError::Stale);
    }
    let (status, body) = match &outcome {
        Ok(applied) => (200, serde_json::to_string(applied).unwrap_or_default()),
        Err(e) => {
            let (status, code) = e.stored().unwrap_or((500, "error"));
            let body = serde_json::json!({"code": code, "detail": e.to_string()});
            (status, body.to_string())
        }
    };
    store::finish_key(&mut tx, user, key, i64::from(status), &body).await?;
    tx.commit().await?;
    Ok((outcome, changed.then_some(account.version + 1)))
}

/// The first answer stored under `key`, if the request is the same.
async fn replay(
    svc: &PointService,
    user: &str,
    key: &str,
    hash: &str,
) -> Result<Result<Applied, PointError>, PointError> {
    // The row is committed with its answer, or gone with a rolled-back
    // first attempt (then run again).
    let Some((stored_hash, status, body)) = store::read_key(svc.db.pool(), user, key).await? else {
        return Err(PointError::Stale);
    };
    if stored_hash != hash {
        return Ok(Err(PointError::IdempotencyKeyReused));
    }
    if status == 200 {
        return Ok(
            serde_json::from_str::<Applied>(&body).map_err(|e| PointError::Invalid(e.to_string()))
        );
    }
    let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
    Ok(Err(PointError::Replayed {
        status: u16::try_from(status).unwrap_or(500),
        code: v["code"].as_str().unwrap_or("error").to_string(),
        detail: v["detail"].as_str().unwrap_or_default().to_string(),
    }))
}

fn entry(
    user: &str,
    kind: Kind,
    amount: i64,
    balance_after: i64,
    reason: &str,
    now: DateTime<Utc>,
) -> Entry {
    Entry {
        seq: 0,
        entry_id: uuid::Uuid::now_v7().to_string(),
        user_id: user.to_string(),
        kind,
        amount,
        balance_after,
        reason: reason.to_string(),
        order_id: None,
        expires_at: None,
        refund_of: None,
        created_at: now,
    }
}

/// Expires every lot of `user` whose time has come: an EXPIRE entry per
/// lot for what was left of it. Returns the balance after.
pub(crate) async fn expire_due(
    tx: &mut AnyConnection,
    user: &str,
    mut balance: i64,
    now: DateTime<Utc>,
) -> Result<i64, PointError> {
    for lot in store::due_lots(tx, user, to_ms(now)).await? {
        if !store::move_lot(tx, &lot.lot_id, -lot.remaining).await? {
            return Err(PointError::Stale);
        }
        balance -= lot.remaining;
        let mut e = entry(user, Kind::Expire, -lot.remaining, balance, "expired", now);
        e.expires_at = lot.expires_at.map(promo_platform::time::from_ms);
        store::append(tx, &e, Some(&lot.lot_id)).await?;
    }
    Ok(balance)
}

async fn earn(
    tx: &mut AnyConnection,
    user: &str,
    balance: &mut i64,
    amount: i64,
    reason: &str,
    expires_at: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Result<Applied, PointError> {
    *balance = balance
        .checked_add(amount)
        .filter(|b| *b <= MAX_POINTS * 1000)
        .ok_or_else(|| PointError::Invalid("the balance would overflow".into()))?;
    let mut e = entry(user, Kind::Earn, amount, *balance, reason, now);
    e.expires_at = expires_at;
    store::append(tx, &e, None).await?;
    store::insert_lot(tx, &e.entry_id, user, amount, expires_at.map(to_ms)).await?;
    Ok(Applied {
        entry_id: e.entry_id,
        balance: *balance,
    })
}

/// A USE consumes the soonest-expiring lots first and records which.
async fn spend(
    tx: &mut AnyConnection,
    user: &str,
    balance: &mut i64,
    amount: i64,
    reason: &str,
    order_id: Option<&str>,
    now: DateTime<Utc>,
) -> Result<Applied, PointError> {
    if amount > *balance {
        return Err(PointError::InsufficientBalance {
            balance: *balance,
            amount,
        });
    }
    let mut e = entry(user, Kind::Use, -amount, *balance - amount, reason, now);
    e.order_id = order_id.map(str::to_string);
    store::append(tx, &e, None).await?;
    let mut left = amount;
    for lot in store::spendable_lots(tx, user, to_ms(now)).await? {
        if left == 0 {
            break;
        }
        let take = left.min(lot.remaining);
        if !store::move_lot(tx, &lot.lot_id, -take).await? {
            return Err(PointError::Stale);
        }
        store::record_lot_use(tx, &e.entry_id, &lot.lot_id, take).await?;
        left -= take;
    }
    if left > 0 {
        // The balance and the lots disagree: a concurrent change; run again.
        return Err(PointError::Stale);
    }
    *balance -= amount;
    Ok(Applied {
        entry_id: e.entry_id,
        balance: *balance,
    })
}

/// Reverses one USE, once: the lots it consumed get their points back (and
/// those whose time has passed expire again right away).
async fn refund(
    tx: &mut AnyConnection,
    user: &str,
    balance: &mut i64,
    use_id: &str,
    now: DateTime<Utc>,
) -> Result<Applied, PointError> {
    let used = match store::get_entry(tx, use_id).await? {
        Some(e) if e.user_id == user => e,
        _ => return Err(PointError::EntryNotFound(use_id.to_string())),
    };
    if used.kind != Kind::Use {
        return Err(PointError::NotRefundable(use_id.to_string()));
    }
    if store::refunded(tx, use_id).await? {
        return Err(PointError::AlreadyRefunded(use_id.to_string()));
    }
    for (lot_id, amount) in store::lot_uses(tx, use_id).await? {
        if !store::move_lot(tx, &lot_id, amount).await? {
            return Err(PointError::Stale);
        }
    }
    let amount = -used.amount;
    *balance += amount;
    let mut e = entry(
        user,
        Kind::Refund,
        amount,
        *balance,
        &format!("refund of {use_id}"),
        now,
    );
    e.refund_of = Some(use_id.to_string());
    if let Err(err) = store::append(tx, &e, None).await {
        // A concurrent refund of the same use committed first.
        return Err(if promo_platform::ports::sql::is_unique_violation(&err) {
            PointError::Stale
        } else {
            err.into()
        });
    }
    let entry_id = e.entry_id;
    *balance = expire_due(tx, user, *balance, now).await?;
    Ok(Applied {
        entry_id,
        balance: *balance,
    })
}

/// Expires `user`'s due points now (a balance read, the sweep).
pub async fn expire_now(svc: &PointService, user: &str) -> Result<(), PointError> {
    let changed = with_optimistic_retry(svc, || async {
        let mut tx = svc.db.pool().begin().await?;
        let account = store::read_account(&mut tx, user).await?;
        let balance = expire_due(&mut tx, user, account.balance, Utc::now()).await?;
        if balance == account.balance {
            return Ok(None);
        }
        if !store::update_account(&mut tx, user, balance, account.version).await? {
            return Err(PointError::Stale);
        }
        tx.commit().await?;
        Ok(Some(account.version + 1))
    })
    .await?;
    if let Some(version) = changed {
        svc.invalidate(user, version).await;
        svc.metrics
            .ledger_operations
            .with_label_values(&[SERVICE, "expire", "ok"])
            .inc();
    }
    Ok(())
}
