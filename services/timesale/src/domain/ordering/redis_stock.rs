//! V2 `RedisLock` for time sales: Redis stock. One atomic counters step
//! checks the user's units and takes `quantity` from the stock, refusing
//! partial fills, so most refusals never reach the database. An admitted
//! order then joins the service's group commit
//! (`promo_platform::group_commit`): one transaction locks the sale row once,
//! decides every queued order in order (`batch::decide`, the V3 consumer's
//! rules) and commits; each caller is answered after that commit. If the
//! database refuses an order or fails, its units go back to the counters.

use std::sync::Arc;

use chrono::Utc;
use promo_platform::{
    admission,
    group_commit::{by_key, whole_or_one_by_one, Answers},
    ports::{with_conflict_retry, Admission},
    queued::Core,
};

use super::{
    batch::{decide, Wanted},
    database::order_in_transaction,
};
use crate::{
    domain::{Order, Strategy, TimesaleError},
    store, Sales, TimesaleService, SERVICE,
};

/// One admitted V2 order waiting for its batch.
pub struct Request {
    pub order_id: String,
    pub sale: String,
    pub user_id: String,
    pub quantity: i64,
}

/// [`order_once`], and once more after waiting up to
/// [`admission::REBUILD_WAIT`] when the pool was missing and is rebuilt meanwhile.
pub async fn order(
    svc: &Arc<TimesaleService>,
    order_id: &str,
    sale_id: &str,
    user_id: &str,
    quantity: i64,
) -> Result<Order, TimesaleError> {
    let sale = svc.core.promotion(sale_id).await?;
    admission::once_more_after_rebuild(
        &*svc.core.counters,
        &Core::<Sales>::holder_pool(&sale, user_id),
        |e| matches!(e, TimesaleError::CountersRebuilding),
        || order_once(svc, order_id, sale_id, user_id, quantity),
    )
    .await
}

async fn order_once(
    svc: &Arc<TimesaleService>,
    order_id: &str,
    sale_id: &str,
    user_id: &str,
    quantity: i64,
) -> Result<Order, TimesaleError> {
    let sale = svc.core.promotion(sale_id).await?;
    sale.check_active(Utc::now())?;
    sale.check_quantity(quantity)?;
    let limit = sale.spec.per_user_limit;
    let (answer, pool) = svc.core.take(&sale, user_id, quantity, limit).await?;
    match answer {
        Admission::Admitted { remaining } => {
            // With one bucket its remaining is the sale's; with several the
            // gauge waits for the next tick's sum.
            if sale.spec.buckets == 1 {
                svc.core
                    .metrics
                    .remaining
                    .with_label_values(&[SERVICE, sale_id])
                    .set(remaining);
            }
        }
        Admission::LimitReached => return Err(TimesaleError::LimitExceeded(limit)),
        Admission::SoldOut => return Err(TimesaleError::SoldOut(quantity)),
        Admission::Missing => {
            svc.core.trigger_rebuild(sale_id);
            return Err(TimesaleError::CountersRebuilding);
        }
        // V2 admits without a ticket, so no earlier run can be in flight.
        Admission::InFlight => return Err(TimesaleError::Unsettled),
    }
    let request = Request {
        order_id: order_id.to_string(),
        sale: sale_id.to_string(),
        user_id: user_id.to_string(),
        quantity,
    };
    let result = match svc.v2_group_commit().submit(request).await {
        Ok(answer) => answer,
        Err(stopped) => Err(TimesaleError::Stopped(stopped.to_string())),
    };
    if result.is_err() {
        if let Err(e) = svc.core.counters.release(&pool, user_id, quantity).await {
            tracing::error!(error = %e, sale = sale_id, "could not give back units the database refused");
        }
    }
    result
}

/// Decides a batch of admitted V2 orders in one transaction. If that
/// transaction fails for good, each order gets its own, so one bad order
/// cannot fail the others.
pub async fn order_batch(
    svc: &TimesaleService,
    batch: Vec<Request>,
) -> Vec<Result<Order, TimesaleError>> {
    let attempts = svc.settings.tx_attempts;
    whole_or_one_by_one(
        &batch,
        with_conflict_retry(attempts, || batch_transaction(svc, &batch)),
        |r| {
            with_conflict_retry(attempts, || {
                order_in_transaction(
                    svc,
                    &r.order_id,
                    &r.sale,
                    &r.user_id,
                    r.quantity,
                    Strategy::RedisLock,
                )
            })
        },
    )
    .await
}

async fn batch_transaction(
    svc: &TimesaleService,
    batch: &[Request],
) -> Result<Vec<Result<Order, TimesaleError>>, TimesaleError> {
    let mut answers = Answers::new(batch.len());
    let now = Utc::now();
    let dialect = svc.core.db.dialect();
    let mut tx = svc.core.db.pool().begin().await?;
    for (sale_id, indices) in by_key(batch, |r| &r.sale) {
        let Some(sale) = store::read_sale(&mut tx, dialect, sale_id, true).await? else {
            answers.fill(&indices, || {
                Err(TimesaleError::UnknownSale(sale_id.to_string()))
            });
            continue;
        };
        if let Err(TimesaleError::NotActive(reason)) = sale.check_active(now) {
            answers.fill(&indices, || Err(TimesaleError::NotActive(reason.clone())));
            continue;
        }
        let wanted: Vec<Wanted> = indices
            .iter()
            .map(|&i| Wanted {
                order_id: batch[i].order_id.clone(),
                user_id: &batch[i].user_id,
                quantity: batch[i].quantity,
                at: now,
            })
            .collect();
        let orders = decide(&mut tx, dialect, &sale, &wanted, Strategy::RedisLock).await?;
        let confirmed: Vec<Order> = orders
            .iter()
            .filter(|o| o.reason.is_none())
            .cloned()
            .collect();
        store::insert_orders(&mut tx, &confirmed).await?;
        let limit = sale.spec.per_user_limit;
        for (&i, order) in indices.iter().zip(orders) {
            answers.set(
                i,
                match order.reason.as_deref() {
                    None => Ok(order),
                    Some("sold_out") => Err(TimesaleError::SoldOut(batch[i].quantity)),
                    Some(_) => Err(TimesaleError::LimitExceeded(limit)),
                },
            );
        }
    }
    tx.commit().await?;
    Ok(answers.into_vec())
}
