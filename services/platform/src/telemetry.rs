//! Tracing set-up: human-readable by default, JSON lines with `--log-json`
//! (what a log pipeline in Kubernetes wants). `RUST_LOG` overrides the filter.

use tracing_subscriber::{fmt, EnvFilter};

pub fn init(json: bool) {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn,rdkafka=warn"));
    let builder = fmt().with_env_filter(filter).with_target(false);
    // A second call (tests, standalone starting several services) is harmless.
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}
