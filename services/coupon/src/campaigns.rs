//! What the queued core ([`promo_platform::queued`]) needs of the coupon
//! service: [`Campaigns`], its [`Domain`]. The core's consumer groups a
//! batch per campaign and hands each campaign's undecided requests to
//! [`Campaigns::persist`], which re-checks them against the database —
//! per-user limit and quota, with `issue::batch`, which V2's group commit
//! uses too — and writes coupons, the issued count and the refusals with
//! multi-row statements. An issued request is its coupon row (which
//! carries the request id); only a refused one gets an `issue_requests` row.

use std::collections::HashSet;

use async_trait::async_trait;
use promo_platform::{
    ports::{Database, Dialect},
    queued::{Domain, Fresh, QueuedEvent, Standing},
    time::from_ms,
};
use sqlx::{AnyConnection, AnyPool};

use crate::{
    domain::{
        issue::batch::{decide, decide_unlocked, Wanted},
        Campaign, CampaignSpec, CouponError, Strategy,
    },
    events::{CouponEvent, IssueBody},
    store::{self, RequestOutcome},
};

/// The coupon service's campaigns, as the queued core sees them.
#[derive(Debug, Clone, Copy)]
pub struct Campaigns;

#[async_trait]
impl Domain for Campaigns {
    const SERVICE: &'static str = promo_contracts::coupon::SERVICE;
    const TOPIC: &'static str = promo_contracts::coupon::TOPIC;
    const GROUP: &'static str = promo_contracts::coupon::GROUP;
    const PARTITIONS: i32 = promo_contracts::coupon::PARTITIONS;
    const ACCEPTED: &'static str = "issued";
    type Promotion = Campaign;
    type Spec = CampaignSpec;
    type Event = CouponEvent;
    type Error = CouponError;

    fn id(c: &Campaign) -> &str {
        &c.id
    }

    async fn upsert(
        db: &Database,
        id: &str,
        spec: &CampaignSpec,
    ) -> Result<(Campaign, Option<Campaign>), CouponError> {
        spec.validate()?;
        store::upsert_campaign(db.pool(), db.dialect(), id, spec).await
    }

    fn standing(c: &Campaign) -> Standing {
        let queued = c.spec.strategy == Strategy::Queued;
        Standing {
            limit: c.spec.quota,
            persisted: c.issued,
            counted: queued,
            queued,
            buckets: c.spec.buckets,
        }
    }

    async fn get(pool: &AnyPool, id: &str) -> Result<Option<Campaign>, sqlx::Error> {
        store::get_campaign(pool, id).await
    }

    async fn list(pool: &AnyPool) -> Result<Vec<Campaign>, sqlx::Error> {
        store::list_campaigns(pool).await
    }

    async fn holders(pool: &AnyPool, id: &str) -> Result<Vec<(String, i64)>, sqlx::Error> {
        store::holder_counts(pool, id).await
    }

    async fn decided(
        conn: &mut AnyConnection,
        ids: &[&str],
    ) -> Result<HashSet<String>, sqlx::Error> {
        store::decided_requests(conn, ids).await
    }

    async fn persist(
        tx: &mut AnyConnection,
        dialect: Dialect,
        campaign: &str,
        fresh: &[&Fresh<IssueBody>],
    ) -> Result<(u64, u64), CouponError> {
        // Refusals only: an issued request's coupon row carries its request id.
        let mut refused = Vec::new();
        let mut issued = 0u64;
        let wanted: Vec<Wanted> = fresh
            .iter()
            .map(|r| Wanted {
                user_id: &r.body.user_id,
                request_id: Some(&r.id),
                at: from_ms(r.body.admitted_at),
            })
            .collect();
        // First without the campaign's row lock (see `decide_unlocked`);
        // under it when that would refuse anything.
        let mut answers = None;
        if let Some(c) = store::read_campaign(tx, dialect, campaign, false).await? {
            answers = decide_unlocked(tx, dialect, &c, &wanted).await?;
            if answers.is_none() {
                if let Some(c) = store::lock_campaign(tx, dialect, campaign).await? {
                    answers = Some(decide(tx, dialect, &c, &wanted).await?);
                }
            }
        }
        match answers {
            None => {
                for r in fresh {
                    refused.push(refusal(campaign, r, "unknown_campaign"));
                }
            }
            Some(answers) => {
                for (r, answer) in fresh.iter().zip(answers) {
                    match answer {
                        Ok(_) => issued += 1,
                        Err(why) => refused.push(refusal(campaign, r, why.reason())),
                    }
                }
            }
        }
        store::insert_refusals(tx, &refused).await?;
        Ok((issued, refused.len() as u64))
    }
}

fn refusal(campaign: &str, r: &Fresh<IssueBody>, reason: &str) -> RequestOutcome {
    RequestOutcome {
        request_id: r.id.clone(),
        campaign: campaign.to_string(),
        user_id: r.body.user_id.clone(),
        coupon_id: None,
        reason: Some(reason.to_string()),
        admitted_at: r.body.admitted_at,
    }
}

impl QueuedEvent for CouponEvent {
    type Body = IssueBody;

    fn fence(campaign: &str, fence_id: &str) -> Self {
        CouponEvent::Fence {
            fence_id: fence_id.to_string(),
            campaign: campaign.to_string(),
        }
    }

    fn admitted(self) -> promo_platform::queued::Admitted<IssueBody> {
        use promo_platform::queued::Admitted;
        match self {
            CouponEvent::Issue {
                request_id,
                campaign,
                user_id,
                admitted_at,
                bucket,
            } => Admitted::Request {
                key: campaign,
                bucket,
                id: request_id,
                body: IssueBody {
                    user_id,
                    admitted_at,
                },
            },
            CouponEvent::Fence { fence_id, campaign } => Admitted::Fence {
                key: campaign,
                fence_id,
            },
        }
    }
}
