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
    #[error("{step}: {source}")]
    InStep {
        step: Step,
        #[source]
        source: Box<Error>,
    },
}

/// The reconcile pipeline's steps, named in its errors. Scaling has no step
/// of its own: the consumer replicas are set with the workloads (`Apply`),
/// and a lag that cannot be read fails nothing (scaling then goes by the
/// promotions' pending figures).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Validate,
    Apply,
    Register,
    Counters,
    Status,
}

impl std::fmt::Display for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Step::Validate => "validate",
            Step::Apply => "apply",
            Step::Register => "register",
            Step::Counters => "counters",
            Step::Status => "status",
        })
    }
}

impl Error {
    /// This error, as the failure of pipeline step `step`.
    pub fn in_step(self, step: Step) -> Self {
        match self {
            already @ Error::InStep { .. } => already,
            other => Error::InStep {
                step,
                source: Box::new(other),
            },
        }
    }

    /// The step that failed, when known.
    pub fn step(&self) -> Option<Step> {
        match self {
            Error::InStep { step, .. } => Some(*step),
            _ => None,
        }
    }

    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::InStep { source, .. } => source.metric_label(),
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

#[cfg(test)]
mod tests {
    use super::{Error, Step};

    #[test]
    fn an_error_names_the_step_that_failed_and_keeps_its_kind() {
        let e = Error::Missing("namespace").in_step(Step::Register);
        assert_eq!(e.to_string(), "register: object has no namespace");
        assert_eq!(e.step(), Some(Step::Register));
        assert_eq!(e.metric_label(), "malformed_object");
        // The innermost step is the one that failed.
        assert_eq!(e.in_step(Step::Status).step(), Some(Step::Register));
    }
}
