//! `POST /orders/{id}/cancel`: a confirmed or held order's units go back
//! to the sale — in the database and in the counters — exactly once.
//!
//! The database decides who cancels: the order row is locked and moved
//! CONFIRMED/HELD → CANCELLED by a conditional update, in the same
//! transaction that returns the units to the sale, frees the user's limit
//! and records the restock for the counters (`holds::give_back`). After the
//! commit the counters get the units once per order (`holds::restock`; a
//! crash in between leaves the restock for the next sweep). A second cancel
//! finds CANCELLED and answers the same order, changing nothing. A hold
//! that has run out is expired instead (if the sweep has not yet), and the
//! cancel answers 409 `hold_expired`.

use std::sync::Arc;

use chrono::Utc;
use promo_platform::{ports::with_conflict_retry, shield::to_completion};
use sqlx::AnyConnection;

use crate::{
    domain::{holds, Order, OrderStatus, TimesaleError},
    store::{self, Restock},
    TimesaleService, SERVICE,
};

/// Runs to completion even if the client goes away, so units returned to
/// the database are returned to the counters too.
pub async fn cancel(svc: &Arc<TimesaleService>, order_id: &str) -> Result<Order, TimesaleError> {
    let (svc, order_id) = (svc.clone(), order_id.to_string());
    to_completion(async move { cancel_now(&svc, &order_id).await }).await
}

async fn cancel_now(svc: &TimesaleService, order_id: &str) -> Result<Order, TimesaleError> {
    let (answer, restocked) = on_decided_order(svc, order_id, || {
        with_conflict_retry(svc.settings.tx_attempts, || {
            cancel_in_transaction(svc, order_id)
        })
    })
    .await?;
    if let Some((restock, outcome)) = restocked {
        if let Some(outcome) = outcome {
            svc.core
                .metrics
                .holds
                .with_label_values(&[SERVICE, outcome])
                .inc();
        }
        holds::restock(svc, &[restock]).await;
    }
    answer
}

/// Order `order_id` locked in `tx`. Without one: `pending("order … is
/// still pending")` while its V3 ticket is pending, else unknown.
pub(crate) async fn lock_decided(
    svc: &TimesaleService,
    tx: &mut AnyConnection,
    order_id: &str,
    pending: impl FnOnce(String) -> TimesaleError,
) -> Result<Order, TimesaleError> {
    match store::lock_order(tx, svc.core.db.dialect(), order_id).await? {
        Some(order) => Ok(order),
        None if svc.core.counters.ticket_pending(order_id).await? => {
            Err(pending(format!("order {order_id:?} is still pending")))
        }
        None => Err(TimesaleError::UnknownOrder(order_id.to_string())),
    }
}

/// Runs `attempt` (a transaction built on [`lock_decided`]) once more when
/// it found the order unknown but the database has it now: the consumer
/// decided it between the order read and the ticket check (it clears a
/// ticket after its commit).
pub(crate) async fn on_decided_order<T, F, Fut>(
    svc: &TimesaleService,
    order_id: &str,
    attempt: F,
) -> Result<T, TimesaleError>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<T, TimesaleError>>,
{
    match attempt().await {
        Err(TimesaleError::UnknownOrder(_))
            if store::get_order(svc.core.db.pool(), order_id)
                .await?
                .is_some() =>
        {
            attempt().await
        }
        answer => answer,
    }
}

/// The answer, and the restock to give the counters with the hold outcome
/// to count (`cancelled` or `expired`; none for a confirmed order).
type Cancelled = (
    Result<Order, TimesaleError>,
    Option<(Restock, Option<&'static str>)>,
);

async fn cancel_in_transaction(
    svc: &TimesaleService,
    order_id: &str,
) -> Result<Cancelled, TimesaleError> {
    let mut tx = svc.core.db.pool().begin().await?;
    let mut order = lock_decided(svc, &mut tx, order_id, |m| {
        TimesaleError::NotCancellable(format!("{m}; cancel it once it is decided"))
    })
    .await?;
    let (to, outcome) = match order.status {
        OrderStatus::Cancelled => return Ok((Ok(order), None)),
        OrderStatus::Held if order.hold_due(Utc::now()) => (OrderStatus::Expired, Some("expired")),
        OrderStatus::Held => (OrderStatus::Cancelled, Some("cancelled")),
        OrderStatus::Confirmed => (OrderStatus::Cancelled, None),
        OrderStatus::Expired => {
            return Ok((
                Err(TimesaleError::HoldExpired(format!(
                    "the hold of order {order_id:?} expired"
                ))),
                None,
            ))
        }
        other => {
            return Err(TimesaleError::NotCancellable(format!(
                "order {order_id:?} is {} and cannot be cancelled",
                other.as_str()
            )))
        }
    };
    let Some(restock) = holds::give_back(&mut tx, &order, to).await? else {
        // Unreachable under the row lock; refuse rather than restock twice.
        return Err(TimesaleError::NotCancellable(format!(
            "order {order_id:?} changed while cancelling; retry"
        )));
    };
    tx.commit().await?;
    let answer = if to == OrderStatus::Expired {
        Err(TimesaleError::HoldExpired(format!(
            "the hold of order {order_id:?} expired before the cancel"
        )))
    } else {
        order.status = to;
        Ok(order)
    };
    Ok((answer, Some((restock, outcome))))
}
