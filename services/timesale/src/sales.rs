//! What the queued core ([`promo_platform::queued`]) needs of the
//! time-sale service: [`Sales`], its [`Domain`]. The core's consumer
//! groups a batch per sale and hands each sale's undecided orders to
//! [`Sales::persist`], which re-checks them against the database — the
//! user's units against the per-user limit, the quantity against the stock
//! left, no partial fills, with `ordering::batch`, which V2's group commit
//! uses too — and writes orders, units and the sold count with multi-row
//! statements. Orders of a sale that no longer exists are stored REJECTED
//! `unknown_sale`, as a coupon request for an unknown campaign is.

use std::collections::HashSet;

use async_trait::async_trait;
use promo_platform::{
    metrics::Metrics,
    ports::{Database, Dialect},
    queued::{Admitted, Domain, Fresh, QueuedEvent, Standing},
    time::from_ms,
};
use sqlx::{AnyConnection, AnyPool};

use crate::{
    domain::{
        ordering::batch::{decide, decide_unlocked, Wanted},
        Order, Sale, SaleSpec, Strategy, TimesaleError,
    },
    events::{OrderBody, OrderEvent},
    store,
};

/// The time-sale service's sales, as the queued core sees them.
#[derive(Debug, Clone, Copy)]
pub struct Sales;

#[async_trait]
impl Domain for Sales {
    const SERVICE: &'static str = promo_contracts::timesale::SERVICE;
    const TOPIC: &'static str = promo_contracts::timesale::TOPIC;
    const GROUP: &'static str = promo_contracts::timesale::GROUP;
    const PARTITIONS: i32 = promo_contracts::timesale::PARTITIONS;
    const ACCEPTED: &'static str = "confirmed";
    type Promotion = Sale;
    type Spec = SaleSpec;
    type Event = OrderEvent;
    type Error = TimesaleError;

    fn id(s: &Sale) -> &str {
        &s.id
    }

    async fn upsert(
        db: &Database,
        id: &str,
        spec: &SaleSpec,
    ) -> Result<(Sale, Option<Sale>), TimesaleError> {
        spec.validate()?;
        store::upsert_sale(db.pool(), db.dialect(), id, spec).await
    }

    fn standing(s: &Sale) -> Standing {
        Standing {
            limit: s.spec.stock,
            // Restocks on their way to the counters count as taken, so a
            // rebuild's pools plus those restocks come out exact.
            persisted: s.sold + s.restocking,
            counted: s.spec.counted(),
            queued: s.spec.strategy == Strategy::Queued,
            buckets: s.spec.buckets,
        }
    }

    /// `promo_held`, for sales that hold (or still have held units).
    fn measure(s: &Sale, metrics: &Metrics) {
        if s.spec.hold_seconds.is_some() || s.held > 0 {
            metrics
                .held
                .with_label_values(&[Self::SERVICE, &s.id])
                .set(s.held);
        }
    }

    async fn get(pool: &AnyPool, id: &str) -> Result<Option<Sale>, sqlx::Error> {
        store::get_sale(pool, id).await
    }

    async fn list(pool: &AnyPool) -> Result<Vec<Sale>, sqlx::Error> {
        store::list_sales(pool, None).await
    }

    async fn holders(pool: &AnyPool, id: &str) -> Result<Vec<(String, i64)>, sqlx::Error> {
        store::holder_units(pool, id).await
    }

    async fn decided(
        conn: &mut AnyConnection,
        ids: &[&str],
    ) -> Result<HashSet<String>, sqlx::Error> {
        store::decided_orders(conn, ids).await
    }

    async fn persist(
        tx: &mut AnyConnection,
        dialect: Dialect,
        sale_id: &str,
        fresh: &[&Fresh<OrderBody>],
    ) -> Result<(u64, u64), TimesaleError> {
        // First without the sale's row lock (see `decide_unlocked`); under
        // it when that would refuse anything.
        let wanted = wanted(fresh);
        let mut decided = None;
        if let Some(sale) = store::read_sale(tx, dialect, sale_id, false).await? {
            decided = decide_unlocked(tx, dialect, &sale, &wanted, Strategy::Queued).await?;
            if decided.is_none() {
                if let Some(sale) = store::read_sale(tx, dialect, sale_id, true).await? {
                    decided = Some(decide(tx, dialect, &sale, &wanted, Strategy::Queued).await?);
                }
            }
        }
        let orders = match decided {
            None => fresh
                .iter()
                .map(|a| {
                    Order::for_unknown_sale(
                        a.id.clone(),
                        sale_id,
                        &a.body.user_id,
                        a.body.quantity,
                        from_ms(a.body.admitted_at),
                    )
                })
                .collect(),
            Some(orders) => orders,
        };
        store::insert_orders(tx, &orders).await?;
        let confirmed = orders.iter().filter(|o| o.reason.is_none()).count() as u64;
        Ok((confirmed, orders.len() as u64 - confirmed))
    }
}

/// What the batch decision needs of each fresh order.
fn wanted<'a>(fresh: &[&'a Fresh<OrderBody>]) -> Vec<Wanted<'a>> {
    fresh
        .iter()
        .map(|a| Wanted {
            order_id: a.id.clone(),
            user_id: &a.body.user_id,
            quantity: a.body.quantity,
            at: from_ms(a.body.admitted_at),
        })
        .collect()
}

impl QueuedEvent for OrderEvent {
    type Body = OrderBody;

    fn fence(sale: &str, fence_id: &str) -> Self {
        OrderEvent::Fence {
            fence_id: fence_id.to_string(),
            sale: sale.to_string(),
        }
    }

    fn admitted(self) -> Admitted<OrderBody> {
        match self {
            OrderEvent::Order {
                order_id,
                sale,
                user_id,
                quantity,
                admitted_at,
                bucket,
            } => Admitted::Request {
                key: sale,
                bucket,
                id: order_id,
                body: OrderBody {
                    user_id,
                    quantity,
                    admitted_at,
                },
            },
            OrderEvent::Fence { fence_id, sale } => Admitted::Fence {
                key: sale,
                fence_id,
            },
        }
    }
}
