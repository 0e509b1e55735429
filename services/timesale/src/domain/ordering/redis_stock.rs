//! V2 `RedisLock` for time sales: Redis stock. One atomic counters step
//! checks the user's units and takes `quantity` from the stock, refusing
//! partial fills, so most refusals never reach the database. An admitted
//! order then runs the V1 transaction, which decides: if it refuses or
//! fails, the units go back to the counters.

use std::sync::Arc;

use chrono::Utc;
use promo_platform::ports::{with_conflict_retry, Admission};

use super::database::order_in_transaction;
use crate::{
    domain::{Order, Strategy, TimesaleError},
    TimesaleService, SERVICE,
};

pub async fn order(
    svc: &Arc<TimesaleService>,
    sale_id: &str,
    user_id: &str,
    quantity: i64,
) -> Result<Order, TimesaleError> {
    let sale = svc.sale(sale_id).await?;
    sale.check_active(Utc::now())?;
    sale.check_quantity(quantity)?;
    let pool = TimesaleService::pool(sale_id);
    let limit = sale.spec.per_user_limit;
    match svc
        .counters
        .admit(&pool, user_id, quantity, limit, None)
        .await?
    {
        Admission::Admitted { remaining } => {
            svc.metrics
                .remaining
                .with_label_values(&[SERVICE, sale_id])
                .set(remaining);
        }
        Admission::LimitReached => return Err(TimesaleError::LimitExceeded(limit)),
        Admission::SoldOut => return Err(TimesaleError::SoldOut(quantity)),
        Admission::Missing => {
            svc.trigger_rebuild(sale_id);
            return Err(TimesaleError::CountersRebuilding);
        }
    }
    let result = with_conflict_retry(svc.settings.tx_attempts, || {
        order_in_transaction(svc, sale_id, user_id, quantity, Strategy::RedisLock)
    })
    .await;
    if result.is_err() {
        if let Err(e) = svc.counters.release(&pool, user_id, quantity).await {
            tracing::error!(error = %e, sale = sale_id, "could not give back units the database refused");
        }
    }
    result
}
