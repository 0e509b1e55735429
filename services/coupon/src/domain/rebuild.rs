//! Rebuilding lost admission counters from the database, with the fenced
//! procedure of [`promo_platform::admission::Rebuild`]: a fence event on the
//! campaign's key, wait until the consumer persisted it, then remaining =
//! quota − issued and per-user counts from the coupons table.

use std::{collections::HashSet, sync::Arc, time::Duration};

use async_trait::async_trait;
use promo_platform::{
    admission::{self, Rebuild},
    ports::Counters,
};

use crate::{
    domain::CouponError,
    events::{CouponEvent, Event},
    store, CouponService, SERVICE,
};

#[async_trait]
impl Rebuild for CouponService {
    type Error = CouponError;

    fn counters(&self) -> &dyn Counters {
        &*self.counters
    }

    fn pool(&self, campaign: &str) -> String {
        Self::pool(campaign)
    }

    fn fence_timeout(&self) -> Duration {
        self.settings.rebuild_timeout
    }

    fn audit_age(&self) -> Duration {
        self.settings.audit_age
    }

    async fn send_fence(&self, campaign: &str, fence_id: &str) -> Result<(), CouponError> {
        let fence = CouponEvent::Fence {
            fence_id: fence_id.to_string(),
            campaign: campaign.to_string(),
        };
        Ok(self.producer.send(campaign, fence.encode()).await?)
    }

    async fn fence_seen(&self, fence_id: &str) -> Result<bool, CouponError> {
        Ok(store::fence_seen(self.db.pool(), fence_id).await?)
    }

    async fn baseline(&self, campaign: &str) -> Result<(i64, Vec<(String, i64)>), CouponError> {
        let c = store::get_campaign(self.db.pool(), campaign)
            .await?
            .ok_or_else(|| CouponError::UnknownCampaign(campaign.to_string()))?;
        let holders = store::holder_counts(self.db.pool(), campaign).await?;
        Ok((c.spec.quota - c.issued, holders))
    }

    async fn decided(&self, tickets: &[String]) -> Result<HashSet<String>, CouponError> {
        let ids: Vec<&str> = tickets.iter().map(String::as_str).collect();
        let mut conn = self.db.pool().acquire().await?;
        Ok(store::decided_requests(&mut conn, &ids).await?)
    }

    fn returned(&self, campaign: &str, count: u64) {
        self.metrics
            .admissions_returned
            .with_label_values(&[SERVICE, campaign])
            .inc_by(count);
    }

    fn fence_timed_out(&self) -> CouponError {
        CouponError::CountersRebuilding
    }

    fn rebuilt(&self, campaign: &str) {
        self.metrics
            .counter_rebuilds
            .with_label_values(&[SERVICE, campaign])
            .inc();
    }
}

impl CouponService {
    /// Starts a rebuild of `campaign`'s counters in the background unless one runs.
    pub fn trigger_rebuild(self: &Arc<Self>, campaign: &str) {
        self.rebuilds.trigger(self.clone(), campaign);
    }

    /// Rebuilds now; returns whether this call created the pool.
    pub async fn rebuild(&self, campaign: &str) -> Result<bool, CouponError> {
        admission::rebuild(self, campaign).await
    }

    /// Audits now (see [`admission::audit`]); returns how many admissions it gave back.
    pub async fn audit(&self, campaign: &str) -> Result<u64, CouponError> {
        admission::audit(self, campaign).await
    }
}
