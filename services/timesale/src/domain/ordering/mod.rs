//! Ordering, one file per strategy. Outcomes are identical across them:
//! not enough stock for the quantity (410), per-user limit (409), not
//! active (422), unknown sale (404).

pub(crate) mod batch;
pub mod database;
pub mod queued;
pub mod redis_stock;

use std::sync::Arc;

use promo_platform::{http::idempotency::Keyed, shield::to_completion};

use crate::{domain::TimesaleError, store, TimesaleService};

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
///
/// A request with an `Idempotency-Key` (`keyed`) gets the key's effect id
/// as its order id (others a new one); when it takes over the claim of a
/// run that died unanswered, it first answers from that run's order if
/// there is one.
pub async fn place(
    svc: &Arc<TimesaleService>,
    strategy: Option<Strategy>,
    sale: &str,
    user_id: &str,
    quantity: i64,
    keyed: Option<Keyed>,
) -> Result<Placed, TimesaleError> {
    let (svc, sale, user_id) = (svc.clone(), sale.to_string(), user_id.to_string());
    to_completion(async move { place_now(&svc, strategy, &sale, &user_id, quantity, keyed).await })
        .await
}

async fn place_now(
    svc: &Arc<TimesaleService>,
    strategy: Option<Strategy>,
    sale: &str,
    user_id: &str,
    quantity: i64,
    keyed: Option<Keyed>,
) -> Result<Placed, TimesaleError> {
    let strategy = match strategy {
        Some(s) => s,
        None => svc.core.promotion(sale).await?.spec.strategy,
    };
    let id = match &keyed {
        Some(k) if k.retaken => {
            if let Some(earlier) = earlier_effect(svc, strategy, &k.effect_id).await? {
                return Ok(earlier);
            }
            k.effect_id.clone()
        }
        Some(k) => k.effect_id.clone(),
        None => uuid::Uuid::now_v7().to_string(),
    };
    let result = match strategy {
        Strategy::Database => database::order(svc, &id, sale, user_id, quantity)
            .await
            .map(Placed::Confirmed),
        Strategy::RedisLock => redis_stock::order(svc, &id, sale, user_id, quantity)
            .await
            .map(Placed::Confirmed),
        Strategy::Queued => queued::admit(svc, &id, sale, user_id, quantity)
            .await
            .map(|order_id| Placed::Pending { order_id }),
    };
    svc.core.count(strategy.label(), sale, &result);
    result
}

/// The first answer of a keyed order whose first run died unanswered, when
/// that run's order (under `id`) exists; [`TimesaleError::Unsettled`] while
/// its queued order is still in flight; `None` when nothing happened, so
/// this run orders.
///
/// The ticket is read before the database: the consumer clears a ticket
/// only after committing its decision, and the audit only when no decision
/// can come, so a ticket gone unseen is either decided in the database by
/// then or never will be.
async fn earlier_effect(
    svc: &TimesaleService,
    strategy: Strategy,
    id: &str,
) -> Result<Option<Placed>, TimesaleError> {
    if svc.core.counters.ticket_pending(id).await? {
        return Err(TimesaleError::Unsettled);
    }
    Ok(store::get_order(svc.core.db.pool(), id)
        .await?
        .map(|order| {
            if strategy == Strategy::Queued {
                Placed::Pending {
                    order_id: order.order_id,
                }
            } else {
                Placed::Confirmed(order)
            }
        }))
}
