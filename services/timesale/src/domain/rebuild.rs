//! Rebuilding lost stock counters from the database, with the fenced
//! procedure of [`promo_platform::admission::Rebuild`]: remaining = stock −
//! sold and per-user units once nothing is in flight. A V2 sale needs no
//! fence: its admissions are synchronous and the database re-checks each.

use std::{collections::HashSet, sync::Arc, time::Duration};

use async_trait::async_trait;
use promo_platform::{
    admission::{self, Rebuild},
    ports::Counters,
};

use crate::{
    domain::{Strategy, TimesaleError},
    events::{Event, OrderEvent},
    store, TimesaleService, SERVICE,
};

#[async_trait]
impl Rebuild for TimesaleService {
    type Error = TimesaleError;

    fn counters(&self) -> &dyn Counters {
        &*self.counters
    }

    fn pool(&self, sale: &str) -> String {
        Self::pool(sale)
    }

    fn fence_timeout(&self) -> Duration {
        self.settings.rebuild_timeout
    }

    fn audit_age(&self) -> Duration {
        self.settings.audit_age
    }

    async fn needs_fence(&self, sale: &str) -> Result<bool, TimesaleError> {
        let s = store::get_sale(self.db.pool(), sale)
            .await?
            .ok_or_else(|| TimesaleError::UnknownSale(sale.to_string()))?;
        Ok(s.spec.strategy == Strategy::Queued)
    }

    async fn send_fence(&self, sale: &str, fence_id: &str) -> Result<(), TimesaleError> {
        let fence = OrderEvent::Fence {
            fence_id: fence_id.to_string(),
            sale: sale.to_string(),
        };
        Ok(self.producer.send(sale, fence.encode()).await?)
    }

    async fn fence_seen(&self, fence_id: &str) -> Result<bool, TimesaleError> {
        Ok(store::fence_seen(self.db.pool(), fence_id).await?)
    }

    async fn baseline(&self, sale: &str) -> Result<(i64, Vec<(String, i64)>), TimesaleError> {
        let s = store::get_sale(self.db.pool(), sale)
            .await?
            .ok_or_else(|| TimesaleError::UnknownSale(sale.to_string()))?;
        let holders = store::holder_units(self.db.pool(), sale).await?;
        Ok((s.spec.stock - s.sold, holders))
    }

    async fn decided(&self, tickets: &[String]) -> Result<HashSet<String>, TimesaleError> {
        let ids: Vec<&str> = tickets.iter().map(String::as_str).collect();
        let mut conn = self.db.pool().acquire().await?;
        Ok(store::decided_orders(&mut conn, &ids).await?)
    }

    fn returned(&self, sale: &str, count: u64) {
        self.metrics
            .admissions_returned
            .with_label_values(&[SERVICE, sale])
            .inc_by(count);
    }

    fn fence_timed_out(&self) -> TimesaleError {
        TimesaleError::CountersRebuilding
    }

    fn rebuilt(&self, sale: &str) {
        self.metrics
            .counter_rebuilds
            .with_label_values(&[SERVICE, sale])
            .inc();
    }
}

impl TimesaleService {
    /// Starts a rebuild of `sale`'s counters in the background unless one runs.
    pub fn trigger_rebuild(self: &Arc<Self>, sale: &str) {
        self.rebuilds.trigger(self.clone(), sale);
    }

    /// Rebuilds now; returns whether this call created the pool.
    pub async fn rebuild(&self, sale: &str) -> Result<bool, TimesaleError> {
        admission::rebuild(self, sale).await
    }

    /// Audits now (see [`admission::audit`]); returns how many orders' units it gave back.
    pub async fn audit(&self, sale: &str) -> Result<u64, TimesaleError> {
        admission::audit(self, sale).await
    }
}
