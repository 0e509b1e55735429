//! The time-sale service's flags: the queued core's ([`Flags`]: topic,
//! partitions, group, batch, audit age, idempotency lease), the attempts
//! of a conflicting transaction and the hold sweep's interval. Every flag also reads an environment
//! variable and carries a `timesale-` prefix so `promo standalone` can take
//! them beside the other services'; defaults suit a local run.

use clap::Args;
use promo_platform::{queued::Flags, service::ServiceArgs};

use crate::{Sales, Settings, TimesaleService};

#[derive(Args, Debug, Clone)]
pub struct TimesaleArgs {
    #[command(flatten)]
    pub queued: Flags<Sales>,
    /// Attempts of an ordering transaction that lost a lock conflict.
    #[arg(long, env = "PROMO_TIMESALE_TX_ATTEMPTS", default_value_t = crate::DEFAULT_TX_ATTEMPTS)]
    pub timesale_tx_attempts: u32,
    /// How often each replica expires due holds (milliseconds).
    #[arg(long, env = "PROMO_TIMESALE_HOLD_SWEEP_MS", default_value_t = crate::DEFAULT_HOLD_SWEEP_MS,
        value_parser = clap::value_parser!(u64).range(10..=60_000))]
    pub timesale_hold_sweep_ms: u64,
}

impl ServiceArgs for TimesaleArgs {
    type Service = TimesaleService;

    fn settings(&self) -> Settings {
        Settings {
            queued: self.queued.settings(),
            tx_attempts: self.timesale_tx_attempts.max(1),
            hold_sweep: std::time::Duration::from_millis(self.timesale_hold_sweep_ms),
        }
    }
}
