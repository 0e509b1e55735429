//! What the services and the operator must agree on, in one crate both
//! depend on (it depends on nothing): the services' names, how a campaign's
//! or sale's counters pool is named, and the defaults of the queued
//! services' topics, consumer groups and partitions. A deployment may
//! override topics and groups by flags (services) and the platform
//! configuration (operator) — these are the values both start from.

/// The counters pool of a campaign or sale: `<service>:<id>`. The services
/// (admission, rebuild, audit) and the operator (pre-warm, clean-up) name
/// pools through this alone.
pub fn pool_name(service: &str, id: &str) -> String {
    format!("{service}:{id}")
}

/// The coupon service.
pub mod coupon {
    /// Its name: metric label, pool prefix, Kubernetes component.
    pub const SERVICE: &str = "coupon";
    /// Topic of V3 issue events.
    pub const TOPIC: &str = "promo.coupon.issue";
    /// Consumer group of the V3 consumer.
    pub const GROUP: &str = "coupon-consumer";
    /// Partitions of the topic when it is created.
    pub const PARTITIONS: i32 = 8;
}

/// The time-sale service.
pub mod timesale {
    /// Its name: metric label, pool prefix, Kubernetes component.
    pub const SERVICE: &str = "timesale";
    /// Topic of V3 order events.
    pub const TOPIC: &str = "promo.timesale.order";
    /// Consumer group of the V3 consumer.
    pub const GROUP: &str = "timesale-consumer";
    /// Partitions of the topic when it is created.
    pub const PARTITIONS: i32 = 8;
}

/// The point service.
pub mod point {
    /// Its name: metric label, Kubernetes component.
    pub const SERVICE: &str = "point";
}

#[cfg(test)]
mod tests {
    #[test]
    fn pools_are_named_service_colon_id() {
        assert_eq!(
            super::pool_name(super::coupon::SERVICE, "c-1"),
            "coupon:c-1"
        );
    }
}
