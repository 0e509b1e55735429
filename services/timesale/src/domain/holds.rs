//! Holds: a sale with `holdSeconds` sells HELD orders. The buyer confirms
//! one with a payment reference before `holdExpiresAt`; otherwise it
//! expires and its units go back to the sale and to the user's limit.
//!
//! **Exactly once.** Every way out of HELD — confirm, cancel, expiry by the
//! sweep, expiry found by a late confirm — is one database transaction that
//! holds the order's row lock and moves the status with a conditional
//! update (`WHERE status = 'HELD'`). Whichever transaction commits first
//! decides; the others then read the new status and change nothing. The
//! units go back to the sale's row (`sold`, `held`) and the user's row in
//! that same transaction, so the database counts them back once.
//!
//! **The counters** (V2, V3) get the units back after the commit. The
//! transaction also writes a *restock* row; the process that committed it
//! gives the units to the counters with `Counters::release_once` keyed
//! by the order id, then deletes the row. If it dies in between, the next
//! sweep (any replica) finds the row and does it again: the counters
//! remember the order id, so they take the units once. If the counters
//! lost the pool meanwhile (Redis flushed, or the in-process counters of a
//! restarted embedded process), the rebuild counts the rows not yet
//! deleted as still taken, and their units arrive once the pool is back.
//!
//! **The sweep** runs on every replica every `--timesale-hold-sweep-ms`. It
//! claims up to [`SWEEP_BATCH`] due holds with `FOR UPDATE SKIP LOCKED`, so
//! two replicas' sweeps take disjoint batches and neither waits for a
//! confirm in progress. Nothing lives in memory: a restarted replica finds
//! the due holds in the database. A read of a due hold shows EXPIRED even
//! before the sweep reaches it ([`Order::as_of`]).

use std::{sync::Arc, time::Duration};

use chrono::Utc;
use promo_platform::{
    outbox,
    ports::{with_conflict_retry, Dialect, Released},
    queued::Core,
    shield::to_completion,
    time::{now_ms, to_ms},
};
use sqlx::AnyConnection;
use tokio_util::sync::CancellationToken;

use crate::{
    domain::{
        cancel::{lock_decided, on_decided_order},
        Order, OrderStatus, TimesaleError,
    },
    store::{self, Restock},
    Sales, TimesaleService, SERVICE,
};

/// Most due holds one sweep transaction expires.
pub const SWEEP_BATCH: usize = 200;
/// A restock row this old was left by a process that died after its
/// commit; the sweep gives its units to the counters.
pub const RESTOCK_GRACE: Duration = Duration::from_secs(5);
/// How long the counters remember an order's restock. Far longer than a
/// restock row can wait while the counters answer.
pub const RESTOCK_MEMORY: Duration = Duration::from_secs(24 * 3600);
/// Longest a payment reference may be.
pub const MAX_PAYMENT_REF: usize = 128;

/// Moves `order` (locked in `tx`, status HELD or CONFIRMED) to `to` and
/// gives its units back to the sale and the user, recording the restock
/// for the counters and the change's event. None when the order was no
/// longer in its status.
pub async fn give_back(
    tx: &mut AnyConnection,
    order: &Order,
    to: OrderStatus,
) -> Result<Option<Restock>, TimesaleError> {
    if !store::move_order(tx, &order.order_id, order.status, to, None).await? {
        return Ok(None);
    }
    let restock = Restock {
        order_id: order.order_id.clone(),
        sale: order.sale.clone().unwrap_or_default(),
        user_id: order.user_id.clone().unwrap_or_default(),
        quantity: order.quantity.unwrap_or(0),
    };
    let was_held = order.status == OrderStatus::Held;
    store::return_units(
        tx,
        &restock.sale,
        &restock.user_id,
        restock.quantity,
        was_held,
    )
    .await?;
    store::insert_restocks(tx, std::slice::from_ref(&restock)).await?;
    let ended = Order {
        status: to,
        ..order.clone()
    };
    outbox::record(tx, ended.event().as_slice()).await?;
    Ok(Some(restock))
}

/// Gives committed restocks' units to the counters (once per order) and
/// forgets them. A restock whose pool is missing waits, and the pool is
/// rebuilt: the rebuild counts unforgotten restocks as still taken
/// (`Sale::restocking`), so the units arrive once the pool is back. A
/// failure leaves the row for the next sweep.
pub async fn restock(svc: &TimesaleService, restocks: &[Restock]) {
    for r in restocks {
        match restock_one(svc, r).await {
            Ok(true) => {}
            Ok(false) => tracing::debug!(order = %r.order_id, "restock waits for its pool"),
            Err(e) => {
                tracing::warn!(error = %e, order = %r.order_id, "restock left for the next sweep")
            }
        }
    }
}

/// Whether the restock is done (and forgotten).
async fn restock_one(svc: &TimesaleService, r: &Restock) -> Result<bool, TimesaleError> {
    match svc.core.promotion(&r.sale).await {
        Ok(sale) if sale.spec.counted() => {
            let pool = Core::<Sales>::holder_pool(&sale, &r.user_id);
            let released = svc
                .core
                .counters
                .release_once(&pool, &r.user_id, r.quantity, &r.order_id, RESTOCK_MEMORY)
                .await?;
            if released == Released::Missing {
                svc.core.trigger_rebuild(&r.sale);
                return Ok(false);
            }
        }
        // No counters (V1), or no sale any more: nothing to give.
        Ok(_) | Err(TimesaleError::UnknownSale(_)) => {}
        Err(e) => return Err(e),
    }
    store::delete_restock(svc.core.db.pool(), &r.order_id).await?;
    Ok(true)
}

/// `POST /orders/{id}/confirm`. Runs to completion even if the client goes
/// away, so a hold it expires is always restocked.
pub async fn confirm(
    svc: &Arc<TimesaleService>,
    order_id: &str,
    payment_ref: &str,
) -> Result<Order, TimesaleError> {
    if payment_ref.is_empty() || payment_ref.len() > MAX_PAYMENT_REF {
        return Err(TimesaleError::InvalidPaymentRef(format!(
            "paymentRef must be 1 to {MAX_PAYMENT_REF} bytes"
        )));
    }
    let (svc, order_id, payment_ref) = (svc.clone(), order_id.to_string(), payment_ref.to_string());
    to_completion(async move {
        let (answer, restocked) = on_decided_order(&svc, &order_id, || {
            with_conflict_retry(svc.settings.tx_attempts, || {
                confirm_in_transaction(&svc, &order_id, &payment_ref)
            })
        })
        .await?;
        if let Some(r) = restocked {
            svc.core
                .metrics
                .holds
                .with_label_values(&[SERVICE, "expired"])
                .inc();
            restock(&svc, &[r]).await;
        }
        answer
    })
    .await
}

type Confirmed = (Result<Order, TimesaleError>, Option<Restock>);

async fn confirm_in_transaction(
    svc: &TimesaleService,
    order_id: &str,
    payment_ref: &str,
) -> Result<Confirmed, TimesaleError> {
    let mut tx = svc.core.db.pool().begin().await?;
    let mut order = lock_decided(svc, &mut tx, order_id, |m| {
        TimesaleError::NotHeld(format!("{m}; confirm it once it is HELD"))
    })
    .await?;
    let now = Utc::now();
    let expired = || TimesaleError::HoldExpired(format!("the hold of order {order_id:?} expired"));
    match order.status {
        OrderStatus::Held if order.hold_due(now) => {
            // Due, and the sweep has not got to it: expire it here.
            let restock = give_back(&mut tx, &order, OrderStatus::Expired).await?;
            tx.commit().await?;
            Ok((Err(expired()), restock))
        }
        OrderStatus::Held => {
            let (sale, quantity) = (order.sale.clone().unwrap_or_default(), order.quantity);
            if !store::move_order(
                &mut tx,
                order_id,
                OrderStatus::Held,
                OrderStatus::Confirmed,
                Some(payment_ref),
            )
            .await?
            {
                // Unreachable under the row lock.
                return Err(TimesaleError::NotHeld(format!(
                    "order {order_id:?} changed while confirming; retry"
                )));
            }
            store::release_held(&mut tx, &sale, quantity.unwrap_or(0)).await?;
            order.status = OrderStatus::Confirmed;
            order.payment_ref = Some(payment_ref.to_string());
            outbox::record(&mut tx, order.event().as_slice()).await?;
            tx.commit().await?;
            // From the order (a V3 order's admission) to its confirmation.
            if let Some(ordered) = order.created_at {
                let waited = (now - ordered).num_milliseconds().max(0);
                svc.core
                    .metrics
                    .hold_confirm_duration
                    .with_label_values(&[SERVICE])
                    .observe(waited as f64 / 1000.0);
            }
            svc.core
                .metrics
                .holds
                .with_label_values(&[SERVICE, "confirmed"])
                .inc();
            Ok((Ok(order), None))
        }
        OrderStatus::Confirmed if order.payment_ref.as_deref() == Some(payment_ref) => {
            Ok((Ok(order), None))
        }
        OrderStatus::Confirmed if order.payment_ref.is_some() => Ok((
            Err(TimesaleError::AlreadyConfirmed(format!(
                "order {order_id:?} was confirmed with another paymentRef"
            ))),
            None,
        )),
        OrderStatus::Expired => Ok((Err(expired()), None)),
        other => Ok((
            Err(TimesaleError::NotHeld(format!(
                "order {order_id:?} is {} and not held",
                other.as_str()
            ))),
            None,
        )),
    }
}

/// One sweep: expires due holds, [`SWEEP_BATCH`] per transaction, until
/// none is left, then gives the counters what earlier runs left behind.
/// Returns how many holds it expired.
pub async fn sweep(svc: &TimesaleService) -> Result<u64, TimesaleError> {
    let mut expired = 0;
    loop {
        let restocks = with_conflict_retry(svc.settings.tx_attempts, || expire_batch(svc)).await?;
        expired += restocks.len() as u64;
        svc.core
            .metrics
            .holds
            .with_label_values(&[SERVICE, "expired"])
            .inc_by(restocks.len() as u64);
        restock(svc, &restocks).await;
        if restocks.len() < SWEEP_BATCH {
            break;
        }
    }
    let grace = to_ms(Utc::now()) - RESTOCK_GRACE.as_millis() as i64;
    let left = store::restocks_before(svc.core.db.pool(), grace, SWEEP_BATCH).await?;
    if !left.is_empty() {
        tracing::info!(
            restocks = left.len(),
            "giving the counters restocks an earlier run committed but did not finish"
        );
        restock(svc, &left).await;
    }
    Ok(expired)
}

async fn expire_batch(svc: &TimesaleService) -> Result<Vec<Restock>, TimesaleError> {
    let dialect: Dialect = svc.core.db.dialect();
    let mut tx = svc.core.db.pool().begin().await?;
    let due = store::claim_due_holds(&mut tx, dialect, now_ms(), SWEEP_BATCH).await?;
    let mut restocks = Vec::with_capacity(due.len());
    for order in &due {
        if let Some(r) = give_back(&mut tx, order, OrderStatus::Expired).await? {
            restocks.push(r);
        }
    }
    tx.commit().await?;
    Ok(restocks)
}

/// Sweeps every `every` until `shutdown`.
pub fn spawn_sweeper(svc: &Arc<TimesaleService>, every: Duration, shutdown: CancellationToken) {
    let svc = Arc::downgrade(svc);
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(every) => {}
            }
            let Some(svc) = svc.upgrade() else { return };
            if let Err(e) = sweep(&svc).await {
                tracing::warn!(error = %e, "hold sweep failed; next one retries");
            }
        }
    });
}
