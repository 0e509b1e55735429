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
    let attempt = || {
        with_conflict_retry(svc.settings.tx_attempts, || {
            cancel_in_transaction(svc, order_id)
        })
    };
    let (answer, restocked) = match attempt().await {
        // Decided between the order read and the ticket check (the consumer
        // clears a ticket after its commit): it is in the database now.
        Err(TimesaleError::UnknownOrder(_))
            if store::get_order(svc.core.db.pool(), order_id)
                .await?
                .is_some() =>
        {
            attempt().await?
        }
        answer => answer?,
    };
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
    let Some(mut order) = store::lock_order(&mut tx, svc.core.db.dialect(), order_id).await? else {
        return Err(if svc.core.counters.ticket_pending(order_id).await? {
            TimesaleError::NotCancellable(format!(
                "order {order_id:?} is still pending; cancel it once it is decided"
            ))
        } else {
            TimesaleError::UnknownOrder(order_id.to_string())
        });
    };
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
