//! `/users/{userId}/points…`: earn, use, refund, balance, history.

use std::sync::Arc;

use axum::{
    extract::State,
    http::HeaderMap,
    routing::{get, post},
    Json, Router,
};
use chrono::{DateTime, Utc};
use promo_platform::{
    http::{
        page::{page, PageQuery},
        ApiError, ApiJson, ApiPath, ApiQuery,
    },
    ids::check_id,
};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::{
    domain::{
        ledger::{self, Applied, Op},
        view::{self, Points},
        Entry, PointError,
    },
    store, PointService,
};

pub fn router() -> Router<Arc<PointService>> {
    Router::new()
        .route("/users/{userId}/points", get(balance))
        .route("/users/{userId}/points/earn", post(earn))
        .route("/users/{userId}/points/use", post(spend))
        .route("/users/{userId}/points/refund", post(refund))
        .route("/users/{userId}/points/history", get(history))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EarnBody {
    /// Points to add (> 0).
    #[schema(minimum = 1, maximum = 1_000_000_000_000_f64)]
    pub amount: i64,
    pub reason: String,
    /// When these points stop being spendable; never when absent.
    #[serde(default)]
    pub expires_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UseBody {
    /// Points to spend (> 0), taken from the soonest-expiring first.
    #[schema(minimum = 1, maximum = 1_000_000_000_000_f64)]
    pub amount: i64,
    pub reason: String,
    #[serde(default)]
    pub order_id: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RefundBody {
    /// The USE entry to reverse.
    pub entry_id: String,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct HistoryPage {
    pub items: Vec<Entry>,
    /// Pass as `cursor` for the next (older) page; absent on the last page.
    pub next_cursor: Option<String>,
}

fn idempotency_key(headers: &HeaderMap) -> Result<String, ApiError> {
    let key = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .ok_or(PointError::IdempotencyKeyRequired)?;
    check_id("Idempotency-Key", key)?;
    Ok(key.to_string())
}

async fn mutate(
    svc: &PointService,
    user: &str,
    headers: &HeaderMap,
    op: Op,
) -> Result<Json<Applied>, ApiError> {
    let key = idempotency_key(headers)?;
    Ok(Json(ledger::apply(svc, user, &key, op).await?))
}

/// Earn points (optionally expiring). Needs an Idempotency-Key.
#[utoipa::path(post, path = "/users/{userId}/points/earn", tag = "point",
    params(("userId" = String, Path), ("Idempotency-Key" = String, Header)),
    request_body = EarnBody,
    responses((status = 200, body = Applied), (status = 400, description = "idempotency_key_required"),
        (status = 409, description = "conflict"), (status = 422, description = "invalid_request / idempotency_key_reused")))]
pub async fn earn(
    State(svc): State<Arc<PointService>>,
    ApiPath(user): ApiPath<String>,
    headers: HeaderMap,
    ApiJson(b): ApiJson<EarnBody>,
) -> Result<Json<Applied>, ApiError> {
    let op = Op::Earn {
        amount: b.amount,
        reason: b.reason,
        expires_at: b.expires_at,
    };
    mutate(&svc, &user, &headers, op).await
}

/// Spend points, soonest-expiring first. Needs an Idempotency-Key.
#[utoipa::path(post, path = "/users/{userId}/points/use", tag = "point",
    params(("userId" = String, Path), ("Idempotency-Key" = String, Header)),
    request_body = UseBody,
    responses((status = 200, body = Applied), (status = 409, description = "insufficient_balance / conflict"),
        (status = 400, description = "idempotency_key_required"), (status = 422, description = "invalid_request / idempotency_key_reused")))]
pub async fn spend(
    State(svc): State<Arc<PointService>>,
    ApiPath(user): ApiPath<String>,
    headers: HeaderMap,
    ApiJson(b): ApiJson<UseBody>,
) -> Result<Json<Applied>, ApiError> {
    if let Some(o) = &b.order_id {
        check_id("orderId", o)?;
    }
    let op = Op::Use {
        amount: b.amount,
        reason: b.reason,
        order_id: b.order_id,
    };
    mutate(&svc, &user, &headers, op).await
}

/// Reverse one USE, once: its points return to the lots it took them from.
#[utoipa::path(post, path = "/users/{userId}/points/refund", tag = "point",
    params(("userId" = String, Path), ("Idempotency-Key" = String, Header)),
    request_body = RefundBody,
    responses((status = 200, body = Applied), (status = 404, description = "entry_not_found"),
        (status = 409, description = "already_refunded / not_refundable / conflict"),
        (status = 400, description = "idempotency_key_required")))]
pub async fn refund(
    State(svc): State<Arc<PointService>>,
    ApiPath(user): ApiPath<String>,
    headers: HeaderMap,
    ApiJson(b): ApiJson<RefundBody>,
) -> Result<Json<Applied>, ApiError> {
    check_id("entryId", &b.entry_id)?;
    mutate(
        &svc,
        &user,
        &headers,
        Op::Refund {
            entry_id: b.entry_id,
        },
    )
    .await
}

/// The balance (expired points excluded) and what expires soon; served from
/// the cache when it can be.
#[utoipa::path(get, path = "/users/{userId}/points", tag = "point",
    params(("userId" = String, Path)), responses((status = 200, body = Points)))]
pub async fn balance(
    State(svc): State<Arc<PointService>>,
    ApiPath(user): ApiPath<String>,
) -> Result<Json<Points>, ApiError> {
    Ok(Json(view::points(&svc, &user).await?))
}

/// `?cursor=&limit=` of the history: its cursors are entry sequence numbers.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct HistoryQuery {
    /// `nextCursor` of the previous page.
    #[param(pattern = "^[0-9]{1,18}$")]
    pub cursor: Option<String>,
    /// 1..=100, default 20.
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<i64>,
}

/// The ledger, newest first; stable while entries are added.
#[utoipa::path(get, path = "/users/{userId}/points/history", tag = "point",
    params(("userId" = String, Path), HistoryQuery),
    responses((status = 200, body = HistoryPage), (status = 400, description = "invalid_query")))]
pub async fn history(
    State(svc): State<Arc<PointService>>,
    ApiPath(user): ApiPath<String>,
    ApiQuery(q): ApiQuery<HistoryQuery>,
) -> Result<Json<HistoryPage>, ApiError> {
    let q = PageQuery {
        cursor: q.cursor,
        limit: q.limit,
    };
    let (limit, cursor) = q.checked()?;
    let before = match cursor {
        Some(c) => Some(c.parse::<i64>().map_err(|_| {
            ApiError::bad_request("invalid_query", "cursor is not one this API gave")
        })?),
        None => None,
    };
    let fetched = store::history(svc.db.pool(), &user, before, limit + 1)
        .await
        .map_err(PointError::from)?;
    let (items, next_cursor) = page(fetched, limit, |e| e.seq.to_string());
    Ok(Json(HistoryPage { items, next_cursor }))
}
