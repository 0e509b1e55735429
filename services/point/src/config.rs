//! The point service's own flags (prefixed `point-` so `promo standalone`
//! takes them beside the other services'); the shared ones are in
//! `promo_platform::service`.

use std::time::Duration;

use clap::Args;
use promo_platform::service::ServiceArgs;

use crate::{PointService, Settings};

#[derive(Args, Debug, Clone)]
pub struct PointArgs {
    /// Tries of a mutation that lost its optimistic version check before 409 conflict.
    #[arg(long, env = "PROMO_POINT_ATTEMPTS", default_value_t = 10)]
    pub point_attempts: u32,
    /// Longest life of a cached balance, seconds.
    #[arg(long, env = "PROMO_POINT_CACHE_TTL_SECS", default_value_t = 60)]
    pub point_cache_ttl_secs: u64,
    /// How many days ahead `expiringSoon` looks.
    #[arg(long, env = "PROMO_POINT_EXPIRING_SOON_DAYS", default_value_t = 30)]
    pub point_expiring_soon_days: u64,
}

impl ServiceArgs for PointArgs {
    type Service = PointService;

    fn settings(&self) -> Settings {
        Settings {
            attempts: self.point_attempts.max(1),
            cache_ttl: Duration::from_secs(self.point_cache_ttl_secs.max(1)),
            expiring_soon: Duration::from_secs(self.point_expiring_soon_days * 24 * 3600),
            ..Settings::default()
        }
    }
}
