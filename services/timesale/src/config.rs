//! The time-sale service's configuration: every flag also reads an
//! environment variable; defaults suit a local run. Flags carry a
//! `timesale-` prefix so `promo standalone` can take them beside the other
//! services'.

use std::time::Duration;

use clap::Args;
use promo_platform::service::ServiceArgs;

use crate::{Settings, TimesaleService};

#[derive(Args, Debug, Clone)]
pub struct TimesaleArgs {
    /// Kafka topic of V3 order events.
    #[arg(long, env = "PROMO_TIMESALE_TOPIC", default_value = crate::DEFAULT_TOPIC)]
    pub timesale_topic: String,
    /// Partitions of the topic when this service creates it.
    #[arg(long, env = "PROMO_TIMESALE_TOPIC_PARTITIONS", default_value_t = crate::DEFAULT_PARTITIONS)]
    pub timesale_topic_partitions: i32,
    /// Consumer group of the V3 consumer.
    #[arg(long, env = "PROMO_TIMESALE_CONSUMER_GROUP", default_value = crate::DEFAULT_GROUP)]
    pub timesale_consumer_group: String,
    /// Most events persisted in one database transaction.
    #[arg(long, env = "PROMO_TIMESALE_CONSUMER_BATCH", default_value_t = crate::DEFAULT_CONSUMER_BATCH)]
    pub timesale_consumer_batch: usize,
    /// Attempts of an ordering transaction that lost a lock conflict.
    #[arg(long, env = "PROMO_TIMESALE_TX_ATTEMPTS", default_value_t = crate::DEFAULT_TX_ATTEMPTS)]
    pub timesale_tx_attempts: u32,
    /// Seconds an admission stays in flight (counted, its event not yet
    /// persisted) before the audit may give it back when no event arrived.
    /// At least 11 (the queue's delivery timeout is 10 s).
    #[arg(long, env = "PROMO_TIMESALE_AUDIT_AGE_SECONDS", default_value_t = promo_platform::admission::AUDIT_AGE.as_secs())]
    pub timesale_audit_age_seconds: u64,
    /// Seconds an `Idempotency-Key` whose first request never answered (its
    /// process died) answers 409 before a retry may run it again; the retry
    /// answers from the first request's effect if it happened. Keep it above
    /// the longest a request can take; at least 5.
    #[arg(long, env = "PROMO_TIMESALE_IDEMPOTENCY_LEASE_SECONDS", default_value_t = promo_platform::http::idempotency::LEASE.as_secs())]
    pub timesale_idempotency_lease_seconds: u64,
}

impl ServiceArgs for TimesaleArgs {
    type Service = TimesaleService;

    fn settings(&self) -> Settings {
        Settings {
            topic: self.timesale_topic.clone(),
            topic_partitions: self.timesale_topic_partitions,
            group: self.timesale_consumer_group.clone(),
            consumer_max_batch: self.timesale_consumer_batch.max(1),
            tx_attempts: self.timesale_tx_attempts.max(1),
            audit_age: Duration::from_secs(
                self.timesale_audit_age_seconds
                    .max(promo_platform::ports::queue::DELIVERY_TIMEOUT.as_secs() + 1),
            ),
            idempotency_lease: Duration::from_secs(self.timesale_idempotency_lease_seconds.max(5)),
            ..Settings::default()
        }
    }
}
