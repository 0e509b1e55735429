//! V3 `Queued`: the same atomic counters step as V2 admits (and marks the
//! order id pending), the order event goes to Kafka keyed by sale, and the
//! answer is 202 with the order id. The consumer (`crate::consumer`)
//! persists in batches and decides CONFIRMED or REJECTED; `GET /orders/{id}`
//! reads it. With the counters missing, admission fails closed (503) until
//! they are rebuilt from the database.

use std::sync::Arc;

use chrono::Utc;
use promo_platform::{
    admission::{self, admit_and_publish},
    ports::Admission,
};

use crate::{
    domain::TimesaleError,
    events::{Event, OrderEvent},
    TimesaleService, SERVICE,
};

/// [`admit_once`], and once more after waiting up to
/// [`admission::REBUILD_WAIT`] when the pool was missing and is rebuilt meanwhile.
pub async fn admit(
    svc: &Arc<TimesaleService>,
    order_id: &str,
    sale_id: &str,
    user_id: &str,
    quantity: i64,
) -> Result<String, TimesaleError> {
    admission::once_more_after_rebuild(
        &*svc.counters,
        &TimesaleService::pool(sale_id),
        |e| matches!(e, TimesaleError::CountersRebuilding),
        || admit_once(svc, order_id, sale_id, user_id, quantity),
    )
    .await
}

async fn admit_once(
    svc: &Arc<TimesaleService>,
    order_id: &str,
    sale_id: &str,
    user_id: &str,
    quantity: i64,
) -> Result<String, TimesaleError> {
    let sale = svc.sale(sale_id).await?;
    let now = Utc::now();
    sale.check_active(now)?;
    sale.check_quantity(quantity)?;
    let order_id = order_id.to_string();
    let event = OrderEvent::Order {
        order_id: order_id.clone(),
        sale: sale_id.to_string(),
        user_id: user_id.to_string(),
        quantity,
        admitted_at: now.timestamp_millis(),
    };
    let limit = sale.spec.per_user_limit;
    let admission = admit_and_publish::<TimesaleError>(
        &*svc.counters,
        &*svc.producer,
        &TimesaleService::pool(sale_id),
        sale_id,
        user_id,
        quantity,
        limit,
        (&order_id, svc.settings.ticket_ttl),
        event.encode(),
    )
    .await?;
    match admission {
        Admission::Admitted { remaining } => {
            svc.metrics
                .remaining
                .with_label_values(&[SERVICE, sale_id])
                .set(remaining);
            Ok(order_id)
        }
        Admission::LimitReached => Err(TimesaleError::LimitExceeded(limit)),
        Admission::SoldOut => Err(TimesaleError::SoldOut(quantity)),
        Admission::Missing => {
            svc.trigger_rebuild(sale_id);
            Err(TimesaleError::CountersRebuilding)
        }
    }
}
