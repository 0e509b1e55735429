//! Router assembly and the serve loop.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

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

/// What one process lets a client hold: connections, and how long a
/// connection may dawdle. Every field is a flag ([`HttpArgs`]).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Open connections at most; one more is answered 503 and closed.
    pub max_connections: usize,
    /// How long a connection may take to send a request's head, counted
    /// from when the server is ready for it: bounds slowly sent headers and
    /// idle keep-alive connections alike (hyper's header-read timer starts
    /// as soon as the connection is idle).
    pub idle_timeout: Duration,
    /// How long a request body may pause between chunks before the request
    /// fails (408) and the connection closes.
    pub body_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        HttpArgs::default().limits()
    }
}

/// The connection limits as flags, for every serving binary.
#[derive(clap::Args, Debug, Clone)]
pub struct HttpArgs {
    /// Open connections at most; beyond it a new connection gets 503 and is closed.
    #[arg(long, env = "PROMO_MAX_CONNECTIONS", default_value_t = 10_000)]
    pub max_connections: usize,
    /// Milliseconds a connection may take to send a request head, counted
    /// from when it is idle: closes idle keep-alive and half-sent requests.
    #[arg(long, env = "PROMO_IDLE_TIMEOUT_MS", default_value_t = 30_000)]
    pub idle_timeout_ms: u64,
    /// Milliseconds a request body may pause between chunks.
    #[arg(long, env = "PROMO_BODY_TIMEOUT_MS", default_value_t = 10_000)]
    pub body_timeout_ms: u64,
}

impl Default for HttpArgs {
    fn default() -> Self {
        Self {
            max_connections: 10_000,
            idle_timeout_ms: 30_000,
            body_timeout_ms: 10_000,
        }
    }
}

impl HttpArgs {
    pub fn limits(&self) -> Limits {
        Limits {
            max_connections: self.max_connections.max(1),
            idle_timeout: Duration::from_millis(self.idle_timeout_ms.max(1)),
            body_timeout: Duration::from_millis(self.body_timeout_ms.max(1)),
        }
    }
}

/// Serves with the default [`Limits`] until `shutdown` is cancelled.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    serve_with(listener, router, shutdown, Limits::default()).await
}

/// What a connection over the limit is told before it is closed: the same
/// problem+json as every other error, written without parsing its request.
static OVER_CAPACITY: std::sync::LazyLock<Vec<u8>> = std::sync::LazyLock::new(|| {
    let body = serde_json::json!({
        "type": "https://promo.dev/problems/too_many_connections",
        "title": "Service Unavailable",
        "status": 503,
        "detail": "the server's connection limit is reached; retry shortly",
        "code": "too_many_connections",
    })
    .to_string();
    format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/problem+json\r\n\
         retry-after: 1\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
});

/// Serves HTTP/1.1 until `shutdown` is cancelled, then stops accepting and
/// drains in-flight requests (idle connections close at once).
pub async fn serve_with(
    listener: TcpListener,
    router: Router,
    shutdown: CancellationToken,
    limits: Limits,
) -> std::io::Result<()> {
    use hyper_util::rt::{TokioIo, TokioTimer};
    let router = router.layer(tower_http::timeout::RequestBodyTimeoutLayer::new(
        limits.body_timeout,
    ));
    let slots = Arc::new(tokio::sync::Semaphore::new(limits.max_connections));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.idle_timeout)
        .keep_alive(true);
    loop {
        let (stream, _) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: pause, not die.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tokio::spawn(async move {
                use tokio::io::AsyncWriteExt;
                let mut stream = stream;
                let _ = tokio::time::timeout(Duration::from_secs(1), async {
                    let _ = stream.write_all(&OVER_CAPACITY).await;
                    let _ = stream.shutdown().await;
                })
                .await;
            });
            continue;
        };
        let _ = stream.set_nodelay(true);
        let service = hyper_util::service::TowerToHyperService::new(router.clone());
        let conn = http.serve_connection(TokioIo::new(stream), service);
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            let _ = conn.await;
            drop(slot);
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
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
#[cfg(feature = "service")]
pub struct ServiceParts {
    pub name: &'static str,
    pub router: Router,
    pub openapi: utoipa::openapi::OpenApi,
    pub readiness: super::health::Readiness,
    /// The service's outbox, for `/admin/events`, and the admin token.
    #[cfg(feature = "service")]
    pub events: Option<(Arc<crate::outbox::Outbox>, super::auth::AdminToken)>,
}

/// The whole HTTP surface of a process serving `parts`: their routes
/// (tracked per service), `/healthz`, `/readyz`, `/metrics`, the merged
/// OpenAPI document at `/api-docs/openapi.json` and Swagger UI at
/// `/api/docs` (assets compiled in from the crate, nothing downloaded).
#[cfg(feature = "service")]
pub fn assemble(parts: Vec<ServiceParts>, metrics: Arc<Metrics>) -> Router {
    let mut router = Router::new();
    let mut readiness = super::health::Readiness::default();
    let mut doc: Option<utoipa::openapi::OpenApi> = None;
    let several = parts.len() > 1;
    let mut outboxes = Vec::new();
    let mut events_token = None;
    for p in parts {
        if let Some((outbox, token)) = p.events {
            outboxes.push(outbox);
            events_token.get_or_insert(token);
        }
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
    if let Some(token) = events_token {
        router = router.merge(track(
            super::events::router(outboxes, token),
            "events",
            metrics.clone(),
        ));
        doc.merge(<super::events::EventsDoc as utoipa::OpenApi>::openapi());
    }
    if several {
        doc.info.title = "Promotion platform".into();
        doc.info.description = Some("Coupons, time sales and points; see each tag.".into());
    }
    add_admin_security(&mut doc);
    let docs = utoipa_swagger_ui::SwaggerUi::new("/api/docs")
        .external_url_unchecked("/api-docs/openapi.json", super::openapi::complete(&doc));
    finish(router.merge(readiness.router()).merge(docs), metrics)
}

/// Declares the `admin_token` bearer scheme the admin routes refer to.
#[cfg(feature = "service")]
fn add_admin_security(doc: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
    let components = doc.components.get_or_insert_with(Default::default);
    components.add_security_scheme(
        "admin_token",
        SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
    );
}
