//! V3 `Queued`: the same atomic counters step as V2 admits (and marks the
//! order id pending), the order event goes to Kafka keyed by sale, and the
//! answer is 202 with the order id. The consumer (`crate::consumer`)
//! persists in batches and decides CONFIRMED or REJECTED; `GET /orders/{id}`
//! reads it. With the counters missing, admission fails closed (503) until
//! they are rebuilt from the database
//! ([`promo_platform::queued::Core::admit`]).

use std::sync::Arc;

use chrono::Utc;
use promo_platform::queued::{Claim, Taken};

use crate::{
    domain::{Sale, TimesaleError},
    events::OrderEvent,
    TimesaleService,
};

/// Admits order `order_id` of `quantity` units for `user_id`; answers its id.
pub async fn admit(
    svc: &Arc<TimesaleService>,
    order_id: &str,
    sale_id: &str,
    user_id: &str,
    quantity: i64,
) -> Result<String, TimesaleError> {
    let claim = |sale: &Sale, bucket| {
        let now = Utc::now();
        sale.check_active(now)?;
        sale.check_quantity(quantity)?;
        Ok(Claim {
            units: quantity,
            limit: sale.spec.per_user_limit,
            event: OrderEvent::Order {
                order_id: order_id.to_string(),
                sale: sale_id.to_string(),
                user_id: user_id.to_string(),
                quantity,
                admitted_at: now.timestamp_millis(),
                bucket,
            },
        })
    };
    match svc.core.admit(sale_id, user_id, order_id, claim).await? {
        Taken::Admitted => Ok(order_id.to_string()),
        Taken::LimitReached { limit } => Err(TimesaleError::LimitExceeded(limit)),
        Taken::SoldOut => Err(TimesaleError::SoldOut(quantity)),
    }
}
