//! `POST /orders/{id}/cancel`: a confirmed order's units go back to the
//! sale — in the database and in the counters — exactly once.
//!
//! The database decides who cancels: the order row is locked and moved
//! CONFIRMED → CANCELLED by a conditional update, in the same transaction
//! that returns the units to the sale and frees the user's limit. Only the
//! request that made that move gives the units back to the counters, after
//! the commit; a second cancel finds CANCELLED and answers the same order,
//! changing nothing.

use std::sync::Arc;

use promo_platform::{ports::with_conflict_retry, queued::Core, shield::to_completion};

use crate::{
    domain::{Order, OrderStatus, TimesaleError},
    store, Sales, TimesaleService,
};

/// Runs to completion even if the client goes away, so units returned to
/// the database are always returned to the counters too.
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
    let (order, cancelled_now) = match attempt().await {
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
    if cancelled_now {
        let (sale, user, quantity) = (
            order.sale.as_deref().unwrap_or_default(),
            order.user_id.as_deref().unwrap_or_default(),
            order.quantity.unwrap_or(0),
        );
        // A sale without counters (V1) has no pool: release is then a no-op.
        let released = match svc.core.promotion(sale).await {
            Ok(s) => {
                let pool = Core::<Sales>::holder_pool(&s, user);
                svc.core
                    .counters
                    .release(&pool, user, quantity)
                    .await
                    .map_err(Into::into)
            }
            Err(e) => Err(e),
        };
        if let Err(e) = released {
            // The database already has the units back; the counters now
            // under-admit (never oversell) until they are rebuilt.
            tracing::error!(error = %e, sale, order_id, "cancelled units not returned to the counters");
        }
    }
    Ok(order)
}

async fn cancel_in_transaction(
    svc: &TimesaleService,
    order_id: &str,
) -> Result<(Order, bool), TimesaleError> {
    let mut tx = svc.core.db.pool().begin().await?;
    let Some(mut order) = store::lock_order(&mut tx, svc.core.db.dialect(), order_id).await? else {
        return Err(if svc.core.counters.ticket_pending(order_id).await? {
            TimesaleError::NotCancellable(format!(
                "order {order_id:?} is still pending; cancel it once it is CONFIRMED"
            ))
        } else {
            TimesaleError::UnknownOrder(order_id.to_string())
        });
    };
    match order.status {
        OrderStatus::Cancelled => return Ok((order, false)),
        OrderStatus::Confirmed => {}
        other => {
            return Err(TimesaleError::NotCancellable(format!(
                "order {order_id:?} is {} and cannot be cancelled",
                other.as_str()
            )))
        }
    }
    if !store::cancel_order(&mut tx, order_id).await? {
        // Unreachable under the row lock; refuse rather than restock twice.
        return Err(TimesaleError::NotCancellable(format!(
            "order {order_id:?} changed while cancelling; retry"
        )));
    }
    let sale = order.sale.clone().unwrap_or_default();
    let user = order.user_id.clone().unwrap_or_default();
    store::return_units(&mut tx, &sale, &user, order.quantity.unwrap_or(0)).await?;
    tx.commit().await?;
    order.status = OrderStatus::Cancelled;
    Ok((order, true))
}
