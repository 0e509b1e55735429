//! Rebuilding lost admission counters from the database.
//!
//! remaining = quota − persisted − in flight. "In flight" is what the
//! counters admitted but the consumer has not persisted; it is unknowable
//! once the counters are gone, so the rebuild drives it to zero instead:
//! it sends a *fence* event on the campaign's key (same partition, so
//! behind every admitted event) and waits until the consumer has persisted
//! the fence. Nothing new is admitted meanwhile — admission finds the pool
//! missing and answers 503 — so after the fence every admitted request is
//! in the database and remaining = quota − issued, holders = per-user counts.
//!
//! One rebuild per campaign runs at a time: per process by a set, across
//! replicas by a counters lock.

use std::{sync::Arc, time::Duration};

use crate::{domain::CouponError, events::CouponEvent, store, CouponService, SERVICE};

impl CouponService {
    /// Starts a rebuild of `campaign`'s counters in the background unless one runs.
    pub fn trigger_rebuild(self: &Arc<Self>, campaign: &str) {
        {
            let mut running = self.rebuilding.lock().unwrap_or_else(|p| p.into_inner());
            if !running.insert(campaign.to_string()) {
                return;
            }
        }
        let svc = self.clone();
        let campaign = campaign.to_string();
        tokio::spawn(async move {
            match svc.rebuild(&campaign).await {
                Ok(true) => tracing::info!(campaign, "counters rebuilt from the database"),
                Ok(false) => tracing::debug!(campaign, "counters rebuilt elsewhere"),
                Err(e) => {
                    tracing::warn!(campaign, error = %e, "counter rebuild failed; the next request retries")
                }
            }
            svc.rebuilding
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&campaign);
        });
    }

    /// Rebuilds now; returns whether this call created the pool.
    pub async fn rebuild(&self, campaign: &str) -> Result<bool, CouponError> {
        let lock_ttl = self.settings.rebuild_timeout + Duration::from_secs(5);
        let Some(lock) = self
            .counters
            .try_lock(&format!("rebuild:{}", Self::pool(campaign)), lock_ttl)
            .await?
        else {
            return Ok(false);
        };
        let result = self.rebuild_locked(campaign).await;
        if let Err(e) = self.counters.unlock(&lock).await {
            tracing::warn!(error = %e, "rebuild lock release failed; it expires on its own");
        }
        result
    }

    async fn rebuild_locked(&self, campaign: &str) -> Result<bool, CouponError> {
        let pool = Self::pool(campaign);
        if self.counters.remaining(&pool).await?.is_some() {
            return Ok(false);
        }
        let fence_id = uuid::Uuid::now_v7().to_string();
        let fence = CouponEvent::Fence {
            fence_id: fence_id.clone(),
            campaign: campaign.to_string(),
        };
        self.producer.send(campaign, fence.encode()).await?;
        let deadline = tokio::time::Instant::now() + self.settings.rebuild_timeout;
        while !store::fence_seen(self.db.pool(), &fence_id).await? {
            if tokio::time::Instant::now() >= deadline {
                tracing::warn!(
                    campaign,
                    "the consumer did not reach the rebuild fence in time; is it running?"
                );
                return Err(CouponError::CountersRebuilding);
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        let c = store::get_campaign(self.db.pool(), campaign)
            .await?
            .ok_or_else(|| CouponError::UnknownCampaign(campaign.to_string()))?;
        let holders = store::holder_counts(self.db.pool(), campaign).await?;
        let created = self
            .counters
            .seed(&pool, c.spec.quota - c.issued, &holders)
            .await?;
        if created {
            self.metrics
                .counter_rebuilds
                .with_label_values(&[SERVICE, campaign])
                .inc();
        }
        Ok(created)
    }
}
