//! The V3 consumer: persists admitted orders in batches.
//!
//! One transaction per batch: per sale (locked in id order, so two consumers
//! never deadlock) it skips orders already decided (a redelivered batch
//! stores nothing twice), re-checks every order against the database — the
//! user's units against the per-user limit, the quantity against the stock
//! left, no partial fills, with `ordering::batch`, which V2's group commit
//! uses too — and writes orders, units and the sold count with multi-row
//! statements. Offsets are committed by the shared loop only after
//! this commit.

use std::{
    collections::{BTreeMap, HashSet},
    sync::Arc,
};

use async_trait::async_trait;
use promo_platform::{
    admission::clear_decided,
    consumer::{decode_batch, BatchHandler, PersistError},
    ports::Message,
    time::from_ms,
};

use crate::{
    domain::{
        ordering::batch::{decide, Wanted},
        Order, Strategy, TimesaleError,
    },
    events::OrderEvent,
    store, TimesaleService, SERVICE,
};

pub struct OrderConsumer {
    pub svc: Arc<TimesaleService>,
}

struct Admitted {
    order_id: String,
    user_id: String,
    quantity: i64,
    admitted_at: i64,
}

#[async_trait]
impl BatchHandler for OrderConsumer {
    async fn persist(&self, batch: &[Message]) -> Result<(), PersistError> {
        persist_batch(&self.svc, batch)
            .await
            .map_err(|e| PersistError {
                reason: e.persist_reason(),
                message: e.to_string(),
            })
    }
}

/// Decides and stores one batch; see the module documentation.
pub async fn persist_batch(svc: &TimesaleService, batch: &[Message]) -> Result<(), TimesaleError> {
    let mut by_sale: BTreeMap<String, Vec<Admitted>> = BTreeMap::new();
    let mut fences = Vec::new();
    let mut seen = HashSet::new();
    for event in decode_batch::<OrderEvent>(batch, &svc.metrics, SERVICE) {
        match event {
            OrderEvent::Order {
                order_id,
                sale,
                user_id,
                quantity,
                admitted_at,
            } => {
                if seen.insert(order_id.clone()) {
                    by_sale.entry(sale).or_default().push(Admitted {
                        order_id,
                        user_id,
                        quantity,
                        admitted_at,
                    });
                }
            }
            OrderEvent::Fence { fence_id, sale } => fences.push((fence_id, sale)),
        }
    }

    let dialect = svc.db.dialect();
    let mut tx = svc.db.pool().begin().await?;
    let ids: Vec<&str> = seen.iter().map(String::as_str).collect();
    let decided = store::decided_orders(&mut tx, &ids).await?;
    let (mut confirmed_total, mut rejected_total, mut redelivered) = (0u64, 0u64, 0u64);
    // Orders stored (now or before): their tickets go after the commit.
    let mut decided_ids: BTreeMap<&str, Vec<&str>> = BTreeMap::new();

    for (sale_id, admitted) in &by_sale {
        let fresh: Vec<&Admitted> = admitted
            .iter()
            .filter(|a| !decided.contains(&a.order_id))
            .collect();
        redelivered += (admitted.len() - fresh.len()) as u64;
        decided_ids.entry(sale_id).or_default().extend(
            admitted
                .iter()
                .filter(|a| decided.contains(&a.order_id))
                .map(|a| a.order_id.as_str()),
        );
        if fresh.is_empty() {
            continue;
        }
        let orders = match store::read_sale(&mut tx, dialect, sale_id, true).await? {
            // The sale is gone: its orders are refused, as a coupon request
            // for an unknown campaign is (and readable as such).
            None => fresh
                .iter()
                .map(|a| {
                    Order::for_unknown_sale(
                        a.order_id.clone(),
                        sale_id,
                        &a.user_id,
                        a.quantity,
                        from_ms(a.admitted_at),
                    )
                })
                .collect(),
            Some(sale) => decide(&mut tx, dialect, &sale, wanted(&fresh), Strategy::Queued).await?,
        };
        store::insert_orders(&mut tx, &orders).await?;
        decided_ids
            .entry(sale_id)
            .or_default()
            .extend(fresh.iter().map(|a| a.order_id.as_str()));
        let confirmed = orders.iter().filter(|o| o.reason.is_none()).count() as u64;
        confirmed_total += confirmed;
        rejected_total += orders.len() as u64 - confirmed;
    }
    for (fence_id, sale) in &fences {
        store::record_fence(&mut tx, dialect, fence_id, sale).await?;
    }
    tx.commit().await?;
    for (sale_id, orders) in &decided_ids {
        clear_decided(&*svc.counters, &TimesaleService::pool(sale_id), orders).await;
    }

    let m = &svc.metrics.consumer_messages;
    m.with_label_values(&[SERVICE, "confirmed"])
        .inc_by(confirmed_total);
    m.with_label_values(&[SERVICE, "rejected"])
        .inc_by(rejected_total);
    m.with_label_values(&[SERVICE, "redelivered"])
        .inc_by(redelivered);
    Ok(())
}

/// What the batch decision needs of each fresh order.
fn wanted<'a>(fresh: &[&'a Admitted]) -> Vec<Wanted<'a>> {
    fresh
        .iter()
        .map(|a| Wanted {
            order_id: a.order_id.clone(),
            user_id: &a.user_id,
            quantity: a.quantity,
            at: from_ms(a.admitted_at),
        })
        .collect()
}
