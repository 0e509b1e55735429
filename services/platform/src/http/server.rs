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
use tokio::net::{TcpListener, TcpSocket};
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
/// body limit, and problem+json 404s and 405s (the 405 keeps its `Allow`).
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
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                axum::http::StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "this route does not answer that method; see the Allow header",
            )
            .into_response()
        })
        .fallback(|| async {
            ApiError::not_found("route_not_found", "no such route").into_response()
        })
        .layer(DefaultBodyLimit::max(super::BODY_LIMIT_BYTES))
}

/// Connections the kernel queues before they are accepted. A sale opens
/// with a burst of new connections; tokio's default backlog was 128 here, and
/// a connect beyond it waits for the client's SYN retransmit, a full second.
const LISTEN_BACKLOG: u32 = 4096;

/// Binds `address`, with an error that says which setting to change.
pub async fn bind(address: std::net::SocketAddr) -> Result<TcpListener, String> {
    let listen = || {
        let socket = if address.is_ipv4() {
            TcpSocket::new_v4()?
        } else {
            TcpSocket::new_v6()?
        };
        socket.set_reuseaddr(true)?;
        socket.bind(address)?;
        socket.listen(LISTEN_BACKLOG)
    };
    listen().map_err(|e: std::io::Error| {
        format!("cannot listen on {address}: {e} (set --listen / PROMO_LISTEN)")
    })
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

/// One service's contribution to a process: its routes, its OpenAPI
/// document and its readiness checks.
pub struct ServiceParts {
    pub name: &'static str,
    pub router: Router,
    pub openapi: utoipa::openapi::OpenApi,
    pub readiness: super::health::Readiness,
}

/// The whole HTTP surface of a process serving `parts`: their routes
/// (tracked per service), `/healthz`, `/readyz`, `/metrics`, the merged
/// OpenAPI document at `/api-docs/openapi.json` and Swagger UI at
/// `/api/docs` (assets compiled in from the crate, nothing downloaded).
pub fn assemble(parts: Vec<ServiceParts>, metrics: Arc<Metrics>) -> Router {
    let mut router = Router::new();
    let mut readiness = super::health::Readiness::default();
    let mut doc: Option<utoipa::openapi::OpenApi> = None;
    let several = parts.len() > 1;
    for p in parts {
        router = router.merge(track(p.router, p.name, metrics.clone()));
        readiness = readiness.merge(p.readiness);
        doc = Some(match doc {
            None => p.openapi,
            Some(mut d) => {
                d.merge(p.openapi);
                d
            }
        });
    }
    let mut doc = doc.unwrap_or_default();
    if several {
        doc.info.title = "Promotion platform".into();
        doc.info.description = Some("Coupons, time sales and points; see each tag.".into());
    }
    add_admin_security(&mut doc);
    let docs = utoipa_swagger_ui::SwaggerUi::new("/api/docs").url("/api-docs/openapi.json", doc);
    finish(router.merge(readiness.router()).merge(docs), metrics)
}

/// Declares the `admin_token` bearer scheme the admin routes refer to.
fn add_admin_security(doc: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
    let components = doc.components.get_or_insert_with(Default::default);
    components.add_security_scheme(
        "admin_token",
        SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
    );
}
