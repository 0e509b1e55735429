//! Router assembly and the serve loop.

use std::{sync::Arc, time::Instant};

use axum::{
    extract::{DefaultBodyLimit, MatchedPath, Request, State},
    http::header,
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::get,
    Router,
};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::ApiError;
use crate::metrics::Metrics;

/// Per-route request count and latency, labelled with `service` and the
/// route template (never the raw path, which would explode cardinality).
pub fn track(router: Router, service: &'static str, metrics: Arc<Metrics>) -> Router {
    router.route_layer(middleware::from_fn_with_state(
        (service, metrics),
        track_request,
    ))
}

async fn track_request(
    State((service, metrics)): State<(&'static str, Arc<Metrics>)>,
    req: Request,
    next: Next,
) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".into());
    let method = req.method().as_str().to_string();
    let started = Instant::now();
    let res = next.run(req).await;
    metrics
        .http_duration
        .with_label_values(&[service, &route, &method])
        .observe(started.elapsed().as_secs_f64());
    metrics
        .http_requests
        .with_label_values(&[service, &route, &method, res.status().as_str()])
        .inc();
    res
}

/// The routes every process serves besides its services: `/metrics`, the
/// body limit and problem+json 404s.
pub fn finish(router: Router, metrics: Arc<Metrics>) -> Router {
    router
        .route(
            "/metrics",
            get(move || {
                let m = metrics.clone();
                async move {
                    (
                        [(
                            header::CONTENT_TYPE,
                            "text/plain; version=0.0.4; charset=utf-8",
                        )],
                        m.render(),
                    )
                }
            }),
        )
        .fallback(|| async {
            ApiError::not_found("route_not_found", "no such route").into_response()
        })
        .layer(DefaultBodyLimit::max(super::BODY_LIMIT_BYTES))
}

/// Serves until `shutdown` is cancelled, then drains in-flight requests.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    axum::serve(listener, router)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
}

/// Cancels `token` on Ctrl-C or SIGTERM (what Kubernetes sends).
pub fn cancel_on_signal(token: CancellationToken) {
    tokio::spawn(async move {
        let ctrl_c = tokio::signal::ctrl_c();
        #[cfg(unix)]
        {
            let mut term =
                match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot listen for SIGTERM");
                        let _ = ctrl_c.await;
                        token.cancel();
                        return;
                    }
                };
            tokio::select! {
                _ = ctrl_c => {},
                _ = term.recv() => {},
            }
        }
        #[cfg(not(unix))]
        let _ = ctrl_c.await;
        tracing::info!("shutting down");
        token.cancel();
    });
}
