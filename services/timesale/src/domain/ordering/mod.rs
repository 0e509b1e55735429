//! Ordering, one file per strategy. Outcomes are identical across them:
//! not enough stock for the quantity (410), per-user limit (409), not
//! active (422), unknown sale (404).

pub(crate) mod batch;
pub mod database;
pub mod queued;
pub mod redis_stock;

use std::sync::Arc;

use promo_platform::shield::to_completion;

use crate::{domain::TimesaleError, TimesaleService};

use super::{Order, Strategy};

/// What ordering answers: a confirmed order (V1, V2) or an accepted one (V3).
#[derive(Debug)]
pub enum Placed {
    Confirmed(Order),
    Pending { order_id: String },
}

/// Orders with `strategy`, or with the sale's own when `None`. Runs to
/// completion even if the client goes away (see `promo_platform::shield`):
/// units taken from the counters are always either sold or given back.
pub async fn place(
    svc: &Arc<TimesaleService>,
    strategy: Option<Strategy>,
    sale: &str,
    user_id: &str,
    quantity: i64,
) -> Result<Placed, TimesaleError> {
    let (svc, sale, user_id) = (svc.clone(), sale.to_string(), user_id.to_string());
    to_completion(async move { place_now(&svc, strategy, &sale, &user_id, quantity).await }).await
}

async fn place_now(
    svc: &Arc<TimesaleService>,
    strategy: Option<Strategy>,
    sale: &str,
    user_id: &str,
    quantity: i64,
) -> Result<Placed, TimesaleError> {
    let strategy = match strategy {
        Some(s) => s,
        None => svc.sale(sale).await?.spec.strategy,
    };
    let result = match strategy {
        Strategy::Database => database::order(svc, sale, user_id, quantity)
            .await
            .map(Placed::Confirmed),
        Strategy::RedisLock => redis_stock::order(svc, sale, user_id, quantity)
            .await
            .map(Placed::Confirmed),
        Strategy::Queued => queued::admit(svc, sale, user_id, quantity)
            .await
            .map(|order_id| Placed::Pending { order_id }),
    };
    svc.count(strategy, sale, &result);
    result
}
