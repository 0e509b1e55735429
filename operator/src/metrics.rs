//! The operator's own metrics (prefix `promo_operator_`).

use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

pub struct Metrics {
    pub registry: Registry,
    pub reconciles: IntCounter,
    pub failures: IntCounterVec,
    pub duration: Histogram,
    pub consumer_replicas: IntGaugeVec,
    pub consumer_lag: IntGaugeVec,
    pub counter_drift: IntGaugeVec,
    pub leader: IntGauge,
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let reconciles =
            IntCounter::new("promo_operator_reconcile_runs_total", "Reconciles started.")
                .expect("valid metric");
        let failures = IntCounterVec::new(
            Opts::new(
                "promo_operator_reconcile_failures_total",
                "Reconciles that failed, by reason.",
            ),
            &["reason"],
        )
        .expect("valid metric");
        let duration = Histogram::with_opts(
            HistogramOpts::new(
                "promo_operator_reconcile_duration_seconds",
                "Time a reconcile took.",
            )
            .buckets(vec![0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]),
        )
        .expect("valid metric");
        let consumer_replicas = IntGaugeVec::new(
            Opts::new(
                "promo_operator_consumer_replicas",
                "Replicas the operator set on a consumer Deployment.",
            ),
            &["namespace", "deployment"],
        )
        .expect("valid metric");
        let consumer_lag = IntGaugeVec::new(
            Opts::new(
                "promo_operator_consumer_lag",
                "Consumer group lag the operator scaled a consumer Deployment on.",
            ),
            &["namespace", "deployment"],
        )
        .expect("valid metric");
        let counter_drift = IntGaugeVec::new(
            Opts::new(
                "promo_operator_counter_drift",
                "A queued promotion's pending minus its consumer group's lag (0 when they agree).",
            ),
            &["namespace", "promotion"],
        )
        .expect("valid metric");
        let leader = IntGauge::new(
            "promo_operator_leader",
            "1 while this replica holds the leader Lease.",
        )
        .expect("valid metric");
        for m in [
            Box::new(reconciles.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(failures.clone()),
            Box::new(duration.clone()),
            Box::new(consumer_replicas.clone()),
            Box::new(consumer_lag.clone()),
            Box::new(counter_drift.clone()),
            Box::new(leader.clone()),
        ] {
            registry.register(m).expect("metric registered once");
        }
        Metrics {
            registry,
            reconciles,
            failures,
            duration,
            consumer_replicas,
            consumer_lag,
            counter_drift,
            leader,
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut buf)
            .expect("text encoding never fails");
        String::from_utf8(buf).unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
