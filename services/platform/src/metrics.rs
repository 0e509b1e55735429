//! The Prometheus registry and the metric families every service shares.
//! All names start with `promo_`; labels are drawn from service, route,
//! strategy, promotion and outcome.

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, RwLock},
};

use prometheus::{
    exponential_buckets, Encoder, GaugeVec, HistogramOpts, HistogramVec, IntCounterVec,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Latency buckets from 100 µs to ~3.3 s.
fn latency_buckets() -> Vec<f64> {
    exponential_buckets(0.0001, 2.0, 16).unwrap_or_default()
}

#[derive(Clone)]
pub struct Metrics {
    pub registry: Registry,
    pub http_requests: IntCounterVec,
    pub http_duration: HistogramVec,
    pub admissions: IntCounterVec,
    pub remaining: IntGaugeVec,
    pub pending: IntGaugeVec,
    pub counter_rebuilds: IntCounterVec,
    pub consumer_batch_size: HistogramVec,
    pub admission_batch_size: HistogramVec,
    pub consumer_lag: IntGaugeVec,
    pub consumer_persist_duration: HistogramVec,
    pub consumer_messages: IntCounterVec,
    pub ledger_operations: IntCounterVec,
    pub optimistic_retries: IntCounterVec,
    pub optimistic_conflicts: IntCounterVec,
    pub cache_reads: IntCounterVec,
    pub consumer_persist_failures: IntCounterVec,
    pub consumer_lag_errors: IntCounterVec,
    pub admissions_returned: IntCounterVec,
    pub counter_drift: IntGaugeVec,
    pub consumer_heartbeat: IntGaugeVec,
    pub holds: IntCounterVec,
    pub held: IntGaugeVec,
    pub hold_confirm_duration: HistogramVec,
    pub events_published: IntCounterVec,
    pub outbox_backlog: IntGaugeVec,
    pub outbox_oldest: GaugeVec,
    /// Per service, the campaign or sale ids that exist (see [`Metrics::know`]).
    known: Arc<RwLock<HashMap<String, HashSet<String>>>>,
}

/// The `promotion` label of admissions for an id that names no campaign or sale.
pub const OTHER: &str = "other";

impl Metrics {
    pub fn new() -> Arc<Self> {
        let registry = Registry::new();
        let m = Self {
            http_requests: IntCounterVec::new(
                Opts::new("promo_http_requests_total", "HTTP requests answered"),
                &["service", "route", "method", "status"],
            )
            .expect("valid metric"),
            http_duration: HistogramVec::new(
                HistogramOpts::new(
                    "promo_http_request_duration_seconds",
                    "HTTP request latency",
                )
                .buckets(latency_buckets()),
                &["service", "route", "method"],
            )
            .expect("valid metric"),
            admissions: IntCounterVec::new(
                Opts::new(
                    "promo_admissions_total",
                    "Issue/order attempts by strategy and outcome (issued, sold_out, duplicate, rejected, not_active, error)",
                ),
                &["service", "strategy", "promotion", "outcome"],
            )
            .expect("valid metric"),
            remaining: IntGaugeVec::new(
                Opts::new("promo_remaining", "Quota or stock still available"),
                &["service", "promotion"],
            )
            .expect("valid metric"),
            pending: IntGaugeVec::new(
                Opts::new("promo_pending", "Admitted, not yet persisted"),
                &["service", "promotion"],
            )
            .expect("valid metric"),
            counter_rebuilds: IntCounterVec::new(
                Opts::new(
                    "promo_counter_rebuilds_total",
                    "Admission counters rebuilt from the database after loss",
                ),
                &["service", "promotion"],
            )
            .expect("valid metric"),
            consumer_batch_size: HistogramVec::new(
                HistogramOpts::new("promo_consumer_batch_size", "Messages per consumed batch")
                    .buckets(exponential_buckets(1.0, 2.0, 14).unwrap_or_default()),
                &["service"],
            )
            .expect("valid metric"),
            admission_batch_size: HistogramVec::new(
                HistogramOpts::new(
                    "promo_admission_batch_size",
                    "V3 admissions of one bucket decided in one coalesced counters step",
                )
                .buckets(exponential_buckets(1.0, 2.0, 8).unwrap_or_default()),
                &["service"],
            )
            .expect("valid metric"),
            consumer_lag: IntGaugeVec::new(
                Opts::new(
                    "promo_consumer_lag",
                    "Messages not yet committed by the consumer group",
                ),
                &["service"],
            )
            .expect("valid metric"),
            consumer_persist_duration: HistogramVec::new(
                HistogramOpts::new(
                    "promo_consumer_persist_duration_seconds",
                    "Time to persist one batch (database transaction)",
                )
                .buckets(latency_buckets()),
                &["service"],
            )
            .expect("valid metric"),
            consumer_messages: IntCounterVec::new(
                Opts::new("promo_consumer_messages_total", "Messages persisted by outcome"),
                &["service", "outcome"],
            )
            .expect("valid metric"),
            ledger_operations: IntCounterVec::new(
                Opts::new(
                    "promo_ledger_operations_total",
                    "Point ledger operations by kind (earn, use, refund, expire) and outcome",
                ),
                &["service", "kind", "outcome"],
            )
            .expect("valid metric"),
            optimistic_retries: IntCounterVec::new(
                Opts::new(
                    "promo_optimistic_retries_total",
                    "Transactions run again after losing an optimistic version check",
                ),
                &["service"],
            )
            .expect("valid metric"),
            optimistic_conflicts: IntCounterVec::new(
                Opts::new(
                    "promo_optimistic_conflicts_total",
                    "Operations answered 409 conflict because every retry lost",
                ),
                &["service"],
            )
            .expect("valid metric"),
            cache_reads: IntCounterVec::new(
                Opts::new(
                    "promo_cache_reads_total",
                    "Cache-aside reads by result (hit, miss, error)",
                ),
                &["service", "result"],
            )
            .expect("valid metric"),
            consumer_persist_failures: IntCounterVec::new(
                Opts::new(
                    "promo_consumer_persist_failures_total",
                    "Batches the consumer failed to persist (and retries), by reason",
                ),
                &["service", "reason"],
            )
            .expect("valid metric"),
            consumer_lag_errors: IntCounterVec::new(
                Opts::new(
                    "promo_consumer_lag_errors_total",
                    "Lag reads that failed; promo_consumer_lag is absent meanwhile, not stale",
                ),
                &["service"],
            )
            .expect("valid metric"),
            admissions_returned: IntCounterVec::new(
                Opts::new(
                    "promo_admissions_returned_total",
                    "Admissions the audit gave back because their event was never queued",
                ),
                &["service", "promotion"],
            )
            .expect("valid metric"),
            counter_drift: IntGaugeVec::new(
                Opts::new(
                    "promo_counter_drift",
                    "Units the counters hold beyond persisted + in flight (remaining + in flight - (limit - persisted))",
                ),
                &["service", "promotion"],
            )
            .expect("valid metric"),
            consumer_heartbeat: IntGaugeVec::new(
                Opts::new(
                    "promo_consumer_heartbeat_seconds",
                    "Unix time the consumer last went round its loop",
                ),
                &["service"],
            )
            .expect("valid metric"),
            holds: IntCounterVec::new(
                Opts::new(
                    "promo_holds_total",
                    "Held orders that ended, by outcome (confirmed, expired, cancelled)",
                ),
                &["service", "outcome"],
            )
            .expect("valid metric"),
            held: IntGaugeVec::new(
                Opts::new("promo_held", "Units held for payment now (HELD orders)"),
                &["service", "promotion"],
            )
            .expect("valid metric"),
            hold_confirm_duration: HistogramVec::new(
                HistogramOpts::new(
                    "promo_hold_confirm_seconds",
                    "From an order being held to its confirmation",
                )
                .buckets(exponential_buckets(0.5, 2.0, 18).unwrap_or_default()),
                &["service"],
            )
            .expect("valid metric"),
            events_published: IntCounterVec::new(
                Opts::new(
                    "promo_events_published_total",
                    "CloudEvents the outbox relay published (acknowledged by the broker)",
                ),
                &["service"],
            )
            .expect("valid metric"),
            outbox_backlog: IntGaugeVec::new(
                Opts::new("promo_outbox_backlog", "Outbox events not yet published"),
                &["service"],
            )
            .expect("valid metric"),
            outbox_oldest: GaugeVec::new(
                Opts::new(
                    "promo_outbox_oldest_unpublished_seconds",
                    "Age of the oldest outbox row not yet published (0 when none)",
                ),
                &["service"],
            )
            .expect("valid metric"),
            known: Arc::default(),
            registry,
        };
        for c in [
            Box::new(m.http_requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(m.http_duration.clone()),
            Box::new(m.admissions.clone()),
            Box::new(m.remaining.clone()),
            Box::new(m.pending.clone()),
            Box::new(m.counter_rebuilds.clone()),
            Box::new(m.consumer_batch_size.clone()),
            Box::new(m.admission_batch_size.clone()),
            Box::new(m.consumer_lag.clone()),
            Box::new(m.consumer_persist_duration.clone()),
            Box::new(m.consumer_messages.clone()),
            Box::new(m.ledger_operations.clone()),
            Box::new(m.optimistic_retries.clone()),
            Box::new(m.optimistic_conflicts.clone()),
            Box::new(m.cache_reads.clone()),
            Box::new(m.consumer_persist_failures.clone()),
            Box::new(m.consumer_lag_errors.clone()),
            Box::new(m.admissions_returned.clone()),
            Box::new(m.counter_drift.clone()),
            Box::new(m.consumer_heartbeat.clone()),
            Box::new(m.holds.clone()),
            Box::new(m.held.clone()),
            Box::new(m.hold_confirm_duration.clone()),
            Box::new(m.events_published.clone()),
            Box::new(m.outbox_backlog.clone()),
            Box::new(m.outbox_oldest.clone()),
        ] {
            m.registry.register(c).expect("metric registered once");
        }
        Arc::new(m)
    }

    /// Counts one admission attempt in `promo_admissions_total`. The
    /// `promotion` label is the campaign or sale id only when it is known to
    /// exist ([`Metrics::know`]); an id from a URL that names nothing is
    /// counted as [`OTHER`], so requests cannot add series without bound.
    pub fn count_admission(&self, service: &str, strategy: &str, key: &str, outcome: &str) {
        let key = if self.is_known(service, key) {
            key
        } else {
            OTHER
        };
        self.admissions
            .with_label_values(&[service, strategy, key, outcome])
            .inc();
    }

    fn known(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, HashSet<String>>> {
        self.known.read().unwrap_or_else(|p| p.into_inner())
    }

    fn is_known(&self, service: &str, key: &str) -> bool {
        self.known()
            .get(service)
            .is_some_and(|ids| ids.contains(key))
    }

    /// Records that campaign or sale `key` exists (created, updated or read
    /// from the database).
    pub fn know(&self, service: &str, key: &str) {
        if self.is_known(service, key) {
            return;
        }
        let mut known = self.known.write().unwrap_or_else(|p| p.into_inner());
        known
            .entry(service.to_string())
            .or_default()
            .insert(key.to_string());
    }

    /// Replaces the known ids of `service` with `keys`: every id that exists
    /// now (the periodic refresh), so deleted ones stop being labelled.
    pub fn know_only<'a>(&self, service: &str, keys: impl IntoIterator<Item = &'a str>) {
        let ids = keys.into_iter().map(str::to_string).collect();
        let mut known = self.known.write().unwrap_or_else(|p| p.into_inner());
        known.insert(service.to_string(), ids);
    }

    /// Sets a campaign's or sale's remaining and pending gauges.
    pub fn set_figures(&self, service: &str, key: &str, remaining: i64, pending: i64) {
        self.remaining
            .with_label_values(&[service, key])
            .set(remaining);
        self.pending.with_label_values(&[service, key]).set(pending);
    }

    /// The registry in the Prometheus text format.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let encoder = TextEncoder::new();
        if let Err(e) = encoder.encode(&self.registry.gather(), &mut buf) {
            tracing::error!(error = %e, "metrics encoding failed");
        }
        String::from_utf8(buf).unwrap_or_default()
    }
}
