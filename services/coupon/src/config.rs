//! The coupon service's configuration: every flag also reads an environment
//! variable; defaults suit a local run. Flags carry a `coupon-` prefix so
//! `promo standalone` can take them beside the other services'.

use std::time::Duration;

use clap::Args;
use promo_platform::service::ServiceArgs;

use crate::{CouponService, Settings};

#[derive(Args, Debug, Clone)]
pub struct CouponArgs {
    /// Kafka topic of V3 issue events.
    #[arg(long, env = "PROMO_COUPON_TOPIC", default_value = crate::DEFAULT_TOPIC)]
    pub coupon_topic: String,
    /// Partitions of the topic when this service creates it.
    #[arg(long, env = "PROMO_COUPON_TOPIC_PARTITIONS", default_value_t = crate::DEFAULT_PARTITIONS)]
    pub coupon_topic_partitions: i32,
    /// Consumer group of the V3 consumer.
    #[arg(
        long,
        env = "PROMO_COUPON_CONSUMER_GROUP",
        default_value = crate::DEFAULT_GROUP
    )]
    pub coupon_consumer_group: String,
    /// Most events persisted in one database transaction.
    #[arg(long, env = "PROMO_COUPON_CONSUMER_BATCH", default_value_t = crate::DEFAULT_CONSUMER_BATCH)]
    pub coupon_consumer_batch: usize,
    /// How long V2 waits for a user's Redis lock before answering 503.
    #[arg(long, env = "PROMO_COUPON_LOCK_WAIT_MS", default_value_t = crate::DEFAULT_LOCK_WAIT_MS)]
    pub coupon_lock_wait_ms: u64,
    /// Seconds an admission stays in flight (counted, its event not yet
    /// persisted) before the audit may give it back when no event arrived.
    /// At least 11 (the queue's delivery timeout is 10 s).
    #[arg(long, env = "PROMO_COUPON_AUDIT_AGE_SECONDS", default_value_t = promo_platform::admission::AUDIT_AGE.as_secs())]
    pub coupon_audit_age_seconds: u64,
    /// Seconds an `Idempotency-Key` whose first request never answered (its
    /// process died) answers 409 before a retry may run it again; the retry
    /// answers from the first request's effect if it happened. Keep it above
    /// the longest a request can take; at least 5.
    #[arg(long, env = "PROMO_COUPON_IDEMPOTENCY_LEASE_SECONDS", default_value_t = promo_platform::http::idempotency::LEASE.as_secs())]
    pub coupon_idempotency_lease_seconds: u64,
}

impl ServiceArgs for CouponArgs {
    type Service = CouponService;

    fn settings(&self) -> Settings {
        Settings {
            topic: self.coupon_topic.clone(),
            topic_partitions: self.coupon_topic_partitions,
            group: self.coupon_consumer_group.clone(),
            consumer_max_batch: self.coupon_consumer_batch.max(1),
            lock_wait: Duration::from_millis(self.coupon_lock_wait_ms),
            audit_age: Duration::from_secs(
                self.coupon_audit_age_seconds
                    .max(promo_platform::ports::queue::DELIVERY_TIMEOUT.as_secs() + 1),
            ),
            idempotency_lease: Duration::from_secs(self.coupon_idempotency_lease_seconds.max(5)),
            ..Settings::default()
        }
    }
}
