//! Ordering routes: the sale's own strategy, or V1/V2/V3 explicitly; an
//! order's status; cancel.

use std::sync::Arc;

use axum::{
    extract::{Extension, State},
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::{get, post},
    Json, Router,
};
use promo_platform::{
    http::{
        idempotency::{self, Keyed},
        ApiError, ApiJson, ApiPath,
    },
    ids::check_id,
};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::{
    domain::{
        cancel, holds,
        ordering::{self, Placed},
        Order, Strategy, TimesaleError,
    },
    store, TimesaleService,
};

pub fn router() -> Router<Arc<TimesaleService>> {
    Router::new()
        .route("/time-sales/{sale}/orders", post(order_default))
        .route("/v1/time-sales/{sale}/orders", post(order_v1))
        .route("/v2/time-sales/{sale}/orders", post(order_v2))
        .route("/v3/time-sales/{sale}/orders", post(order_v3))
        .route("/orders/{orderId}", get(get_order))
        .route("/orders/{orderId}/cancel", post(cancel_order))
        .route("/orders/{orderId}/confirm", post(confirm_order))
}

/// The body of `POST /orders/{orderId}/confirm`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConfirmBody {
    /// The payment that pays for the hold (1–128 bytes); confirming again
    /// with the same reference answers the same order.
    pub payment_ref: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OrderBody {
    pub user_id: String,
    /// Units to buy (≥ 1, at most the per-user limit); all or nothing.
    #[schema(minimum = 1)]
    pub quantity: i64,
}

/// A queued order, accepted. (`OrderAccepted` in the document: the coupon
/// service's `Accepted` carries a requestId.)
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = OrderAccepted)]
pub struct Accepted {
    pub order_id: String,
    /// Always `PENDING`.
    pub status: &'static str,
}

async fn run(
    svc: Arc<TimesaleService>,
    strategy: Option<Strategy>,
    sale: String,
    body: OrderBody,
    keyed: Option<Extension<Keyed>>,
) -> Result<Response, ApiError> {
    check_id("userId", &body.user_id)?;
    if body.quantity < 1 {
        return Err(TimesaleError::InvalidQuantity("quantity must be at least 1".into()).into());
    }
    let keyed = keyed.map(|Extension(k)| k);
    let placed = ordering::place(&svc, strategy, &sale, &body.user_id, body.quantity, keyed).await;
    Ok(match placed {
        Err(TimesaleError::Unsettled) => return Ok(idempotency::unsettled()),
        answer => match answer? {
            Placed::Confirmed(o) => (StatusCode::CREATED, Json(o)).into_response(),
            Placed::Pending { order_id } => (
                StatusCode::ACCEPTED,
                Json(Accepted {
                    order_id,
                    status: "PENDING",
                }),
            )
                .into_response(),
        },
    })
}

/// Order with the sale's own strategy (201 order, or 202 for QUEUED).
#[utoipa::path(post, path = "/time-sales/{sale}/orders", tag = "timesale",
    params(("sale" = String, Path)), request_body = OrderBody,
    responses(
        (status = 201, body = Order), (status = 202, body = Accepted),
        (status = 404, description = "sale_not_found"), (status = 409, description = "limit_exceeded"),
        (status = 410, description = "sold_out"), (status = 422, description = "not_active / invalid_quantity"),
        (status = 503, description = "counters_unavailable; see Retry-After"),
    ))]
pub async fn order_default(
    State(svc): State<Arc<TimesaleService>>,
    ApiPath(sale): ApiPath<String>,
    keyed: Option<Extension<Keyed>>,
    ApiJson(body): ApiJson<OrderBody>,
) -> Result<Response, ApiError> {
    run(svc, None, sale, body, keyed).await
}

/// V1 Database with optimistic locking (conditional updates).
#[utoipa::path(post, path = "/v1/time-sales/{sale}/orders", tag = "timesale",
    params(("sale" = String, Path)), request_body = OrderBody,
    responses((status = 201, body = Order), (status = 409), (status = 410), (status = 422), (status = 404)))]
pub async fn order_v1(
    State(svc): State<Arc<TimesaleService>>,
    ApiPath(sale): ApiPath<String>,
    keyed: Option<Extension<Keyed>>,
    ApiJson(body): ApiJson<OrderBody>,
) -> Result<Response, ApiError> {
    run(svc, Some(Strategy::Database), sale, body, keyed).await
}

/// V2 Redis stock: one atomic counters step, then the database transaction.
#[utoipa::path(post, path = "/v2/time-sales/{sale}/orders", tag = "timesale",
    params(("sale" = String, Path)), request_body = OrderBody,
    responses((status = 201, body = Order), (status = 409), (status = 410), (status = 422), (status = 404), (status = 503)))]
pub async fn order_v2(
    State(svc): State<Arc<TimesaleService>>,
    ApiPath(sale): ApiPath<String>,
    keyed: Option<Extension<Keyed>>,
    ApiJson(body): ApiJson<OrderBody>,
) -> Result<Response, ApiError> {
    run(svc, Some(Strategy::RedisLock), sale, body, keyed).await
}

/// V3 Queued: atomic admission, 202 with an order id.
#[utoipa::path(post, path = "/v3/time-sales/{sale}/orders", tag = "timesale",
    params(("sale" = String, Path)), request_body = OrderBody,
    responses((status = 202, body = Accepted), (status = 409), (status = 410), (status = 422), (status = 404), (status = 503)))]
pub async fn order_v3(
    State(svc): State<Arc<TimesaleService>>,
    ApiPath(sale): ApiPath<String>,
    keyed: Option<Extension<Keyed>>,
    ApiJson(body): ApiJson<OrderBody>,
) -> Result<Response, ApiError> {
    run(svc, Some(Strategy::Queued), sale, body, keyed).await
}

/// An order: PENDING until the V3 consumer decided it, then CONFIRMED,
/// HELD (sales with holdSeconds) or REJECTED (with a reason); CANCELLED
/// after a cancel; EXPIRED once a hold has run out (shown so from
/// `holdExpiresAt` on, even before the sweep has given its units back).
#[utoipa::path(get, path = "/orders/{orderId}", tag = "timesale",
    params(("orderId" = String, Path)),
    responses((status = 200, body = Order), (status = 404, description = "order_not_found")))]
pub async fn get_order(
    State(svc): State<Arc<TimesaleService>>,
    ApiPath(order_id): ApiPath<String>,
) -> Result<Json<Order>, ApiError> {
    let pool = svc.core.db.pool();
    let decided = match store::get_order(pool, &order_id).await? {
        Some(o) => Some(o),
        None if svc.core.counters.ticket_pending(&order_id).await? => {
            return Ok(Json(Order::pending(order_id)));
        }
        // The consumer clears a ticket only after its commit: an order
        // decided between the two reads is in the database now.
        None => store::get_order(pool, &order_id).await?,
    };
    decided
        .map(|o| Json(o.as_of(chrono::Utc::now())))
        .ok_or_else(|| TimesaleError::UnknownOrder(order_id).into())
}

/// Confirm a held order with its payment: 200 CONFIRMED; the same
/// paymentRef again answers the same order.
#[utoipa::path(post, path = "/orders/{orderId}/confirm", tag = "timesale",
    params(("orderId" = String, Path)), request_body = ConfirmBody,
    responses((status = 200, body = Order), (status = 404, description = "order_not_found"),
        (status = 409, description = "already_confirmed (another paymentRef) / hold_expired / not_held"),
        (status = 422, description = "invalid_payment_ref")))]
pub async fn confirm_order(
    State(svc): State<Arc<TimesaleService>>,
    ApiPath(order_id): ApiPath<String>,
    ApiJson(body): ApiJson<ConfirmBody>,
) -> Result<Json<Order>, ApiError> {
    Ok(Json(
        holds::confirm(&svc, &order_id, &body.payment_ref).await?,
    ))
}

/// Cancel a confirmed or held order: its units return to the sale
/// (database and counters) and to the user's limit, once; cancelling again
/// answers the same. A hold that has run out answers 409 hold_expired.
#[utoipa::path(post, path = "/orders/{orderId}/cancel", tag = "timesale",
    params(("orderId" = String, Path)),
    responses((status = 200, body = Order), (status = 404, description = "order_not_found"),
        (status = 409, description = "not_cancellable (pending, rejected, expired) / hold_expired")))]
pub async fn cancel_order(
    State(svc): State<Arc<TimesaleService>>,
    ApiPath(order_id): ApiPath<String>,
) -> Result<Json<Order>, ApiError> {
    Ok(Json(cancel::cancel(&svc, &order_id).await?))
}
