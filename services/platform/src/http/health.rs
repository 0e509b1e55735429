//! `/healthz` (the process is up) and `/readyz` (its backends answer).

use std::sync::Arc;

use axum::{extract::State, http::StatusCode, routing::get, Json, Router};
use futures::future::BoxFuture;
use serde_json::{json, Value};

use crate::ports::{Counters, Queue};

/// One named readiness probe.
pub type Check = Arc<dyn Fn() -> BoxFuture<'static, Result<(), String>> + Send + Sync>;

#[derive(Clone, Default)]
pub struct Readiness {
    checks: Vec<(String, Check)>,
}

impl Readiness {
    pub fn with(mut self, name: impl Into<String>, check: Check) -> Self {
        self.checks.push((name.into(), check));
        self
    }

    #[cfg(feature = "service")]
    pub fn database(self, name: &str, db: crate::ports::Database) -> Self {
        self.with(
            name,
            Arc::new(move || {
                let db = db.clone();
                Box::pin(async move { db.ping().await.map_err(|e| e.to_string()) })
            }),
        )
    }

    pub fn counters(self, counters: Arc<dyn Counters>) -> Self {
        self.with(
            "counters",
            Arc::new(move || {
                let c = counters.clone();
                Box::pin(async move { c.ping().await.map_err(|e| e.to_string()) })
            }),
        )
    }

    /// The queue: `topic` can be sent to (broker reachable, producer sound).
    pub fn queue(self, queue: Arc<dyn Queue>, topic: String) -> Self {
        self.with(
            "queue",
            Arc::new(move || {
                let (q, t) = (queue.clone(), topic.clone());
                Box::pin(async move { q.ping(&t).await.map_err(|e| e.to_string()) })
            }),
        )
    }

    /// The consumer running in this process goes round its loop (see
    /// [`crate::consumer::STALLED_AFTER_SECONDS`]).
    #[cfg(feature = "service")]
    pub fn consumer(self, metrics: Arc<crate::metrics::Metrics>, service: &'static str) -> Self {
        self.with(
            format!("{service}_consumer"),
            Arc::new(move || {
                let beat = metrics
                    .consumer_heartbeat
                    .with_label_values(&[service])
                    .get();
                Box::pin(async move {
                    let idle = crate::consumer::now_secs() - beat;
                    if beat == 0 {
                        Err("not started".to_string())
                    } else if idle > crate::consumer::STALLED_AFTER_SECONDS {
                        Err(format!("stalled for {idle} s"))
                    } else {
                        Ok(())
                    }
                })
            }),
        )
    }

    pub fn merge(mut self, other: Readiness) -> Self {
        for (name, check) in other.checks {
            if !self.checks.iter().any(|(n, _)| *n == name) {
                self.checks.push((name, check));
            }
        }
        self
    }

    pub fn router(self) -> Router {
        Router::new()
            .route("/healthz", get(|| async { Json(json!({"status": "ok"})) }))
            .route("/readyz", get(readyz))
            .with_state(Arc::new(self))
    }
}

async fn readyz(State(r): State<Arc<Readiness>>) -> (StatusCode, Json<Value>) {
    let mut ok = true;
    let mut results = serde_json::Map::new();
    for (name, check) in &r.checks {
        let result = tokio::time::timeout(std::time::Duration::from_secs(2), check())
            .await
            .unwrap_or_else(|_| Err("timed out after 2s".into()));
        let v = match result {
            Ok(()) => json!("ok"),
            Err(e) => {
                ok = false;
                json!(e)
            }
        };
        results.insert(name.clone(), v);
    }
    let status = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(json!({"status": if ok {"ready"} else {"not_ready"}, "checks": results})),
    )
}
