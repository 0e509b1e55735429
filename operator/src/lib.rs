//! promotion-operator: turns `Promotion` resources into running campaigns.
//!
//! Reconcile is a pipeline (see [`controller`]): validate into a checked
//! value → build the desired objects with no client in sight ([`desired`],
//! [`scaling`], [`status`]) → server-side apply → register with the service
//! ([`admin`]) → pre-warm counters → status and Events.

pub mod admin;
pub mod config;
pub mod controller;
pub mod desired;
pub mod metrics;
pub mod platform;
pub mod scaling;
pub mod status;

/// Everything a reconcile can fail with; [`Error::metric_label`] names the
/// kind for `promo_operator_reconcile_failures_total{reason}`.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("admin API of the {service} service: {message}")]
    Admin {
        service: &'static str,
        message: String,
    },
    #[error("counters: {0}")]
    Counters(#[from] promo_platform::ports::counters::CountersError),
    #[error("consumer lag: {0}")]
    Lag(#[from] promo_platform::ports::queue::QueueError),
    #[error("finalizer: {0}")]
    Finalizer(String),
    #[error("object has no {0}")]
    Missing(&'static str),
}

impl Error {
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Kube(_) => "kube",
            Error::Admin { .. } => "admin_api",
            Error::Counters(_) => "counters",
            Error::Lag(_) => "consumer_lag",
            Error::Finalizer(_) => "finalizer",
            Error::Missing(_) => "malformed_object",
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
