//! The V3 consumer: persists admitted issue requests in batches.
//!
//! One transaction per batch: per campaign (locked in id order, so two
//! consumers never deadlock) it skips requests already decided (a redelivered
//! batch stores nothing twice), re-checks every request against the
//! database — per-user limit and quota, with `issue::batch`, which V2's
//! group commit uses too — and writes coupons, the issued count and the
//! refusals with multi-row statements. An issued request is its coupon row
//! (which carries the request id); only a refused one gets an
//! `issue_requests` row. Offsets are committed by the
//! shared loop only after this commit.

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
        issue::batch::{decide, Wanted},
        CouponError,
    },
    events::CouponEvent,
    store::{self, RequestOutcome},
    CouponService, SERVICE,
};

pub struct IssueConsumer {
    pub svc: Arc<CouponService>,
}

struct Request {
    request_id: String,
    user_id: String,
    admitted_at: i64,
}

#[async_trait]
impl BatchHandler for IssueConsumer {
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
pub async fn persist_batch(svc: &CouponService, batch: &[Message]) -> Result<(), CouponError> {
    let mut by_campaign: BTreeMap<String, Vec<Request>> = BTreeMap::new();
    let mut fences = Vec::new();
    let mut seen = HashSet::new();
    for event in decode_batch::<CouponEvent>(batch, &svc.metrics, SERVICE) {
        match event {
            CouponEvent::Issue {
                request_id,
                campaign,
                user_id,
                admitted_at,
            } => {
                if seen.insert(request_id.clone()) {
                    by_campaign.entry(campaign).or_default().push(Request {
                        request_id,
                        user_id,
                        admitted_at,
                    });
                }
            }
            CouponEvent::Fence { fence_id, campaign } => fences.push((fence_id, campaign)),
        }
    }

    let dialect = svc.db.dialect();
    let mut tx = svc.db.pool().begin().await?;
    let ids: Vec<&str> = seen.iter().map(String::as_str).collect();
    let decided = store::decided_requests(&mut tx, &ids).await?;
    let (mut issued_total, mut rejected_total, mut redelivered) = (0u64, 0u64, 0u64);

    for (campaign, requests) in &by_campaign {
        let fresh: Vec<&Request> = requests
            .iter()
            .filter(|r| !decided.contains(&r.request_id))
            .collect();
        redelivered += (requests.len() - fresh.len()) as u64;
        if fresh.is_empty() {
            continue;
        }
        // Refusals only: an issued request's coupon row carries its request id.
        let mut refused = Vec::new();
        let mut issued = 0u64;
        match store::lock_campaign(&mut tx, dialect, campaign).await? {
            None => {
                for r in &fresh {
                    refused.push(refusal(campaign, r, "unknown_campaign"));
                }
            }
            Some(c) => {
                let wanted: Vec<Wanted> = fresh
                    .iter()
                    .map(|r| Wanted {
                        user_id: &r.user_id,
                        request_id: Some(&r.request_id),
                        at: from_ms(r.admitted_at),
                    })
                    .collect();
                for (r, answer) in fresh
                    .iter()
                    .zip(decide(&mut tx, dialect, &c, &wanted).await?)
                {
                    match answer {
                        Ok(_) => issued += 1,
                        Err(why) => refused.push(refusal(campaign, r, why.reason())),
                    }
                }
            }
        }
        store::insert_refusals(&mut tx, &refused).await?;
        issued_total += issued;
        rejected_total += refused.len() as u64;
    }
    for (fence_id, campaign) in &fences {
        store::record_fence(&mut tx, dialect, fence_id, campaign).await?;
    }
    tx.commit().await?;
    // Every request of the batch is decided now (refusals included).
    for (campaign, requests) in &by_campaign {
        let ids: Vec<&str> = requests.iter().map(|r| r.request_id.as_str()).collect();
        clear_decided(&*svc.counters, &CouponService::pool(campaign), &ids).await;
    }

    let m = &svc.metrics.consumer_messages;
    m.with_label_values(&[SERVICE, "issued"])
        .inc_by(issued_total);
    m.with_label_values(&[SERVICE, "rejected"])
        .inc_by(rejected_total);
    m.with_label_values(&[SERVICE, "redelivered"])
        .inc_by(redelivered);
    Ok(())
}

fn refusal(campaign: &str, r: &Request, reason: &str) -> RequestOutcome {
    RequestOutcome {
        request_id: r.request_id.clone(),
        campaign: campaign.to_string(),
        user_id: r.user_id.clone(),
        coupon_id: None,
        reason: Some(reason.to_string()),
        admitted_at: r.admitted_at,
    }
}
