//! `Idempotency-Key` on every mutating call of a service (docs/api.md: repeating a
//! call with the same key returns the first answer and changes nothing), for
//! services whose mutations do not store the key in their own transaction —
//! coupon and time sale. (Points store it with the ledger entry.)
//!
//! claim → run → record, in the service's database (`idempotency_keys`, from
//! `migrations/shared/*/idempotency.sql`, which each such service lists):
//! - a request with the header first claims (scope, key) with a hash of its
//!   method, path and body;
//! - a claim already there answers instead: the first answer again (with
//!   `Idempotency-Replayed: true`), 422 `idempotency_key_reused` for a
//!   different request under the same key, or 409 `idempotency_in_progress`
//!   while the first one runs;
//! - the handler then runs in a task of its own, so a client that goes away
//!   does not leave its claim half done, and its answer is recorded — unless
//!   it is a 5xx, which changed nothing (the transaction rolled back, V3
//!   units went back): the claim is dropped so that a retry runs again.
//!
//! A process that dies between a handler's effect and the record leaves the
//! claim in progress. A retry answers 409 while the claim is younger than
//! the lease ([`LEASE`]); after that one retry takes the claim over and runs
//! the handler again — which never makes a second effect, because the
//! effect carries the key: every keyed request reaches its handler with a
//! [`Keyed`] extension whose `effect_id` is derived from (scope, key), and
//! handlers that create something (a coupon, an order, a queued request)
//! give it that id. A retaken run first looks for its effect under that id
//! and answers from it (the first answer) when it happened; the database's
//! unique key on the id refuses a second one. A handler that finds its
//! effect still under way (a queued request in flight) marks its answer
//! [`Unsettled`]: the claim stays in progress and a later retry looks
//! again. Mutations that change state in place (redeem for an order,
//! cancel, an admin PUT) answer a repeat from the state they left.
//!
//! Keys are kept for [`RETENTION`]. Refusals (4xx) — which anyone can cause
//! without changing anything — are kept for [`REFUSAL_RETENTION`] only, and
//! at most [`REFUSALS_PER_WINDOW`] of them per process and window: past
//! that a refusal is answered but not kept, so a retry runs again (it had
//! no effect, so this cannot make a second one). At most every ten minutes
//! a claim starts a purge of what is older in the background.

use std::{
    sync::{
        atomic::{AtomicI64, Ordering},
        Arc,
    },
    time::Duration,
};

use axum::{
    body::{to_bytes, Body},
    extract::{Request, State},
    http::{header, HeaderValue, Method, StatusCode},
    middleware::Next,
    response::{IntoResponse, Response},
};
use sha2::{Digest, Sha256};

use super::{ApiError, BODY_LIMIT_BYTES};
use crate::{
    ids::check_id,
    ports::{sql::is_unique_violation, Database},
    shield::to_completion,
    time::now_ms,
};

/// The header a replayed answer carries.
pub const REPLAYED: &str = "idempotency-replayed";

/// The table, per dialect: a service that uses [`idempotent`] lists it
/// among its migrations.
pub const MYSQL_TABLE: &str = include_str!("../../../../migrations/shared/mysql/idempotency.sql");
pub const SQLITE_TABLE: &str = include_str!("../../../../migrations/shared/sqlite/idempotency.sql");

/// How long a claim with no answer blocks retries (409) before one retry
/// may take it over: longer than a live handler can take.
pub const LEASE: Duration = Duration::from_secs(60);
/// How long a key answers with its first answer.
pub const RETENTION: Duration = Duration::from_secs(24 * 3600);
/// How long a refusal (4xx) is replayed.
pub const REFUSAL_RETENTION: Duration = Duration::from_secs(600);
/// Refusals one process keeps per [`REFUSAL_RETENTION`] window, at most.
pub const REFUSALS_PER_WINDOW: usize = 50_000;
const PURGE_EVERY: Duration = Duration::from_secs(600);

/// The middleware's state: the service's database, the retention rules and
/// when keys were last purged.
#[derive(Clone)]
pub struct Idempotency {
    db: Database,
    retention: Duration,
    lease: Duration,
    refusal_retention: Duration,
    refusals_per_window: usize,
    /// (start of the current refusal window in ms, refusals kept in it).
    refusals: Arc<std::sync::Mutex<(i64, usize)>>,
    last_purge_ms: Arc<AtomicI64>,
}

impl Idempotency {
    pub fn new(db: Database) -> Self {
        Self::with_retention(db, RETENTION)
    }

    pub fn with_retention(db: Database, retention: Duration) -> Self {
        Self {
            db,
            retention,
            lease: LEASE,
            refusal_retention: REFUSAL_RETENTION.min(retention),
            refusals_per_window: REFUSALS_PER_WINDOW,
            refusals: Arc::default(),
            last_purge_ms: Arc::new(AtomicI64::new(0)),
        }
    }

    /// Keeps refusals for `retention`, at most `per_window` per window.
    pub fn with_refusal_limits(mut self, retention: Duration, per_window: usize) -> Self {
        self.refusal_retention = retention.min(self.retention);
        self.refusals_per_window = per_window;
        self
    }

    /// Lets a retry take over a claim left without an answer for `lease`.
    pub fn with_lease(mut self, lease: Duration) -> Self {
        self.lease = lease;
        self
    }

    /// Whether one more refusal may be kept in this window.
    fn keep_refusal(&self) -> bool {
        let now = now_ms();
        let mut w = self.refusals.lock().unwrap_or_else(|p| p.into_inner());
        if now - w.0 >= self.refusal_retention.as_millis() as i64 {
            *w = (now, 0);
        }
        if w.1 >= self.refusals_per_window {
            return false;
        }
        w.1 += 1;
        true
    }

    /// Deletes keys older than the retention and refusals older than theirs,
    /// in the background, unless that was done within the last ten minutes
    /// (or the shorter retention).
    fn purge_if_due(&self) {
        let now = now_ms();
        let every = PURGE_EVERY
            .min(self.retention)
            .min(self.refusal_retention)
            .as_millis() as i64;
        let last = self.last_purge_ms.load(Ordering::Relaxed);
        if now - last < every
            || self
                .last_purge_ms
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            return;
        }
        let (db, before) = (self.db.clone(), now - self.retention.as_millis() as i64);
        let refused_before = now - self.refusal_retention.as_millis() as i64;
        tokio::spawn(async move {
            let purged = sqlx::query(
                "DELETE FROM idempotency_keys \
                 WHERE created_at < ? OR (status >= 400 AND created_at < ?)",
            )
            .bind(before)
            .bind(refused_before)
            .execute(db.pool())
            .await;
            match purged {
                Ok(r) => tracing::debug!(keys = r.rows_affected(), "idempotency keys purged"),
                Err(e) => {
                    tracing::warn!(error = %e, "idempotency keys not purged; tried again later")
                }
            }
        });
    }
}

/// A service's routes with Idempotency-Key on every mutation: `admin`
/// behind the admin token (the key is claimed inside the check, so a refused
/// call claims nothing), `public` open; both keep their keys in `idem`.
pub fn with_keys<S: Clone + Send + Sync + 'static>(
    idem: Idempotency,
    admin_token: super::auth::AdminToken,
    admin: axum::Router<S>,
    public: axum::Router<S>,
) -> axum::Router<S> {
    use axum::middleware::from_fn_with_state;
    let keys = from_fn_with_state(idem, idempotent);
    let admin = admin
        .route_layer(keys.clone())
        .route_layer(from_fn_with_state(admin_token, super::auth::require_admin));
    axum::Router::new()
        .merge(admin)
        .merge(public.route_layer(keys))
}

/// What a handler learns about a request that carries an `Idempotency-Key`
/// (a request extension): the id its effect carries, and whether this run
/// took over a claim whose first run never recorded an answer.
#[derive(Clone, Debug)]
pub struct Keyed {
    /// A UUID derived from (method and path, key): the same for every retry.
    pub effect_id: String,
    /// The first run died (or outlived the lease) without recording an
    /// answer: look for its effect under `effect_id` before making one.
    pub retaken: bool,
}

impl Keyed {
    /// The effect id of `key` under `scope` ("METHOD /path").
    pub fn effect_id(scope: &str, key: &str) -> String {
        let digest = Sha256::new()
            .chain_update(b"effect\0")
            .chain_update(scope.as_bytes())
            .chain_update([0])
            .chain_update(key.as_bytes())
            .finalize();
        let mut bytes = [0u8; 16];
        bytes.copy_from_slice(&digest[..16]);
        uuid::Uuid::new_v8(bytes).to_string()
    }
}

/// A response extension: the handler found the effect of the first run
/// still under way, so the claim stays in progress and nothing is recorded.
#[derive(Clone, Copy, Debug)]
pub struct Unsettled;

/// The answer of a retaken run that found the first run's effect still
/// under way: 409 `idempotency_in_progress`, marked [`Unsettled`].
pub fn unsettled() -> Response {
    let mut r = in_progress();
    r.extensions_mut().insert(Unsettled);
    r
}

fn in_progress() -> Response {
    ApiError::conflict(
        "idempotency_in_progress",
        "the first request with this Idempotency-Key has not finished; retry later",
    )
    .into_response()
}

/// Declares the optional `Idempotency-Key` header on every mutating
/// operation of `doc` that does not declare it already.
pub fn document(doc: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::{
        path::{ParameterBuilder, ParameterIn},
        schema::{ObjectBuilder, Type},
        Required,
    };
    for item in doc.paths.paths.values_mut() {
        let operations = [
            &mut item.post,
            &mut item.put,
            &mut item.patch,
            &mut item.delete,
        ];
        for op in operations.into_iter().flatten() {
            let params = op.parameters.get_or_insert_with(Vec::new);
            if params
                .iter()
                .any(|p| p.name.eq_ignore_ascii_case("idempotency-key"))
            {
                continue;
            }
            params.push(
                ParameterBuilder::new()
                    .name("Idempotency-Key")
                    .parameter_in(ParameterIn::Header)
                    .required(Required::False)
                    .description(Some(
                        "Repeating the call with the same key answers the first answer \
                         (with `Idempotency-Replayed: true`) and changes nothing; kept 24 h \
                         (refusals: 10 minutes).",
                    ))
                    .schema(Some(
                        ObjectBuilder::new()
                            .schema_type(Type::String)
                            .max_length(Some(128)),
                    ))
                    .build(),
            );
        }
    }
}

/// Middleware (`axum::middleware::from_fn_with_state(Idempotency::new(db), idempotent)`).
pub async fn idempotent(State(idem): State<Idempotency>, req: Request, next: Next) -> Response {
    let mutating = !matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    let key = req.headers().get("idempotency-key").cloned();
    let Some(key) = key.filter(|_| mutating) else {
        return next.run(req).await;
    };
    idem.purge_if_due();
    match claim_and_run(idem, key, req, next).await {
        Ok(r) | Err(r) => r,
    }
}

async fn claim_and_run(
    idem: Idempotency,
    key: HeaderValue,
    req: Request,
    next: Next,
) -> Result<Response, Response> {
    let key = key
        .to_str()
        .map_err(|_| bad_key("Idempotency-Key must be visible ASCII"))?
        .to_string();
    check_id("Idempotency-Key", &key).map_err(|e| ApiError::from(e).into_response())?;
    let (parts, body) = req.into_parts();
    let body = to_bytes(body, BODY_LIMIT_BYTES)
        .await
        .map_err(|_| ApiError::body_too_large().into_response())?;
    let scope = format!("{} {}", parts.method, parts.uri.path());
    let hash = request_hash(&scope, &body);
    let mut req = Request::from_parts(parts, Body::from(body));
    // From here on the claim must end recorded or dropped: run it whole.
    to_completion(async move {
        let retaken = match claim(&idem, &scope, &key, &hash).await? {
            Claimed::New => false,
            Claimed::Retaken => true,
            Claimed::Answered(answer) => return Ok(answer),
        };
        req.extensions_mut().insert(Keyed {
            effect_id: Keyed::effect_id(&scope, &key),
            retaken,
        });
        let response = next.run(req).await;
        Ok(record(&idem, &scope, &key, response).await)
    })
    .await
}

/// What a claim found.
enum Claimed {
    /// The key is new: this request runs.
    New,
    /// The key's first run left no answer for longer than the lease: this
    /// request took its claim over and runs again.
    Retaken,
    /// The first answer, replayed.
    Answered(Response),
}

/// What identifies a request under a key: its method and path, and its body
/// as canonical JSON (keys sorted, no insignificant whitespace), so the same
/// JSON written differently is the same request. A body that is not JSON
/// is taken byte for byte (the handler refuses it anyway).
fn request_hash(scope: &str, body: &[u8]) -> String {
    let canonical = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| serde_json::to_vec(&v).ok());
    format!(
        "{:x}",
        Sha256::new()
            .chain_update(scope.as_bytes())
            .chain_update([0])
            .chain_update(canonical.as_deref().unwrap_or(body))
            .finalize()
    )
}

fn bad_key(detail: &str) -> Response {
    ApiError::bad_request("invalid_idempotency_key", detail).into_response()
}

/// Claims (scope, key) for this request.
async fn claim(
    idem: &Idempotency,
    scope: &str,
    key: &str,
    hash: &str,
) -> Result<Claimed, Response> {
    let db = &idem.db;
    let inserted = sqlx::query(
        "INSERT INTO idempotency_keys (scope, idem_key, request_hash, status, body, created_at) \
         VALUES (?, ?, ?, NULL, NULL, ?)",
    )
    .bind(scope)
    .bind(key)
    .bind(hash)
    .bind(now_ms())
    .execute(db.pool())
    .await;
    match inserted {
        Ok(_) => return Ok(Claimed::New),
        Err(e) if is_unique_violation(&e) => {}
        Err(e) => return Err(ApiError::from(e).into_response()),
    }
    let (first_hash, status, body, claimed_at): (String, Option<i64>, Option<String>, i64) =
        sqlx::query_as(
            "SELECT request_hash, status, body, created_at FROM idempotency_keys \
             WHERE scope = ? AND idem_key = ?",
        )
        .bind(scope)
        .bind(key)
        .fetch_one(db.pool())
        .await
        .map_err(|e| ApiError::from(e).into_response())?;
    if first_hash != hash {
        return Err(ApiError::unprocessable(
            "idempotency_key_reused",
            "this Idempotency-Key was used for a different request",
        )
        .into_response());
    }
    let Some(status) = status.and_then(|s| StatusCode::from_u16(s as u16).ok()) else {
        if now_ms() - claimed_at >= idem.lease.as_millis() as i64
            && take_over(db, scope, key, claimed_at).await?
        {
            tracing::info!(
                scope,
                "idempotency claim without an answer taken over after its lease"
            );
            return Ok(Claimed::Retaken);
        }
        return Err(in_progress());
    };
    Ok(Claimed::Answered(replay(status, body.unwrap_or_default())))
}

/// Takes over a claim still without an answer and still dated `claimed_at`
/// (so of two retries only one wins), restarting its lease.
async fn take_over(
    db: &Database,
    scope: &str,
    key: &str,
    claimed_at: i64,
) -> Result<bool, Response> {
    let taken = sqlx::query(
        "UPDATE idempotency_keys SET created_at = ? \
         WHERE scope = ? AND idem_key = ? AND status IS NULL AND created_at = ?",
    )
    .bind(now_ms().max(claimed_at + 1))
    .bind(scope)
    .bind(key)
    .bind(claimed_at)
    .execute(db.pool())
    .await
    .map_err(|e| ApiError::from(e).into_response())?;
    Ok(taken.rows_affected() == 1)
}

fn replay(status: StatusCode, body: String) -> Response {
    let kind = if status.is_client_error() || status.is_server_error() {
        "application/problem+json"
    } else {
        "application/json"
    };
    let mut r = (status, [(header::CONTENT_TYPE, kind)], body).into_response();
    r.headers_mut()
        .insert(REPLAYED, HeaderValue::from_static("true"));
    r
}

/// Records `response` as the answer to (scope, key), or drops the claim
/// for a 5xx and for a refusal past the window's budget, or leaves it in
/// progress for an [`Unsettled`] answer; returns the response.
async fn record(idem: &Idempotency, scope: &str, key: &str, response: Response) -> Response {
    let db = &idem.db;
    let status = response.status();
    if response.extensions().get::<Unsettled>().is_some() {
        return response;
    }
    if status.is_server_error() || (status.is_client_error() && !idem.keep_refusal()) {
        let dropped = sqlx::query("DELETE FROM idempotency_keys WHERE scope = ? AND idem_key = ?")
            .bind(scope)
            .bind(key)
            .execute(db.pool())
            .await;
        if let Err(e) = dropped {
            tracing::error!(error = %e, scope, "idempotency claim of a failed request not dropped; retries will answer 409");
        }
        return response;
    }
    let (parts, body) = response.into_parts();
    let bytes = match to_bytes(body, usize::MAX).await {
        Ok(b) => b,
        Err(e) => {
            tracing::error!(error = %e, scope, "answer body unreadable; idempotency claim left in progress");
            return ApiError::internal(e).into_response();
        }
    };
    let stored = sqlx::query(
        "UPDATE idempotency_keys SET status = ?, body = ? WHERE scope = ? AND idem_key = ?",
    )
    .bind(i64::from(status.as_u16()))
    .bind(String::from_utf8_lossy(&bytes).into_owned())
    .bind(scope)
    .bind(key)
    .execute(db.pool())
    .await;
    if let Err(e) = stored {
        tracing::error!(error = %e, scope, "answer not recorded; retries with this key will answer 409");
    }
    Response::from_parts(parts, Body::from(bytes))
}

#[cfg(test)]
mod tests {
    use utoipa::openapi::{
        path::{
            HttpMethod, OperationBuilder, ParameterBuilder, ParameterIn, PathItem, PathsBuilder,
        },
        OpenApiBuilder, Required,
    };

    fn keys(doc: &utoipa::openapi::OpenApi, path: &str, post: bool) -> Vec<bool> {
        let item = &doc.paths.paths[path];
        let op = if post { &item.post } else { &item.get };
        op.as_ref()
            .and_then(|o| o.parameters.as_ref())
            .map(|ps| {
                ps.iter()
                    .filter(|p| p.name.eq_ignore_ascii_case("idempotency-key"))
                    .map(|p| matches!(p.required, Required::True))
                    .collect()
            })
            .unwrap_or_default()
    }

    #[test]
    fn the_same_json_written_differently_is_the_same_request() {
        let h = |b: &str| super::request_hash("POST /x", b.as_bytes());
        let first = h(r#"{"userId":"u","quantity":1}"#);
        assert_eq!(first, h("{ \"quantity\" : 1,\n \"userId\": \"u\" }"));
        assert_ne!(first, h(r#"{"userId":"u","quantity":2}"#));
        assert_ne!(
            first,
            super::request_hash("POST /y", br#"{"userId":"u","quantity":1}"#)
        );
        assert_ne!(
            h("not json"),
            h("not  json"),
            "non-JSON bodies byte for byte"
        );
    }

    #[test]
    fn documents_the_header_on_mutations_only_once() {
        let required = ParameterBuilder::new()
            .name("Idempotency-Key")
            .parameter_in(ParameterIn::Header)
            .required(Required::True)
            .build();
        let paths = PathsBuilder::new()
            .path(
                "/a",
                PathItem::new(HttpMethod::Post, OperationBuilder::new()),
            )
            .path(
                "/b",
                PathItem::new(HttpMethod::Get, OperationBuilder::new()),
            )
            .path(
                "/c",
                PathItem::new(
                    HttpMethod::Post,
                    OperationBuilder::new().parameter(required),
                ),
            );
        let mut doc = OpenApiBuilder::new().paths(paths).build();
        super::document(&mut doc);
        assert_eq!(keys(&doc, "/a", true), vec![false], "optional on a POST");
        assert_eq!(keys(&doc, "/b", false), Vec::<bool>::new(), "not on a GET");
        assert_eq!(keys(&doc, "/c", true), vec![true], "a declared one is kept");
    }
}
