//! The coupon service's flags: the queued core's ([`Flags`]: topic,
//! partitions, group, batch, audit age, idempotency lease) and V2's lock
//! wait. Every flag also reads an environment variable and carries a
//! `coupon-` prefix so `promo standalone` can take them beside the other
//! services'; defaults suit a local run.

use std::time::Duration;

use clap::Args;
use promo_platform::{queued::Flags, service::ServiceArgs};

use crate::{Campaigns, CouponService, Settings};

#[derive(Args, Debug, Clone)]
pub struct CouponArgs {
    #[command(flatten)]
    pub queued: Flags<Campaigns>,
    /// How long V2 waits for a user's Redis lock before answering 503.
    #[arg(long, env = "PROMO_COUPON_LOCK_WAIT_MS", default_value_t = crate::DEFAULT_LOCK_WAIT_MS)]
    pub coupon_lock_wait_ms: u64,
}

impl ServiceArgs for CouponArgs {
    type Service = CouponService;

    fn settings(&self) -> Settings {
        Settings {
            queued: self.queued.settings(),
            lock_wait: Duration::from_millis(self.coupon_lock_wait_ms),
            ..Settings::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use clap::Parser;
    use promo_platform::service::ServiceArgs;

    use super::CouponArgs;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: CouponArgs,
    }

    fn settings(argv: &[&str]) -> crate::Settings {
        let cli = Cli::try_parse_from(std::iter::once("coupon").chain(argv.iter().copied()))
            .expect("flags parse");
        cli.args.settings()
    }

    #[test]
    fn defaults_come_from_the_contracts() {
        let s = settings(&[]);
        assert_eq!(s.queued.topic, promo_contracts::coupon::TOPIC);
        assert_eq!(s.queued.group, promo_contracts::coupon::GROUP);
        assert_eq!(
            s.queued.topic_partitions,
            promo_contracts::coupon::PARTITIONS
        );
        assert_eq!(
            s.lock_wait,
            Duration::from_millis(crate::DEFAULT_LOCK_WAIT_MS)
        );
    }

    #[test]
    fn prefixed_flags_set_the_core_settings_with_their_floors() {
        let s = settings(&[
            "--coupon-topic=t",
            "--coupon-topic-partitions=3",
            "--coupon-consumer-group=g",
            "--coupon-consumer-batch=0",
            "--coupon-audit-age-seconds=1",
            "--coupon-idempotency-lease-seconds=2",
            "--coupon-lock-wait-ms=7",
        ]);
        assert_eq!(
            (s.queued.topic.as_str(), s.queued.group.as_str()),
            ("t", "g")
        );
        assert_eq!(s.queued.topic_partitions, 3);
        assert_eq!(s.queued.consumer_max_batch, 1, "at least one event a batch");
        assert_eq!(
            s.queued.audit_age,
            Duration::from_secs(11),
            "above the delivery timeout"
        );
        assert_eq!(s.queued.idempotency_lease, Duration::from_secs(5));
        assert_eq!(s.lock_wait, Duration::from_millis(7));
    }

    #[test]
    fn a_bad_value_names_its_flag() {
        let err = Cli::try_parse_from(["coupon", "--coupon-topic-partitions", "many"])
            .err()
            .expect("refused");
        assert!(
            err.to_string().contains("--coupon-topic-partitions"),
            "{err}"
        );
    }
}
